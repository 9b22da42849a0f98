"""Hosts of the test's own: network namespaces joined to this one by veth pairs.

Each :class:`Host` is ``ip netns add`` + a veth pair with addresses of our own (a /30 in a
random 10.x.y.0 range checked to be unused); the root side stays here, so a server bound to the
root side's address is reachable from that host only through its link. ``cut()`` sets the link
down, as a pulled cable or a dead switch port would. Processes run in the namespace and in a UTS
namespace of their own (``unshare --uts``) with the host's name, so a lease holder's host name
differs per host as on real machines. :class:`Hosts` removes everything it made, even when the
scenario fails (and the kernel drops the veth pair with its namespace).
"""

from __future__ import annotations

import contextlib
import random
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def available() -> str | None:
    """None when namespaces can be made here, else why not."""
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    probe = f"uhprobe{uuid.uuid4().hex[:6]}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"cannot create a network namespace (root needed): {exc}"
    with contextlib.suppress(subprocess.CalledProcessError):
        _ip("netns", "del", probe)
    return None


@dataclass
class Host:
    name: str
    netns: str
    root_if: str
    root_ip: str  # this (the root) side: where the host reaches our servers
    host_ip: str

    def prefix(self, hostname: str | None = None) -> list[str]:
        """Put before a command to run it on this host."""
        name = hostname or self.name
        return [
            "ip",
            "netns",
            "exec",
            self.netns,
            "unshare",
            "--uts",
            "--",
            "sh",
            "-c",
            f'hostname {name} && exec "$@"',
            "sh",
        ]

    def cut(self) -> None:
        _ip("link", "set", self.root_if, "down")

    def restore(self) -> None:
        _ip("link", "set", self.root_if, "up")


class Hosts:
    """``with Hosts(2) as hosts:`` two hosts, removed again on the way out."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.hosts: list[Host] = []
        self._tag = uuid.uuid4().hex[:6]

    def __enter__(self) -> list[Host]:
        try:
            net = self._free_net()
            for i in range(self.count):
                self.hosts.append(self._make(i, net))
        except BaseException:
            self.remove()
            raise
        return self.hosts

    def __exit__(self, *exc: object) -> None:
        self.remove()

    @staticmethod
    def _free_net() -> str:
        used = subprocess.run(
            ["ip", "-o", "addr"], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(50):
            net = f"10.{random.randint(100, 250)}.{random.randint(0, 250)}"
            if f" {net}." not in used:
                return net
        raise RuntimeError("no free 10.x.y.0/24 range for the test's hosts")

    def _make(self, i: int, net: str) -> Host:
        netns = f"uphooks-{self._tag}-{i}"
        root_if, peer_if = f"uh{self._tag}r{i}", f"uh{self._tag}h{i}"
        root_ip, host_ip = f"{net}.{4 * i + 1}", f"{net}.{4 * i + 2}"
        _ip("netns", "add", netns)
        host = Host(f"host{chr(ord('a') + i)}", netns, root_if, root_ip, host_ip)
        self.hosts.append(host)  # removed on failure from here on
        _ip("link", "add", root_if, "type", "veth", "peer", "name", peer_if)
        _ip("link", "set", peer_if, "netns", netns)
        _ip("addr", "add", f"{root_ip}/30", "dev", root_if)
        _ip("link", "set", root_if, "up")
        _ip("-n", netns, "addr", "add", f"{host_ip}/30", "dev", peer_if)
        _ip("-n", netns, "link", "set", peer_if, "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        self.hosts.pop()
        return host

    def remove(self) -> None:
        for host in self.hosts:
            with contextlib.suppress(subprocess.CalledProcessError, OSError):
                _ip("link", "del", host.root_if)
            with contextlib.suppress(subprocess.CalledProcessError, OSError):
                _ip("netns", "del", host.netns)
        self.hosts.clear()


@contextlib.contextmanager
def hosts(count: int) -> Iterator[list[Host]]:
    with Hosts(count) as made:
        yield made
