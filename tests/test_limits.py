"""Limits and abuse: oversized and pathological messages, INVITE floods, and the races of
RFC 3261 (BYE or CANCEL crossing an answer, CANCEL after the 200, a second BYE, a stray ACK).

Everything runs over twsip.testing's FakeNetwork on a Clock. Time limits are only sanity
bounds (generous, never tight): what matters is that each case finishes and is answered
(400/413/513) or dropped, and that the instance keeps serving afterwards.
"""

from __future__ import annotations

import tracemalloc
from typing import Iterator

import pytest
import pytest_twisted
from twisted.python.failure import Failure

from twsip.sip.dialog import CallFailed, ServerSession
from twsip.sip.message import MAX_HEADER_LINES, Request, Response, parse
from twsip.testing import FakeNetwork, LoggedFailures

from raw_phone import RawPhone, answer_to, finish, still_serving


@pytest.fixture(autouse=True)
def no_logged_failures() -> Iterator[None]:
    """An exception caught inside twsip is a bug even though nothing escaped."""
    with LoggedFailures() as failures:
        yield
    assert failures.events == [], failures.summary()


# -- oversized and pathological messages -----------------------------------------------------

def test_datagram_larger_than_udp_allows_is_dropped(net, uas, phone) -> None:
    request = phone.request("OPTIONS", extra={"x-padding": ["p" * 70_000]})
    # Beyond 65535 bytes a UDP datagram cannot exist; the parser refuses to look at it.
    net.inject(request.to_bytes(), phone.addr, uas)
    net.pump()
    assert phone.received() == []
    still_serving(net, phone)
    finish(net)


def test_largest_datagram_with_one_huge_header_is_answered(net, uas, phone) -> None:
    request = phone.request("OPTIONS", extra={"x-padding": ["p" * 60_000]})
    assert answer_to(net, phone, request.to_bytes()) == [200]
    still_serving(net, phone)
    finish(net)


def test_thousands_of_headers_get_513(net, uas, phone) -> None:
    extra = {f"x-h{i}": ["v"] for i in range(5000)}
    data = phone.request("OPTIONS", extra=extra).to_bytes()
    assert len(data) < 65_535
    assert answer_to(net, phone, data) == [513]
    still_serving(net, phone)
    finish(net)


def test_header_lines_up_to_the_limit_are_fine(net, uas, phone) -> None:
    extra = {f"x-h{i}": ["v"] for i in range(MAX_HEADER_LINES - 10)}
    assert answer_to(net, phone, phone.request("OPTIONS", extra=extra).to_bytes()) == [200]
    finish(net)


def test_oversized_header_section_of_vias_is_dropped(net, uas, phone) -> None:
    # 40 KB of Vias: any answer must copy them all (§8.2.6), so none is attempted.
    request = phone.request("OPTIONS")
    request.headers["via"] += ["SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx"] * 1300
    data = request.to_bytes()
    assert 32_768 < len(data) < 65_535
    assert answer_to(net, phone, data) == []
    still_serving(net, phone)
    finish(net)


def test_thousand_vias_in_one_line_are_answered_normally(net, uas, phone) -> None:
    request = phone.request("OPTIONS")
    value = ", ".join(["SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKv"] * 600)
    data = request.to_bytes().replace(b"Max-Forwards: 70", b"v: " + value.encode() +
                                      b"\r\nMax-Forwards: 70")
    assert answer_to(net, phone, data) == [200]
    finish(net)


@pytest.mark.parametrize("length", ["99999999999999999999999999999999", "65536", "4294967296",
                                    "-1", "1e9", "0x10", ""])
def test_huge_or_bogus_content_length_gets_400(net, uas, phone, length: str) -> None:
    data = phone.request("OPTIONS").to_bytes().replace(
        b"Content-Length: 0", b"Content-Length: " + length.encode())
    assert answer_to(net, phone, data) == [400]
    still_serving(net, phone)
    finish(net)


@pytest.mark.parametrize("header", ["via", "from", "to", "contact"])
def test_deep_parameter_lists_get_400(net, uas, phone, header: str) -> None:
    request = phone.request("INVITE")
    params = "".join(f";p{i}={i}" for i in range(1000))
    request.headers[header][0] += params
    assert answer_to(net, phone, request.to_bytes()) == [400]
    still_serving(net, phone)
    assert not uas.calls
    finish(net)


