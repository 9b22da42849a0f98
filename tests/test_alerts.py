"""The alert rules and the Grafana dashboard shipped in deploy/: loaded by Prometheus's own rule
checker, the alerts unit-tested with ``promtool test rules``, and every metric they name is one
uphooks exports (uphooks/metrics.py, uphooks/collector.py).

promtool comes from the PATH, else from Debian's ``prometheus`` package unpacked into
var/prometheus-deb (``apt-get download`` + ``dpkg -x``: nothing is installed system-wide and no
service starts). Where neither can be had the promtool tests skip, saying why.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.debian import unpack

RULES = ROOT / "deploy" / "prometheus" / "uphooks-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "uphooks-alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "uphooks-dashboard.json"
ALERTS = {
    "UphooksDeadLettersGrowing",
    "UphooksOldestPendingOld",
    "UphooksNoWorkerHeartbeat",
    "UphooksRefusing503",
    "UphooksHandlerFailing",
    "UphooksWorkersDisagreeOnHandlers",
}


def _unpack_debian_promtool() -> Path | str:
    return unpack("prometheus", "usr/bin/promtool")


@pytest.fixture(scope="session")
def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    unpacked = _unpack_debian_promtool()
    if isinstance(unpacked, str):
        print(f"\npromtool tests skipped: {unpacked}")
        pytest.skip(unpacked)
    return str(unpacked)


def run(promtool: str, *args: str, cwd: Path = RULES.parent) -> str:
    done = subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in board["panels"] for t in panel["targets"]]


def exported_metrics() -> set[str]:
    """Every series name uphooks exports: the names in metrics.py (recorded) and collector.py
    (read from Redis), with the suffixes prometheus_client adds to counters and histograms."""
    sources = [ROOT / "uphooks" / "metrics.py", ROOT / "uphooks" / "collector.py"]
    names = {n for p in sources for n in re.findall(r'"(uphooks_[a-z_]+)"', p.read_text())}
    suffixed = {f"{n}{s}" for n in names for s in ("_total", "_bucket", "_count", "_sum")}
    return names | suffixed


def test_promtool_loads_the_alert_rules(promtool: str) -> None:
    assert f"SUCCESS: {len(ALERTS)} rules found" in run(promtool, "check", "rules", RULES.name)


def test_each_alert_fires_on_its_unit_test_and_stays_quiet_when_healthy(promtool: str) -> None:
    assert "SUCCESS" in run(promtool, "test", "rules", RULE_TESTS.name)
    tested = {
        case["alertname"]
        for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in group["alert_rule_test"]
    }
    assert tested == ALERTS


def test_the_dashboards_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    rules = {"groups": [{"name": "dashboard", "rules": []}]}
    for i, expr in enumerate(exprs):
        rules["groups"][0]["rules"].append({"record": f"uphooks:panel_{i}", "expr": expr})
    (tmp_path / "panels.yml").write_text(yaml.safe_dump(rules))
    assert f"SUCCESS: {len(exprs)} rules found" in run(
        promtool, "check", "rules", "panels.yml", cwd=tmp_path
    )


def test_rules_and_dashboard_name_only_metrics_uphooks_exports() -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    assert set(alerts) == ALERTS
    exported = exported_metrics()
    for expr in [*alerts.values(), *dashboard_exprs()]:
        used = set(re.findall(r"\buphooks_[a-z_]+", expr))
        assert used and used <= exported, (expr, used - exported)
    board = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)) and board["uid"] == "uphooks"
    # The metric the issue names for "oldest pending age" is shown and alerted on.
    assert "uphooks_ledger_oldest_overdue_seconds" in " ".join(dashboard_exprs())
