"""What an established call keeps (issue 14, item 4): few GC-tracked objects, its messages
as bytes, and the public attributes still answering as before.

Ten thousand calls up at once in one process are walked by every full garbage collection,
so an established call pair must stay a few dozen objects; the messages it no longer uses
come back, parsed again, when somebody asks for them.
"""

from __future__ import annotations

import gc
from collections import Counter

from twisted.internet.defer import Deferred

from twsip.sip.dialog import CallFailed, ClientSession, ServerSession
from twsip.sip.instance import SipInstance
from twsip.sip import message
from twsip.sip.message import Request, Response, parse
from twsip.sip.overload import OverloadSettings
from twsip.sip.retained import rebuild_request, rebuild_response, retain
from twsip.testing import FakeNetwork

QUIET = {"media": False, "overload": OverloadSettings(enabled=False)}


def _pair(net: FakeNetwork, **kwargs: object) -> tuple[SipInstance, SipInstance]:
    caller, callee = net.add_instance("100", **kwargs), net.add_instance("200", **kwargs)
    callee.start_serving(auto_answer=True)
    return caller, callee


def _callee_session(callee: SipInstance) -> ServerSession:
    (session,) = [s for s in callee.calls if isinstance(s, ServerSession)]
    return session


def _value(d: Deferred) -> object:
    box: list[object] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    return box[0]


def test_an_established_call_pair_keeps_few_gc_tracked_objects() -> None:
    net = FakeNetwork(keep_log=False)
    caller, callee = _pair(net, **QUIET)
    for _ in range(3):  # warm up caches (answer plans, parsed names)
        net.run(net.run(caller.invite(callee.uri, timeout=60)).hangup())
    net.advance(40)
    gc.collect()
    before = Counter(type(o).__qualname__ for o in gc.get_objects())
    calls = 50
    pending = [caller.invite(callee.uri, timeout=60) for _ in range(calls)]
    net.pump()
    sessions = [net.result(d) for d in pending]
    del pending  # the test's own Deferreds are not the calls'
    assert all(s.established for s in sessions)
    # Parsed From/To/CSeq values are shared through a bounded cache (twsip.sip.message),
    # which is the parser's, not the calls': what only it holds is not counted.
    message._name_addrs.clear()
    message._cseqs.clear()
    gc.collect()
    after = Counter(type(o).__qualname__ for o in gc.get_objects())
    grown = after - before
    per_call = sum(grown.values()) / calls
    # Before issue 14 a pair kept ~133 (a parsed INVITE, 100, 180 and 200 on the caller,
    # the INVITE on the callee, Outcomes, mid-call state, a DelayedCall): now the two
    # sessions, their MediaSessions and INVITE transactions: 6.
    assert per_call < 8, grown.most_common(12)
    for kind in ("Request", "Response", "NameAddr", "Via", "MidCallState", "Outcome"):
        assert grown[kind] == 0, (kind, grown[kind])
    for kind in ("DelayedCall", "function", "cell", "list"):  # shared, none per call
        assert grown[kind] <= 3, (kind, grown[kind])
    for session in sessions:
        net.run(session.hangup())
    net.run(net.cleanup())


def test_a_retained_message_is_rebuilt_equal_to_the_original() -> None:
    net = FakeNetwork()
    caller, callee = _pair(net)
    session = caller.dial(callee.uri, timeout=60)
    invite = session.invite
    assert isinstance(invite, Request) and session.invite is invite  # parsed while early
    net.pump()
    provisional = [(r.status, r.to_bytes()) for r in session.provisional]
    assert session.established
    server = _callee_session(callee)
    # Up: every access parses again, a new object that serialises as before.
    assert session.invite is not session.invite
    assert session.invite.to_bytes() == invite.to_bytes()
    assert session.invite.headers == invite.headers  # ours never held a Content-Length
    assert [(r.status, r.to_bytes()) for r in session.provisional] == provisional
    assert [s for s, _ in provisional] == [100, 180]
    final = session.final_response
    assert final is not None and final.status == 200 and final.body == session.remote_sdp
    received = [parse(d.data) for d in net.log if d.data.startswith(b"INVITE ")]
    assert server.invite.headers["call-id"] == received[0].headers["call-id"]
    assert server.invite.body == received[0].body == server.remote_sdp
    assert server.invite.to_bytes() == retain(server.invite)
    net.run(session.hangup())
    net.run(net.cleanup())