def test_a_parameter_list_too_long_to_answer_is_dropped(net, uas, phone) -> None:
    request = phone.request("INVITE")
    request.headers["from"][0] += "".join(f";p{i}={i}" for i in range(5000))  # 40 KB
    assert answer_to(net, phone, request.to_bytes()) == []
    still_serving(net, phone)
    finish(net)


@pytest.mark.parametrize("value", [
    "<" * 20_000 + "sip:a@127.0.0.1" + ">" * 20_000,
    '"' + "\\" * 30_001 + '" <sip:a@127.0.0.1>',
    '"' + '\\"' * 15_000 + '" <sip:a@127.0.0.1>',
    "<sip:a@127.0.0.1>" + ";" * 20_000,
    "<sip:a@127.0.0.1>;tag=" + "," * 20_000,
])
def test_pathological_address_headers_finish(net, uas, phone, value: str) -> None:
    request = phone.request("OPTIONS")
    request.headers["to"] = [value]
    statuses = answer_to(net, phone, request.to_bytes())
    assert len(statuses) <= 1 and set(statuses) <= {200, 400, 481, 513}
    still_serving(net, phone)
    finish(net)


def test_a_stream_of_garbage_leaves_memory_bounded(net, uas, phone) -> None:
    junk = [b"\x00" * 1000, b"INVITE " * 500, b"SIP/2.0 200 OK\r\n" * 100,
            phone.request("INVITE").to_bytes().replace(b"Length: 0", b"Length: 9999")]
    tracemalloc.start()
    try:
        for data in junk * 250:
            net.inject(data, phone.addr, uas)
        net.pump()
        baseline, _ = tracemalloc.get_traced_memory()
        for data in junk * 250:
            net.inject(data, phone.addr, uas)
        net.pump()
        phone.received()
        net.advance(40)
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert current - baseline < 2_000_000, "a thousand bad datagrams must not pile up"
    assert len(uas.transactions) == 0 and not uas.calls
    still_serving(net, phone)
    finish(net)


# -- INVITE flood with nobody taking calls ---------------------------------------------------

def test_invite_flood_beyond_the_queue_gets_486_and_queued_calls_stay_usable() -> None:
    net = FakeNetwork(keep_log=False)
    caller = net.add_instance("100")
    callee = net.add_instance("200", queue_size=16)
    callee.start_serving()
    outcomes: list[object] = []
    for _ in range(300):
        d = caller.invite(callee.uri, timeout=None)
        d.addBoth(lambda r: outcomes.append(r.value if isinstance(r, Failure) else r))
    net.advance(1)
    busy = [o for o in outcomes if isinstance(o, CallFailed)]
    assert len(busy) == 300 - 16
    assert {f.status for f in busy} == {486}
    assert len(callee.incoming.pending) == 16
    net.advance(40)  # the 486 transactions complete and go
    assert len(callee.calls) == 16 and len(callee.dialogs) == 16
    assert len(callee.transactions) <= 16 + 2

    # The queued calls are still good: answer one, reject one.
    first: ServerSession = net.result(callee.incoming.get())
    second: ServerSession = net.result(callee.incoming.get())
    first.ringing()
    answered = first.answer()
    second.reject(603)
    net.advance(1)
    assert net.result(answered) is first and first.established
    established = [o for o in outcomes if not isinstance(o, CallFailed)]
    assert len(established) == 1 and established[0].established
    assert [o.status for o in outcomes if isinstance(o, CallFailed)].count(603) == 1
    net.run(established[0].hangup())
    assert first.ended
    net.run(net.cleanup())
    net.settle()
    assert net.clock.getDelayedCalls() == []
    assert all(isinstance(o, CallFailed) or o.ended for o in outcomes)


def test_raw_flood_memory_stays_bounded(net, phone) -> None:
    uas = phone.target
    for _ in range(200):
        phone.send(phone.request("INVITE"))
    net.pump()
    statuses = [r.status for r in phone.received()]
    assert statuses.count(100) == 200  # every INVITE is acknowledged at once
    assert statuses.count(486) == 200 - uas.incoming.size
    net.advance(64)
    phone.received()
    assert len(uas.calls) == uas.incoming.size
    assert len(uas.transactions) == uas.incoming.size
    finish(net)


# -- races (RFC 3261 §9, §15) ----------------------------------------------------------------

