"""Where a call through an outbound trunk is sent: straight to the carrier, or through the trunk's
outbound proxy with a pre-loaded Route (RFC 3261 §8.1.2), so that it leaves from the proxy's address."""

from __future__ import annotations

from dataclasses import dataclass

from ..sip.address import Address, proxy_address
from .config import OutboundTrunk


@dataclass(frozen=True)
class TrunkHop:
    destination: Address  # where the INVITE (and its CANCEL) is sent
    route: list[tuple[str, str]]  # headers that go first on the INVITE


def next_hop(trunk: OutboundTrunk) -> TrunkHop:
    if trunk.outbound_proxy:
        return TrunkHop(proxy_address(trunk.outbound_proxy), [("Route", f"<{trunk.outbound_proxy};lr>")])
    return TrunkHop(Address(trunk.host, trunk.port, trunk.transport), [])


def trunk_credentials(trunk: OutboundTrunk) -> tuple[str, str] | None:
    """The digest identity for the carrier's challenges, when the trunk has one."""
    return (trunk.username, trunk.password) if trunk.username and trunk.password else None
