"""Refusing new calls from their bytes while overloaded: a stateless 503 (RFC 3261 §8.2.7).

Why: under overload a refusal has to cost much less than the call it refuses, or shedding
only moves the collapse (issue 14: a 503 through the full stack, with its parse, server
transaction, Timers G/H/I and the ACK matched and parsed, cost a third of a whole call).
While `OverloadControl` says datagrams wait too long, a new INVITE is answered from the
few header lines a response copies (§8.2.6: Via, From, To, Call-ID, CSeq), read straight
from the datagram; no message object, transaction, timer or dialog is made. Its ACK
(hop-by-hop, §17.1.1.3) carries the To tag of the 503, which holds a marker of this
instance, and is dropped by a byte search.

Stateless is what §8.2.7 allows for exactly this: a retransmitted INVITE gets the same
503 again (with another tag, which the caller's transaction ignores once completed).

The top Via gets `received` and `rport` as on the stateful path (§18.2.1, RFC 3581). Only
a plain request takes this path. Anything unusual (folded lines, no blank line, a repeated
From/To/Call-ID/CSeq, a To that might carry a tag, an RFC 2543 branch, a request an
existing transaction would absorb, or an instance whose messages are observed) goes
through the full parser, which refuses it
statefully with the same 503 if it is well formed, and answers what the RFC asks for if not.
"""

from __future__ import annotations

import os
from typing import Callable, Hashable, Protocol

from twsip.sip.message import MAX_COPIED_BYTES, SipParseError, parse_via
from twsip.sip.transaction import MAGIC_COOKIE, via_key
from twsip.sip.wire import stamp_via

__all__ = ["NewInvite", "read_new_invite", "Shedder"]

# Header names as they may be written (full and compact, RFC 3261 §7.3.3), lower-cased.
_COPIED_NAMES = {
    b"via": b"via", b"v": b"via", b"from": b"from", b"f": b"from", b"to": b"to",
    b"t": b"to", b"call-id": b"call-id", b"i": b"call-id", b"cseq": b"cseq",
}


class NewInvite:
    """The lines of an untagged INVITE that its 503 copies, exactly as received."""

    __slots__ = ("vias", "from_", "to", "call_id", "cseq")

    def __init__(self, vias: list[bytes], from_: bytes, to: bytes, call_id: bytes,
                 cseq: bytes) -> None:
        self.vias = vias
        self.from_ = from_
        self.to = to
        self.call_id = call_id
        self.cseq = cseq

    def top_via_value(self) -> str:
        line = self.vias[0]
        return line[line.index(b":") + 1:].split(b",", 1)[0].strip().decode("ascii")

    def call_id_value(self) -> str:
        line = self.call_id
        return line[line.index(b":") + 1:].strip().decode("utf-8", "replace")

    def response(self, tag: bytes, retry_after: int) -> bytes:
        return b"".join((
            b"SIP/2.0 503 Service Unavailable\r\n",
            b"\r\n".join(self.vias), b"\r\n",
            self.from_, b"\r\n",
            self.to.rstrip(), b";tag=", tag, b"\r\n",
            self.call_id, b"\r\n",
            self.cseq, b"\r\n",
            b"Retry-After: %d\r\nContent-Length: 0\r\n\r\n" % retry_after,
        ))


def read_new_invite(data: bytes) -> NewInvite | None:
    """The copied lines of `data` if it is a plain new INVITE; None leaves it to the parser.

    Only what the 503 copies is read: a fault elsewhere in the request (which the parser
    would answer 400) is no reason to take on a call while overloaded."""
    if not data.startswith(b"INVITE "):
        return None
    end = data.find(b"\r\n\r\n")
    if end < 0 or end > MAX_COPIED_BYTES:
        return None
    head = data[:end]
    if b"\r\n " in head or b"\r\n\t" in head or head.count(b"\n") != head.count(b"\r\n"):
        return None  # folded lines or bare LFs: the parser's job
    lines = head.split(b"\r\n")
    start = lines[0].split(b" ")
    if len(start) != 3 or start[2] != b"SIP/2.0" or b":" not in start[1]:
        return None
    vias: list[bytes] = []
    found: dict[bytes, bytes] = {}
    for line in lines[1:]:
        colon = line.find(b":")
        if colon <= 0:
            continue  # no header this 503 copies
        key = _COPIED_NAMES.get(line[:colon].rstrip(b" \t").lower())
        if key is None:
            continue
        if key == b"via":
            vias.append(line)
        elif key in found:
            return None  # two of a single header: 400 is the parser's to give
        else:
            found[key] = line
    if not vias or len(found) != 4:
        return None
    to = found[b"to"]
    if b"tag" in to.lower():
        return None  # in a dialog, or a display name that says "tag": parse it
    cseq = found[b"cseq"].partition(b":")[2].split()
    if len(cseq) != 2 or cseq[1] != b"INVITE" or not cseq[0].isdigit():
        return None
    return NewInvite(vias, found[b"from"], to, found[b"call-id"], found[b"cseq"])


class _Control(Protocol):
    """What the shedder asks of `OverloadControl`."""

    def overloaded(self) -> bool: ...

    def note_shed(self, call_id: str) -> None: ...

    @property
    def retry_after(self) -> int: ...


class Shedder:
    """One instance's stateless refusals: 503s from bytes, and their ACKs dropped."""

    def __init__(self, control: _Control, has_transaction: Callable[[tuple[Hashable, ...]], bool],
                 send: Callable[[bytes, tuple[str, int]], None],
                 quiet: Callable[[], bool]) -> None:
        self.control = control
        self.has_transaction = has_transaction  # would a server transaction absorb it?
        self.send = send
        self.quiet = quiet  # no observer wants to see every message
        self.marker = b"shed" + os.urandom(4).hex().encode()
        self.count = 0
        self.acks_dropped = 0

    def take(self, data: bytes, addr: tuple[str, int]) -> bool:
        """True when `data` was dealt with here (refused, or the ACK of a refusal)."""
        if data.startswith(b"ACK "):
            if self.marker in data:
                self.acks_dropped += 1
                return True
            return False
        if not data.startswith(b"INVITE ") or not self.control.overloaded():
            return False
        if not self.quiet():
            return False
        invite = read_new_invite(data)
        if invite is None:
            return False
        try:
            via = parse_via(invite.top_via_value())
        except (SipParseError, UnicodeDecodeError):
            return False
        branch = via.branch
        if branch is None or not branch.startswith(MAGIC_COOKIE) or len(branch) <= 7:
            return False  # the RFC 2543 matching rule is the transaction layer's
        if self.has_transaction(via_key(via, "INVITE")):
            return False  # a retransmission of a call being (or already) answered
        if stamp_via(via, addr):  # received / rport, as the stateful path writes them
            if b"," in invite.vias[0]:
                return False  # the top line holds more than the top Via
            invite.vias[0] = b"Via: " + str(via).encode("ascii")
        self.count += 1
        tag = b"%s-%d" % (self.marker, self.count)
        self.send(invite.response(tag, self.control.retry_after), addr)
        self.control.note_shed(invite.call_id_value())
        return True