def _ringing_call(net: FakeNetwork, phone: RawPhone) -> tuple[Request, ServerSession, Response]:
    invite = phone.request("INVITE")
    phone.send(invite)
    net.pump()
    session = net.result(phone.target.incoming.get())
    session.ringing()
    net.pump()
    ringing = [r for r in phone.received() if r.status == 180]
    assert len(ringing) == 1
    return invite, session, ringing[0]


def test_bye_crossing_the_200(net, uas, phone) -> None:
    invite, session, ringing = _ringing_call(net, phone)
    answered = session.answer()                      # 200 on its way to the caller ...
    bye = phone.follow_up("BYE", invite, ringing, cseq=2)
    phone.send(bye)                                  # ... while the caller's BYE is on its way
    net.pump()
    got = phone.received()
    assert [(r.cseq.method, r.status) for r in got] == [("INVITE", 200), ("BYE", 200)]
    assert session.ended
    with pytest.raises(CallFailed):
        net.result(answered)
    # The caller ACKs the 200 it then sees: nothing is sent back, the call stays ended.
    phone.send(phone.follow_up("ACK", invite, got[0], cseq=1))
    net.advance(40)
    assert [r for r in phone.received() if r.cseq.method == "INVITE"] == []  # no 2xx resends
    assert not uas.calls
    finish(net)


def test_bye_in_the_early_dialog_before_the_answer(net, uas, phone) -> None:
    invite, session, ringing = _ringing_call(net, phone)
    phone.send(phone.follow_up("BYE", invite, ringing, cseq=2))
    net.pump()
    got = sorted((r.cseq.method, r.status) for r in phone.received())
    assert got == [("BYE", 200), ("INVITE", 487)]  # §15.1.2
    assert session.ended
    with pytest.raises(CallFailed) as info:
        net.result(session.answer())
    assert info.value.status == 481
    finish(net)


def test_cancel_crossing_the_200_between_two_instances() -> None:
    net = FakeNetwork()
    caller, callee = net.add_instance("100"), net.add_instance("200")
    callee.start_serving()
    d = caller.invite(callee.uri)
    net.advance(0)
    session: ServerSession = net.result(callee.incoming.get())
    session.ringing()
    net.advance(0)
    d.cancel()                      # CANCEL queued ...
    answered = session.answer()     # ... and the 200 too, before either is delivered
    with pytest.raises(CallFailed) as info:
        net.result(d)
    assert info.value.status == 487
    net.advance(2)
    sent_by_callee = [parse(x.data) for x in net.datagrams(source=callee.address)]
    summary = [(m.cseq.method, m.status) for m in sent_by_callee if isinstance(m, Response)]
    assert ("CANCEL", 200) in summary and ("INVITE", 487) not in summary
    # The caller confirmed the 2xx it did not want and hung up (§15): both ends are down.
    sent_by_caller = [parse(x.data).method for x in net.datagrams(source=caller.address)]
    assert sent_by_caller[-2:] == ["ACK", "BYE"] or "BYE" in sent_by_caller
    assert session.ended
    assert not caller.calls and not callee.calls
    answered.addErrback(lambda _: None)
    finish(net)


def test_cancel_after_the_200_gets_200_and_the_call_stays_up(net, uas, phone) -> None:
    invite, session, ringing = _ringing_call(net, phone)
    answered = session.answer()
    net.pump()
    [ok] = [r for r in phone.received() if r.status == 200]
    phone.send(phone.follow_up("ACK", invite, ok, cseq=1))
    net.pump()
    assert net.result(answered) is session
    phone.send(phone.follow_up("CANCEL", invite, ok, cseq=1, same_branch=True))
    net.pump()
    assert [(r.cseq.method, r.status) for r in phone.received()] == [("CANCEL", 200)]
    assert session.established and not session.ended
    net.advance(5)
    assert phone.received() == []  # no 487, no BYE: the call is up
    phone.send(phone.follow_up("BYE", invite, ok, cseq=2))
    net.pump()
    assert [(r.cseq.method, r.status) for r in phone.received()] == [("BYE", 200)]
    assert session.ended
    finish(net)


