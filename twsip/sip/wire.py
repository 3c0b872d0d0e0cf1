"""The UDP transport rules of local mode (RFC 3261 §18, RFC 3581), as plain functions.

What may leave (only 127.0.0.0/8), and how a received request records where it came from,
so that its responses go back there whatever its Via says. The `SipInstance` (the
DatagramProtocol) uses these on every datagram, so they are kept to a dict lookup and a
few attribute reads.
"""

from __future__ import annotations

import errno

from twisted.internet.error import MessageLengthError

from twsip.sip.message import Request, Via
from twsip.sip.uri import Address, is_loopback

__all__ = ["LOOPBACK_HOSTS", "SendFailed", "may_send_to", "send_failure", "stamp_received",
           "stamp_via"]

# is_loopback() per destination host seen, since every datagram sent asks. The sender reads
# this dict first and calls `may_send_to` only for a host not known to be loopback.
LOOPBACK_HOSTS: dict[str, bool] = {}


class SendFailed(Exception):
    """A datagram could not leave: the socket refused it (EMSGSIZE, EACCES, ...) or it was
    too large to be a datagram at all. Raised to the transaction that sent it, so that the
    failure ends that transaction and nothing else (§8.1.3.1 treats it as a 503 for a
    request; a response that was owed becomes 513 or 500 where one fits)."""

    def __init__(self, what: str, peer: Address, error: str, too_large: bool) -> None:
        super().__init__(f"{what} to {peer[0]}:{peer[1]}: {error}")
        self.what = what
        self.peer = peer
        self.error = error
        self.too_large = too_large


def send_failure(exc: Exception, what: str, peer: Address) -> SendFailed:
    """What a socket's or Twisted's refusal to send means for the transaction: too large
    (EMSGSIZE, Twisted's MessageLengthError, an in-memory network's ValueError) or not."""
    too_large = isinstance(exc, (MessageLengthError, ValueError)) or \
        getattr(exc, "errno", None) == errno.EMSGSIZE
    return SendFailed(what, peer, str(exc) or type(exc).__name__, too_large)


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
    if stamp_via(request.top_via, addr):
        request.update_top_via()


def stamp_via(via: Via, addr: Address) -> bool:
    """Set `received` and `rport` on one Via as `stamp_received` does; True if changed."""
    changed = False
    if via.host != addr[0]:
        via.set_param("received", addr[0])
        changed = True
    if "rport" in via.params and not via.params["rport"]:
        via.set_param("rport", str(addr[1]))
        changed = True
    return changed