def test_retain_round_trips_requests_and_responses() -> None:
    data = (b"INVITE sip:200@127.0.0.1:5062 SIP/2.0\r\n"
            b"v: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1;rport=5060;received=127.0.0.1\r\n"
            b"Via: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK0\r\n"
            b"Max-Forwards: 70\r\nf: \"A, B\" <sip:100@127.0.0.1>;tag=a\r\n"
            b"To: <sip:200@127.0.0.1>\r\ni: c1@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
            b"Allow: INVITE, ACK,BYE\r\nSupported:\r\nX-Thing: a, b\r\n"
            b"Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n")
    request = parse(data)
    again = rebuild_request(retain(request))
    assert again.headers == request.headers and again.body == request.body
    assert again.to_bytes() == request.to_bytes()
    response = request.response(180, to_tag="t")  # type: ignore[union-attr]
    received = parse(response.to_bytes())
    back = rebuild_response(retain(received))
    assert back.headers == received.headers and back.to.tag == "t"


def test_a_message_keeps_the_bytes_it_came_or_went_as_until_changed() -> None:
    """`Message.wire`: what a call keeps without serialising again, reset by any change
    made through the Message."""
    data = (b"INVITE sip:200@127.0.0.1:5062 SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5060;"
            b"branch=z9hG4bK1;rport\r\nf: <sip:100@127.0.0.1>;tag=a\r\nt: <sip:200@127.0.0.1>"
            b"\r\ni: c1@127.0.0.1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    request = parse(data)
    assert request.wire == data and retain(request) is request.wire
    request.top_via.set_param("rport", "5060")
    request.update_top_via()  # what stamping `received`/`rport` does
    assert request.wire is None and retain(request) == request.to_bytes()
    for change in (lambda m: m.set("subject", "x"),
                   lambda m: setattr(m, "to", m.to.with_tag("b"))):
        message = parse(data)
        change(message)
        assert message.wire is None
    net = FakeNetwork()
    caller, callee = _pair(net)
    session = net.run(caller.invite(callee.uri, timeout=60))
    sent = [d.data for d in net.log if d.data.startswith(b"INVITE ")]
    assert session._invite == sent[0]  # kept as exactly what went on the wire
    net.run(session.hangup())
    net.run(net.cleanup())


def test_public_answers_stay_the_same_once_the_call_is_up() -> None:
    net = FakeNetwork()
    caller, callee = _pair(net)
    session = net.run(caller.invite(callee.uri, timeout=60))
    assert isinstance(session, ClientSession)
    assert _value(session.when_answered()) is session
    ringing = _value(session.when_ringing())
    assert isinstance(ringing, Response) and ringing.status == 180
    server = _callee_session(callee)
    assert _value(server.answer()) is server  # answered and ACKed: at once, the same call
    assert session.midcall.negotiated == session.negotiated is not None
    ended = session.when_ended()
    net.run(session.hangup())
    assert _value(ended) == "local hangup"
    assert _value(session.when_ended()) == "local hangup"
    assert _value(server.when_ended()) == "remote hangup"
    midcall = server.midcall  # made only now: closed, as it would have been
    assert midcall.ended == "remote hangup"
    assert isinstance(_value(midcall.transferred.wait()).value, Exception)  # type: ignore[attr-defined]
    net.run(net.cleanup())


def test_an_answer_without_ringing_says_so_when_asked_late() -> None:
    net = FakeNetwork()
    caller, callee = net.add_instance("100"), net.add_instance("200")
    callee.start_serving()
    d = caller.invite(callee.uri, timeout=60)
    net.pump()
    server = net.result(callee.incoming.get())
    server.answer()
    net.pump()
    session = net.result(d)
    failure = _value(session.when_ringing())
    assert isinstance(failure.value, CallFailed)  # type: ignore[attr-defined]
    assert failure.value.status == 200  # type: ignore[attr-defined]
    net.run(session.hangup())
    net.run(net.cleanup())


def test_the_setup_limit_shares_one_timer_and_still_cancels() -> None:
    net = FakeNetwork()
    caller = net.add_instance("100")
    silent = net.endpoint()
    target = f"sip:200@127.0.0.1:{silent.address[1]}"
    calls = [caller.invite(target, timeout=5) for _ in range(20)]
    mine = [c for c in net.clock.getDelayedCalls()
            if getattr(c.func, "__self__", None) is caller.limits.setup]
    assert len(mine) == 1
    net.advance(4.9)
    assert not any(c.called for c in calls)
    net.advance(0.2)
    for d in calls:
        failure = _value(d)
        assert failure.value.status == 408  # type: ignore[attr-defined]
        assert "no answer within 5 s" in str(failure.value)  # type: ignore[attr-defined]
    net.run(net.cleanup())
