"""Numbers and addresses as the wire spells them, checked once for every parser.

`str.isdigit()` is true for "²" and for Arabic-Indic digits, and `int()` accepts the latter:
a parser that trusts either reads numbers no peer sent, or raises where it meant to refuse.
And an address that is not an ASCII IPv4 literal makes `socket.sendto` call the resolver
(a DNS query that blocks the reactor). So every number on the wire is ASCII ``[0-9]+``, and
every host twsip may send to is an ASCII dotted quad, here and nowhere else. SIP and RTP
both send, so this sits below both layers.
"""

from __future__ import annotations

import re

__all__ = ["Address", "wire_number", "ipv4_literal", "is_loopback"]

# Where a datagram goes or came from: (IPv4 literal, port). The one address type of twsip.
Address = tuple[str, int]

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}\Z", re.ASCII)
# Longer than any number a SIP or SDP field may hold: refuse before int() works on it.
_MAX_DIGITS = 12


def wire_number(text: str) -> int | None:
    """The value of ASCII digits, or None for anything else (signs, spaces, other digits)."""
    if len(text) > _MAX_DIGITS or not text.isdigit() or not text.isascii():
        return None  # (an ASCII str is digits exactly when it is 0-9 only)
    return int(text)


def ipv4_literal(host: str) -> tuple[int, int, int, int] | None:
    """The four octets of a dotted-quad literal without leading zeros, else None."""
    if not _IPV4.match(host):
        return None
    a, b, c, d = host.split(".")
    return int(a), int(b), int(c), int(d)


def is_loopback(host: str) -> bool:
    """True for a host twsip may send to: an IPv4 literal in 127.0.0.0/8 that names one host.

    127.0.0.0 and 127.255.255.255 are the network and broadcast forms of the range; a send
    there fails (EACCES) rather than reaching anybody. Never looks a name up.
    """
    octets = ipv4_literal(host)
    if octets is None or octets[0] != 127:
        return False
    return octets[1:] not in ((0, 0, 0), (255, 255, 255))