def test_cancel_long_after_the_200_matches_nothing_481(net, uas, phone) -> None:
    invite, session, ringing = _ringing_call(net, phone)
    session.answer()
    net.pump()
    [ok] = [r for r in phone.received() if r.status == 200]
    phone.send(phone.follow_up("ACK", invite, ok, cseq=1))
    net.advance(40)  # Timer L (64*T1) has ended the INVITE transaction
    phone.send(phone.follow_up("CANCEL", invite, ok, cseq=1, same_branch=True))
    net.pump()
    assert [(r.cseq.method, r.status) for r in phone.received()] == [("CANCEL", 481)]
    assert session.established
    finish(net)


def test_cancel_for_no_transaction_gets_481(net, uas, phone) -> None:
    assert answer_to(net, phone, phone.request("CANCEL").to_bytes()) == [481]
    finish(net)


def test_second_bye_gets_481_and_a_retransmitted_bye_its_200_again(net, uas, phone) -> None:
    invite, session, ringing = _ringing_call(net, phone)
    session.answer()
    net.pump()
    [ok] = [r for r in phone.received() if r.status == 200]
    phone.send(phone.follow_up("ACK", invite, ok, cseq=1))
    bye = phone.follow_up("BYE", invite, ok, cseq=2)
    phone.send(bye)
    net.pump()
    assert [r.status for r in phone.received()] == [200]
    phone.send(bye)  # a retransmission: the transaction answers it again
    net.pump()
    assert [r.status for r in phone.received()] == [200]
    phone.send(phone.follow_up("BYE", invite, ok, cseq=3))  # a new BYE: no dialog any more
    net.pump()
    assert [(r.cseq.method, r.status) for r in phone.received()] == [("BYE", 481)]
    finish(net)


@pytest.mark.parametrize("to_tag", [None, "nosuchtag"])
def test_ack_for_an_unknown_dialog_sends_nothing(net, uas, phone, to_tag) -> None:
    assert answer_to(net, phone, phone.request("ACK", to_tag=to_tag).to_bytes()) == []
    net.advance(40)
    assert phone.received() == []
    still_serving(net, phone)
    finish(net)


def test_malformed_ack_sends_nothing(net, uas, phone) -> None:
    data = phone.request("ACK").to_bytes().replace(b"CSeq: 1 ACK", b"CSeq: x ACK")
    assert answer_to(net, phone, data) == []
    finish(net)


def test_error_answers_carry_a_to_tag(net, uas, phone) -> None:
    data = phone.request("OPTIONS").to_bytes().replace(b"Max-Forwards: 70", b"Max-Forwards: x")
    phone.send(data)
    net.pump()
    [answer] = phone.received()
    assert answer.status == 400 and answer.to.tag  # §8.2.6.2
    finish(net)


# -- over real UDP ------------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_a_12_kb_request_arrives_whole_over_real_udp() -> None:
    from twisted.internet import defer, reactor
    from twisted.internet.protocol import DatagramProtocol

    from twsip.manager import InstanceManager
    from twsip.config import SipInstanceConfig

    class Catcher(DatagramProtocol):
        def __init__(self) -> None:
            self.answer: defer.Deferred = defer.Deferred()
            self.answer.addTimeout(5, reactor)

        def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:  # noqa: N802
            if not self.answer.called:
                self.answer.callback(data)

    manager = InstanceManager(base_port=0)
    managed = manager.create_instance(SipInstanceConfig(id="uas", label="uas", dn="100"))
    catcher = Catcher()
    port = reactor.listenUDP(0, catcher, interface="127.0.0.1")
    try:
        here = port.getHost().port
        body = b"v=0\r\n" + b"a=x-padding:" + b"p" * 12_000 + b"\r\n"
        request = Request("OPTIONS", f"sip:100@127.0.0.1:{managed.port}", {
            "via": [f"SIP/2.0/UDP 127.0.0.1:{here};branch=z9hG4bKbig;rport"],
            "from": ["<sip:big@127.0.0.1>;tag=big"], "to": ["<sip:100@127.0.0.1>"],
            "call-id": ["big@127.0.0.1"], "cseq": ["1 OPTIONS"], "max-forwards": ["70"],
            "content-type": ["application/sdp"],
        }, body)
        catcher.transport.write(request.to_bytes(), ("127.0.0.1", managed.port))
        answer = parse(await catcher.answer)
        assert answer.status == 200, f"{answer.status} {answer.get('warning')}"
    finally:
        await manager.cleanup()
        await port.stopListening()
