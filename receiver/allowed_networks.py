"""Which source addresses may post deliveries (``UPHOOKS_ALLOWED_NETWORKS``), proxies included.

The client is the connecting peer, unless that peer is a trusted proxy
(``UPHOOKS_TRUSTED_PROXIES``): then ``X-Forwarded-For`` is read from right to left, each trusted
hop skipped, and the first address that is not a trusted proxy is the client. Everything left of
it was written by the client itself and proves nothing. An entry that is not an IP address stops
the walk and the request is refused, since nothing about its origin can be known.

uvicorn rewrites the peer from ``X-Forwarded-For`` by itself unless started with
``proxy_headers=False``; ``uphooks serve`` must start it so, or this sees the rewritten peer.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from starlette.types import Scope

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network


def parse_address(text: str) -> Address | None:
    """An address from a peer or an X-Forwarded-For entry (port and brackets stripped)."""
    text = text.strip()
    if text.startswith("["):  # [v6]:port
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # v4:port
        text = text.partition(":")[0]
    try:
        address = ip_address(text)
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class AllowedNetworks:
    """The ingress's allow-list of sender networks, and who the client is behind our proxies."""

    def __init__(self, allowed: Sequence[Network], trusted_proxies: Sequence[Network]) -> None:
        self.allowed = tuple(allowed)
        self.trusted = tuple(trusted_proxies)

    @property
    def active(self) -> bool:
        return bool(self.allowed)

    def _trusted(self, address: Address) -> bool:
        return any(address in network for network in self.trusted)

    def client(self, peer: str | None, forwarded_for: Sequence[str]) -> Address | None:
        """The client's address, or None when it cannot be known."""
        address = parse_address(peer) if peer else None
        if address is None or not self._trusted(address):
            return address
        hops = [hop for value in forwarded_for for hop in value.split(",")]
        for hop in reversed(hops):
            address = parse_address(hop)
            if address is None or not self._trusted(address):
                return address
        # Every hop is one of our proxies: the leftmost is as close to the client as we get.
        return address

    def allows_address(self, address: Address | None) -> bool:
        """Is this client (from :meth:`client`) one that may post?"""
        if not self.allowed:
            return True
        return address is not None and any(address in network for network in self.allowed)

    def allows(self, scope: Scope) -> bool:
        if not self.allowed:
            return True
        peer = scope.get("client")
        forwarded = [
            value.decode("latin-1")
            for name, value in scope["headers"]
            if name == b"x-forwarded-for"
        ]
        address = self.client(peer[0] if peer else None, forwarded)
        return address is not None and any(address in network for network in self.allowed)
