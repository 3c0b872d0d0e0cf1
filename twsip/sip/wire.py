"""The UDP transport rules of local mode (RFC 3261 §18, RFC 3581), as plain functions.

What may leave (only 127.0.0.0/8), how a datagram is written, and how a received request
records where it came from, so that its responses go back there whatever its Via says.
The `SipInstance` (the DatagramProtocol) calls these on every datagram, so they are kept
to a dict lookup and a few attribute reads.
"""

from __future__ import annotations

from typing import Any

from twsip.sip.message import Request
from twsip.sip.uri import Address, is_loopback

__all__ = ["may_send_to", "write_datagram", "stamp_received"]

# is_loopback() per destination host seen, since every datagram sent asks.
_loopback_hosts: dict[str, bool] = {}


def may_send_to(host: str) -> bool:
    """Local mode sends only to an IPv4 literal in 127.0.0.0/8."""
    loopback = _loopback_hosts.get(host)
    if loopback is None:
        loopback = is_loopback(host)
        if len(_loopback_hosts) < 256:
            _loopback_hosts[host] = loopback
    return loopback


def write_datagram(transport: Any, data: bytes, addr: Address) -> None:
    """Send on a UDP transport (typed Any: IUDPTransport is a zope interface, which mypy
    reads wrongly).

    The address is a checked IPv4 literal, so Twisted's per-write address checks (three
    isIPAddress calls, a fifth of the send cost under load) add nothing: send on the socket
    directly and leave only errors to Twisted's handling.
    """
    sock = getattr(transport, "socket", None)
    if sock is None:
        transport.write(data, addr)
    else:
        try:
            sock.sendto(data, addr)
        except OSError:
            transport.write(data, addr)


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
