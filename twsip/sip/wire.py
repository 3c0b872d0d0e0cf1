"""The UDP transport rules of local mode (RFC 3261 §18, RFC 3581), as plain functions.

What may leave (only 127.0.0.0/8), and how a received request records where it came from,
so that its responses go back there whatever its Via says. The `SipInstance` (the
DatagramProtocol) uses these on every datagram, so they are kept to a dict lookup and a
few attribute reads.
"""

from __future__ import annotations

from twsip.sip.message import Request
from twsip.sip.uri import Address, is_loopback

__all__ = ["LOOPBACK_HOSTS", "may_send_to", "stamp_received"]

# is_loopback() per destination host seen, since every datagram sent asks. The sender reads
# this dict first and calls `may_send_to` only for a host not known to be loopback.
LOOPBACK_HOSTS: dict[str, bool] = {}


def may_send_to(host: str) -> bool:
    """Local mode sends only to an IPv4 literal in 127.0.0.0/8."""
    loopback = LOOPBACK_HOSTS.get(host)
    if loopback is None:
        loopback = is_loopback(host)
        if len(LOOPBACK_HOSTS) < 256:
            LOOPBACK_HOSTS[host] = loopback
    return loopback


def stamp_received(request: Request, addr: Address) -> None:
    """§18.2.1 `received` and RFC 3581 `rport` on the top Via: the address the request
    really came from, where its responses go (§18.2.2)."""
    via = request.top_via
    changed = False
    if via.host != addr[0]:
        via.set_param("received", addr[0])
        changed = True
    if "rport" in via.params and not via.params["rport"]:
        via.set_param("rport", str(addr[1]))
        changed = True
    if changed:
        request.update_top_via()
