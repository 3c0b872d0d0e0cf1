"""A SIP peer written by hand on a FakeNetwork Endpoint, and the fixtures built on it.

Tests of hostile and malformed input need full control over every byte, so this peer builds
requests itself instead of using a SipInstance.
"""

from __future__ import annotations

import itertools
import time

from twsip.sip.instance import SipInstance
from twsip.sip.message import Request, Response, SipParseError, parse
from twsip.testing import Endpoint, FakeNetwork

SANITY = 5.0  # seconds; any single pathological message must be handled far faster
_n = itertools.count(1)


class RawPhone:
    """A SIP caller written by hand on an Endpoint: full control over every header."""

    def __init__(self, network: FakeNetwork, target: SipInstance) -> None:
        self.network = network
        self.endpoint: Endpoint = network.endpoint()
        self.target = target

    @property
    def addr(self) -> tuple[str, int]:
        return self.endpoint.address

    def request(self, method: str, *, call_id: str | None = None, cseq: int = 1,
                branch: str | None = None, from_tag: str | None = None,
                to_tag: str | None = None, extra: dict[str, list[str]] | None = None,
                body: bytes = b"") -> Request:
        n = next(_n)
        host, port = self.addr
        headers = {
            "via": [f"SIP/2.0/UDP {host}:{port};branch={branch or f'z9hG4bKraw{n}'};rport"],
            "max-forwards": ["70"],
            "from": [f"<sip:raw@{host}:{port}>;tag={from_tag or f'raw{n}'}"],
            "to": [f"<{self.target.uri}>" + (f";tag={to_tag}" if to_tag else "")],
            "call-id": [call_id or f"raw{n}@{host}"],
            "cseq": [f"{cseq} {method}"],
            "contact": [f"<sip:raw@{host}:{port}>"],
        }
        headers.update(extra or {})
        return Request(method, self.target.uri, headers, body)

    def send(self, message: Request | bytes) -> None:
        data = message if isinstance(message, bytes) else message.to_bytes()
        self.endpoint.send(data, self.target.address)

    def received(self) -> list[Response]:
        """Responses received since the last call (answers to malformed requests included)."""
        out = []
        for data, _ in self.endpoint.take():
            try:
                message = parse(data)
            except SipParseError as exc:
                message = exc.message
            assert isinstance(message, Response), data[:200]
            out.append(message)
        return out

    def answered_invite(self) -> tuple[Request, Response]:
        """Send an INVITE to an auto-answering target, deliver, and return it with its 200
        (not ACKed yet: the caller decides what follows)."""
        invite = self.request("INVITE")
        self.send(invite)
        self.network.pump()
        ok = [r for r in self.received() if r.status == 200][0]
        return invite, ok

    def follow_up(self, method: str, invite: Request, answer: Response, *, cseq: int,
                  same_branch: bool = False) -> Request:
        """ACK/BYE/CANCEL for `invite`, in the dialog `answer` set up (To tag from it)."""
        return self.request(
            method, call_id=invite.call_id, cseq=cseq,
            branch=invite.top_via.branch if same_branch else None,
            from_tag=invite.from_.tag, to_tag=None if method == "CANCEL" else answer.to.tag)


def finish(net: FakeNetwork) -> None:
    net.run(net.cleanup())
    net.settle()
    assert net.clock.getDelayedCalls() == []
    assert net.stray == []


def still_serving(net: FakeNetwork, phone: RawPhone) -> None:
    phone.received()
    phone.send(phone.request("OPTIONS"))
    net.pump()
    assert [r.status for r in phone.received()] == [200]


def answer_to(net: FakeNetwork, phone: RawPhone, data: bytes) -> list[int]:
    """Send one datagram, deliver it, return the statuses that came back (sanity-timed)."""
    phone.received()
    started = time.perf_counter()
    phone.send(data)
    net.pump()
    assert time.perf_counter() - started < SANITY
    return [r.status for r in phone.received()]
