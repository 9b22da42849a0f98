"""Several hosts: workers in two network namespaces of the test's own against one Redis
(chaos/netns.py); one host's link cut while its handlers run (chaos scenario 17b)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from chaos.netns import Hosts, available
from chaos.report import details
from chaos.scenarios import hosts
from chaos.scenarios.base import Ctx

pytestmark = pytest.mark.timeout(200)


def test_a_host_cut_off_mid_handler_has_its_pairs_done_once_on_the_other_host_in_a_lease(
    tmp_path: Path,
) -> None:
    missing = available()
    if missing:
        pytest.skip(missing)
    row = hosts.host_cut_mid_handler(Ctx(out=tmp_path, quick=True, max_rate=50.0))
    assert row.ok, "\n".join([f"{row.scenario} {row.title}", *details(row)])
    assert row.figures["held_on_host_a_at_cut"] >= 1
    assert row.figures["fenced_processes_on_a"] == row.figures["held_on_host_a_at_cut"]
    assert row.figures["takeover_max_s"] <= row.figures["lease_s"] + 3
    assert row.acked == row.sent == row.processed > 0


def test_the_hosts_are_removed_even_when_the_scenario_fails() -> None:
    missing = available()
    if missing:
        pytest.skip(missing)
    made: list[str] = []
    with pytest.raises(RuntimeError, match="planted"), Hosts(2) as pair:
        made = [h.netns for h in pair]
        raise RuntimeError("planted failure")
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert made and not any(name in listed for name in made)
