"""Mid-call: re-INVITEs we send (RFC 3261 §14, RFC 3264 §8), REFER/NOTIFY (RFC 3515, 6665),
Replaces (RFC 3891) and the transfer patterns of RFC 5589, on the in-memory network and
once over real UDP."""

from __future__ import annotations

import pytest
import pytest_twisted

from twsip.flow.engine import Engine
from twsip.flow.model import load_scenario
from twsip.flow.result import COMPLETED
from twsip.manager import InstanceManager
from twsip.sip import sdp
from twsip.sip.dialog import CallFailed, ClientSession, ServerSession
from twsip.sip.instance import SipInstance
from twsip.sip.message import Request, Response, parse
from twsip.sip.reinvite import glare_delay, overlap_refusal
from twsip.sip.sdp import Direction
from twsip.sip.transaction import NO_USER, ClientNonInviteTransaction
from twsip.sip.transfer import parse_sipfrag, replaces_target
from twsip.testing import FakeNetwork, Impairment

from test_engine import EXAMPLES


def call(net: FakeNetwork, a: SipInstance, b: SipInstance) -> tuple[ClientSession,
                                                                     ServerSession]:
    d = a.invite(b.uri)
    net.pump()
    callee = net.result(b.incoming.get())
    callee.answer()
    caller = net.run(d)
    net.advance(0.01)
    return caller, callee


def methods(net: FakeNetwork, since: int = 0) -> list[str]:
    names = {i.port: i.dn for i in net.instances}
    out = []
    for dg in net.log[since:]:
        first = dg.data.split(b"\r\n", 1)[0].decode()
        label = first.split(" ", 1)[0] if not first.startswith("SIP/2.0") else \
            first.split(" ", 1)[1]
        out.append(f"{names.get(dg.source[1], '?')}>{names.get(dg.destination[1], '?')} "
                   f"{label}")
    return out


def finish(net: FakeNetwork) -> None:
    net.run(net.cleanup())
    net.settle()
    assert net.clock.getDelayedCalls() == []
    assert net.stray == []


@pytest.fixture
def net() -> FakeNetwork:
    return FakeNetwork()


@pytest.fixture
def three(net: FakeNetwork) -> tuple[SipInstance, SipInstance, SipInstance]:
    x, y, z = net.add_instance("100"), net.add_instance("200"), net.add_instance("300")
    for instance in (x, y, z):
        instance.start_serving()
    return x, y, z


# -- hold and retrieve -------------------------------------------------------------------

@pytest.mark.parametrize("holder", ["caller", "callee"])
def test_hold_and_retrieve_from_either_side(net: FakeNetwork, three, holder: str) -> None:
    x, y, _ = three
    caller, callee = call(net, x, y)
    us, peer = (caller, callee) if holder == "caller" else (callee, caller)
    held_early = peer.midcall.until(lambda n: n.held_by_peer)
    agreed = net.run(us.hold())
    assert (agreed.local_direction, agreed.remote_direction) == (Direction.SENDONLY,
                                                                 Direction.RECVONLY)
    assert net.result(held_early).held_by_peer
    assert peer.negotiated.local_direction is Direction.RECVONLY
    # An event that starts after the fact sees the state at once.
    assert net.result(peer.midcall.until(lambda n: n.held_by_peer)).held_by_peer
    agreed = net.run(us.retrieve())
    assert agreed.local_direction is Direction.SENDRECV
    assert not net.result(peer.midcall.until(lambda n: not n.held_by_peer)).held_by_peer
    assert methods(net)[-3:] == [f"{us.ua.dn}>{peer.ua.dn} INVITE",
                                 f"{peer.ua.dn}>{us.ua.dn} 200 OK",
                                 f"{us.ua.dn}>{peer.ua.dn} ACK"]
    finish(net)


def test_holding_a_peer_that_holds_us_offers_inactive_and_a_retrieve_keeps_our_hold(
        net: FakeNetwork, three) -> None:
    x, y, _ = three
    caller, callee = call(net, x, y)
    net.run(caller.hold())
    agreed = net.run(callee.hold())
    assert agreed.local_direction is Direction.INACTIVE
    agreed = net.run(caller.retrieve())  # callee still holds: it answers sendonly
    assert (agreed.local_direction, agreed.remote_direction) == (Direction.RECVONLY,
                                                                 Direction.SENDONLY)
    finish(net)


def test_glare_491_then_the_section_14_1_retry_timers(net: FakeNetwork, three) -> None:
    x, y, _ = three
    caller, callee = call(net, x, y)
    start = net.clock.seconds()
    d_caller, d_callee = caller.hold(), callee.hold()
    net.pump()
    statuses = [line for line in methods(net) if "491" in line]
    assert len(statuses) == 2  # each side refused the other's offer
    net.run(d_callee)
    callee_retry = net.clock.seconds() - start
    net.run(d_caller)
    caller_retry = net.clock.seconds() - start
    assert 0 <= callee_retry <= 2.0 + 1e-6          # not the Call-ID's owner
    assert 2.1 - 1e-6 <= caller_retry <= 4.0 + 1e-6  # the owner (it made the Call-ID)
    assert callee.negotiated.held_by_peer and caller.negotiated.held_by_peer
    finish(net)


def test_glare_delay_ranges() -> None:
    import random
    rng = random.Random(1)
    owner = [glare_delay(True, rng) for _ in range(500)]
    other = [glare_delay(False, rng) for _ in range(500)]
    assert 2.1 <= min(owner) and max(owner) <= 4.0
    assert 0.0 <= min(other) and max(other) <= 2.0
    assert all(abs(v * 100 - round(v * 100)) < 1e-9 for v in owner + other)  # 10 ms units


def test_a_lost_reinvite_or_200_is_retransmitted(net: FakeNetwork, three) -> None:
    x, y, _ = three
    caller, callee = call(net, x, y)
    net.impair(x, y, Impairment(drop=0.5, seed=3))
    net.impair(y, x, Impairment(drop=0.5, seed=4))
    agreed = net.run(caller.hold())
    assert agreed.local_direction is Direction.SENDONLY
    net.advance(40)  # the 2xx is resent until its ACK, and the call survives
    assert caller.established and callee.established
    assert callee.negotiated.held_by_peer
    net.impair_all(None)
    net.impair(x, y, Impairment())
    net.impair(y, x, Impairment())
    finish(net)


def test_overlapping_reinvite_gets_500_with_retry_after() -> None:
    invite = Request("INVITE", "sip:a@127.0.0.1", {
        "via": ["SIP/2.0/UDP 127.0.0.1:5000;branch=z9hG4bKx"], "from": ["<sip:b@x>;tag=1"],
        "to": ["<sip:a@y>;tag=2"], "call-id": ["c"], "cseq": ["3 INVITE"]})
    refusal = overlap_refusal(invite, None, True, awaiting_ack=True)
    assert refusal is not None and refusal.status == 500
    assert 0 <= int(refusal.get("retry-after")) <= 10
    assert overlap_refusal(invite, None, False, False).status == 500  # first INVITE open
    assert overlap_refusal(invite, None, True, False) is None


def _raw_call(net: FakeNetwork):
    """A call from an instance to a hand-written peer, established."""
    caller = net.add_instance("100")
    peer = net.endpoint()
    session = caller.dial(f"sip:200@{peer.address[0]}:{peer.address[1]}")
    net.pump()
    [(data, _)] = peer.take()
    invite = parse(data)
    ok = invite.response(200, to_tag="peer1")
    ok.set("contact", f"<sip:200@{peer.address[0]}:{peer.address[1]}>")
    ok.set("content-type", "application/sdp")
    ok.body = sdp.build_answer(invite.body, ("PCMU",), "127.0.0.1", 40000)
    peer.send(ok.to_bytes(), caller.address)
    net.pump()
    peer.take()
    return caller, peer, session


def _hold_refused(net: FakeNetwork, caller, peer, session, status: int, retry_after: str):
    """The hold re-INVITE of `_raw_call`, refused `status` with `Retry-After`; returns the
    hold's Deferred and the re-INVITE as the peer received it."""
    d = session.hold()
    net.pump()
    first = parse(peer.take()[0][0])
    refusal = first.response(status, to_tag="peer1")
    refusal.set("retry-after", retry_after)
    peer.send(refusal.to_bytes(), caller.address)
    net.pump()
    return d, first


@pytest.mark.parametrize("status", [488, 403])
def test_a_refused_hold_keeps_the_session_as_it_was(net: FakeNetwork, status: int) -> None:
    caller, peer, session = _raw_call(net)
    before = session.negotiated
    d = session.hold()
    net.pump()
    [(data, _)] = peer.take()
    reinvite = parse(data)
    assert b"a=sendonly" in reinvite.body and reinvite.cseq.number == 2
    peer.send(reinvite.response(status, to_tag="peer1").to_bytes(), caller.address)
    net.pump()
    with pytest.raises(CallFailed) as info:
        net.result(d)
    assert info.value.status == status
    assert session.negotiated is before and not session.sdp.offer_pending
    assert [parse(d).method for d, _ in peer.take()] == ["ACK"]  # the transaction's ACK
    # The next offer works (nothing left pending).
    d = session.retrieve()
    net.pump()
    assert peer.take()
    finish(net)


def test_a_491_from_a_peer_is_retried_after_the_owners_timer(net: FakeNetwork) -> None:
    caller, peer, session = _raw_call(net)
    d = session.hold()
    net.pump()
    [(data, _)] = peer.take()
    first = parse(data)
    peer.send(first.response(491, to_tag="peer1").to_bytes(), caller.address)
    net.pump()
    peer.take()  # its ACK
    start = net.clock.seconds()
    net.advance(2.09)
    assert peer.take() == []  # the owner waits at least 2.1 s
    net.advance(2.0)
    retry = parse(peer.take()[0][0])
    assert retry.method == "INVITE" and retry.cseq.number == 3
    ok = retry.response(200, to_tag="peer1")
    ok.set("content-type", "application/sdp")
    ok.body = sdp.build_answer(retry.body, ("PCMU",), "127.0.0.1", 40000)
    peer.send(ok.to_bytes(), caller.address)
    net.pump()
    assert net.result(d).local_direction is Direction.SENDONLY
    assert net.clock.seconds() - start <= 4.1
    finish(net)


# -- blind transfer ----------------------------------------------------------------------

def test_blind_transfer_of_the_caller(net: FakeNetwork, three) -> None:
    x, y, z = three
    caller, callee = call(net, x, y)  # y (the callee) transfers x (the caller) to z
    mark = len(net.log)
    d = callee.refer(z.uri)
    net.pump()
    target = net.result(z.incoming.get())
    assert target.invite.get("referred-by") == f"<{callee.local_uri}>"
    target.answer()
    assert net.run(d) == "200 OK"
    net.pump()
    new = caller.midcall.successor
    assert isinstance(new, ClientSession) and new.established and new.peer == z.address
    assert net.result(caller.midcall.transferred.wait()).startswith("transferred to")
    assert net.result(new.midcall.transferred.wait())
    assert net.result(callee.midcall.transferred.wait()) == "transferee reported 200 OK"
    assert caller.ended and callee.ended and callee.end_reason == "local hangup"
    assert methods(net, mark) == [
        "200>100 REFER", "100>200 202 Accepted", "100>200 NOTIFY", "100>300 INVITE",
        "200>100 200 OK", "300>100 100 Trying", "300>100 200 OK", "100>300 ACK",
        "100>200 NOTIFY", "200>100 200 OK", "200>100 BYE", "100>200 200 OK"]
    notifies = [parse(dg.data) for dg in net.log[mark:] if dg.data.startswith(b"NOTIFY")]
    assert [parse_sipfrag(n.body) for n in notifies] == [(100, "Trying"), (200, "OK")]
    assert [n.get("subscription-state") for n in notifies] == [
        "active;expires=60", "terminated;reason=noresource"]
    refer = next(parse(dg.data) for dg in net.log[mark:] if dg.data.startswith(b"REFER"))
    assert all(n.get("event") == f"refer;id={refer.cseq.number}" for n in notifies)
    assert all(n.content_type == "message/sipfrag" for n in notifies)
    finish(net)


def test_a_failed_transfer_reports_the_status_and_keeps_the_call(net: FakeNetwork,
                                                                 three) -> None:
    x, y, z = three
    caller, callee = call(net, x, y)
    d = caller.refer(z.uri)  # the caller transfers this time
    net.pump()
    net.result(z.incoming.get()).reject(486)
    with pytest.raises(CallFailed) as info:
        net.run(d)
    assert info.value.status == 486
    net.advance(5)
    assert caller.established and callee.established  # nobody hung up
    finish(net)


def test_a_lost_notify_is_retransmitted(net: FakeNetwork, three) -> None:
    x, y, z = three
    caller, callee = call(net, x, y)
    lossy = net.impair(x, y, Impairment(drop=0.5, seed=7))
    d = callee.refer(z.uri)
    net.pump()
    net.result(z.incoming.get()).answer()
    assert net.run(d) == "200 OK"
    assert lossy.dropped > 0
    net.impair(x, y, Impairment())
    finish(net)


def test_refer_rejected_for_a_target_outside_loopback(net: FakeNetwork, three) -> None:
    x, y, _ = three
    caller, callee = call(net, x, y)
    with pytest.raises(CallFailed) as info:  # refused before anything is sent
        net.result(caller.refer("sip:300@192.0.2.1"))
    assert info.value.status == 403
    # A peer that REFERs us there anyway gets 403, and nothing is resolved or dialled.
    request = callee.in_dialog_request("REFER")
    request.set("refer-to", "<sip:300@example.com>")
    box: list = []

    class Got:
        def receive_response(self, response: Response) -> None:
            box.append(response.status)

        def timed_out(self) -> None:
            box.append("timeout")

    ClientNonInviteTransaction(y.transactions, request, callee.destination(), Got())
    net.pump()
    assert box == [403] and len(x.calls) == 1
    finish(net)


def test_refer_outside_a_dialog_403_and_notify_for_nothing_481(net: FakeNetwork,
                                                               three) -> None:
    from raw_phone import RawPhone
    x, y, _ = three
    phone = RawPhone(net, x)
    phone.send(phone.request("REFER", extra={"refer-to": [f"<{y.uri}>"]}))
    net.pump()
    assert [r.status for r in phone.received()] == [403]
    phone.send(phone.request("NOTIFY", to_tag="nope", extra={"event": ["refer"]}))
    net.pump()
    assert [r.status for r in phone.received()] == [481]
    caller, callee = call(net, x, y)  # in a dialog, but no REFER was sent
    notify = callee.in_dialog_request("NOTIFY")
    notify.set("event", "refer;id=9")
    notify.set("content-type", "message/sipfrag")
    notify.body = b"SIP/2.0 200 OK\r\n"
    mark = len(net.log)
    ClientNonInviteTransaction(y.transactions, notify, callee.destination(), NO_USER)
    net.pump()
    assert methods(net, mark) == ["200>100 NOTIFY", "100>200 481 Subscription Does Not Exist"]
    finish(net)


# -- attended transfer -------------------------------------------------------------------

def test_attended_transfer_the_target_honours_replaces(net: FakeNetwork, three) -> None:
    x, y, z = three
    primary, y_side = call(net, x, y)
    consult, z_side = call(net, x, z)
    target = replaces_target(consult)
    assert "?Replaces=" in target and "%3Bto-tag%3D" in target
    mark = len(net.log)
    assert net.run(primary.refer(target)) == "200 OK"
    net.pump()
    replacing = z_side.midcall.successor
    assert isinstance(replacing, ServerSession) and replacing.established
    assert replacing.invite.get("replaces").startswith(consult.call_id)
    assert z.incoming.pending == []  # no INCOMING, no ringing for the replacing call
    assert y_side.midcall.successor.peer == z.address
    assert primary.ended and consult.ended and z_side.ended
    assert z_side.end_reason == "local hangup"  # the target ended the consult call
    lines = methods(net, mark)
    assert "300>200 180 Ringing" not in lines
    assert lines.index("300>100 BYE") < lines.index("100>200 BYE")
    finish(net)


def test_replaces_for_no_dialog_is_481(net: FakeNetwork, three) -> None:
    x, y, z = three
    primary, _ = call(net, x, y)
    consult, _ = call(net, x, z)
    wrong = replaces_target(consult).replace("to-tag%3D", "to-tag%3Dx")
    with pytest.raises(CallFailed) as info:
        net.run(primary.refer(wrong))
    assert info.value.status == 481
    assert consult.established and primary.established
    finish(net)


# -- over real UDP -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["hold-retrieve", "blind-transfer", "attended-transfer"])
@pytest_twisted.ensureDeferred
async def test_midcall_examples_over_loopback_udp(name: str) -> None:
    engine = Engine(InstanceManager(base_port=0))
    result = await engine.run(load_scenario(EXAMPLES / f"{name}.json"))
    assert result.outcome == COMPLETED, result.reason
    assert not engine.instance_manager.instances


# -- the paths §14 leaves to timers and answers of the peer --------------------------------

def _offer(direction: str, version: int) -> bytes:
    """A hand-written audio offer with an explicit direction and a session version."""
    return (f"v=0\r\no=raw 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
            f"t=0 0\r\nm=audio 41000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na={direction}\r\n"
            ).encode()


def _phone_call(net: FakeNetwork, three) -> tuple[object, ServerSession, Request, Response]:
    """A hand-written caller (RawPhone) in a confirmed call with instance 200."""
    from raw_phone import RawPhone
    _, y, _ = three
    phone = RawPhone(net, y)
    invite = phone.request("INVITE", extra={"content-type": ["application/sdp"]},
                           body=_offer("sendrecv", 1))
    phone.send(invite)
    net.pump()
    callee = net.result(y.incoming.get())
    callee.answer()
    net.pump()
    ok = next(r for r in phone.received() if r.status == 200)
    phone.send(phone.follow_up("ACK", invite, ok, cseq=1))
    net.pump()
    assert callee.established
    return phone, callee, invite, ok


def _in_dialog(phone, invite: Request, ok: Response, method: str, cseq: int,
               body: bytes = b"") -> Request:
    request = phone.follow_up(method, invite, ok, cseq=cseq)
    if body:
        request.set("content-type", "application/sdp")
        request.body = body
    return request


def test_an_overlapping_reinvite_over_the_network_gets_500_and_the_call_survives(
        net: FakeNetwork, three) -> None:
    phone, callee, invite, ok = _phone_call(net, three)
    hold = _in_dialog(phone, invite, ok, "INVITE", 2, _offer("sendonly", 2))
    phone.send(hold)
    net.pump()
    [held_ok] = [r for r in phone.received() if r.status == 200]
    assert b"a=recvonly" in held_ok.body and callee.negotiated.held_by_peer
    # No ACK yet: the 2xx is still being retransmitted, and a new offer overlaps it.
    overlapping = _in_dialog(phone, invite, ok, "INVITE", 3, _offer("sendrecv", 3))
    phone.send(overlapping)
    net.pump()
    [refusal] = phone.received()
    assert refusal.status == 500 and refusal.cseq.number == 3
    assert 0 <= int(refusal.get("retry-after")) <= 10
    assert callee.negotiated.held_by_peer  # the refused offer changed nothing
    # The 500's ACK belongs to its transaction (§17.1.1.3): the INVITE's branch.
    phone.send(phone.follow_up("ACK", overlapping, refusal, cseq=3, same_branch=True))
    net.advance(0.6)  # the 2xx to CSeq 2 is resent meanwhile (§13.3.1.4)
    assert [r.status for r in phone.received()] == [200]
    phone.send(_in_dialog(phone, invite, ok, "ACK", 2))
    net.advance(1)
    assert phone.received() == [] and callee.established
    # The call goes on: the retried offer is accepted, the peer is back to sendrecv.
    phone.send(_in_dialog(phone, invite, ok, "INVITE", 4, _offer("sendrecv", 3)))
    net.pump()
    [back] = phone.received()
    assert back.status == 200 and b"a=sendrecv" in back.body
    phone.send(_in_dialog(phone, invite, ok, "ACK", 4))
    net.advance(40)  # past 64*T1: nothing ends the call
    assert callee.established and not callee.negotiated.held_by_peer
    assert phone.received() == []
    callee.hangup()
    net.pump()
    [(data, _)] = phone.endpoint.take()
    bye = parse(data)
    assert bye.method == "BYE" and bye.cseq.number == 1  # our first request in the dialog
    phone.send(bye.response(200))
    net.pump()
    finish(net)


@pytest.mark.parametrize("status,retry_after", [
    (500, "5"), (503, "5"),
    # RFC 3261 §20.33: delta-seconds [ comment ] *( SEMI retry-param )
    (503, "5 (in a meeting)"), (500, "5;duration=60"), (503, "5 (busy);duration=60")])
def test_a_retry_after_answer_to_our_reinvite_is_retried_after_that_delay(
        net: FakeNetwork, status: int, retry_after: str) -> None:
    caller, peer, session = _raw_call(net)
    d, first = _hold_refused(net, caller, peer, session, status, retry_after)
    assert [parse(m).method for m, _ in peer.take()] == ["ACK"]
    assert not d.called
    net.advance(4.99)
    assert peer.take() == []  # not before the Retry-After
    net.advance(0.02)
    retry = parse(peer.take()[0][0])
    assert retry.method == "INVITE" and retry.cseq.number == first.cseq.number + 1
    assert b"a=sendonly" in retry.body
    ok = retry.response(200, to_tag="peer1")
    ok.set("content-type", "application/sdp")
    ok.body = sdp.build_answer(retry.body, ("PCMU",), "127.0.0.1", 40000)
    peer.send(ok.to_bytes(), caller.address)
    net.pump()
    assert net.result(d).local_direction is Direction.SENDONLY
    assert session.established
    finish(net)


def test_a_retry_after_too_long_fails_the_reinvite_and_keeps_the_call(
        net: FakeNetwork) -> None:
    caller, peer, session = _raw_call(net)
    before = session.negotiated
    d, first = _hold_refused(net, caller, peer, session, 503, "3600")
    with pytest.raises(CallFailed) as info:
        net.result(d)
    assert info.value.status == 503
    assert session.established and session.negotiated is before
    finish(net)


@pytest.mark.parametrize("status", [408, 481])
def test_a_408_or_481_to_our_reinvite_ends_the_call(net: FakeNetwork, status: int) -> None:
    caller, peer, session = _raw_call(net)
    d = session.hold()
    net.pump()
    reinvite = parse(peer.take()[0][0])
    peer.send(reinvite.response(status, to_tag="peer1").to_bytes(), caller.address)
    net.pump()
    with pytest.raises(CallFailed) as info:
        net.result(d)
    assert info.value.status == status
    sent = [parse(m) for m, _ in peer.take()]
    assert [m.method for m in sent] == ["ACK", "BYE"]  # §12.2.1.2: the dialog is over
    assert session.ended
    finish(net)


def test_an_unanswered_reinvite_times_out_and_ends_the_call(net: FakeNetwork) -> None:
    caller, peer, session = _raw_call(net)
    d = session.hold()
    net.advance(33)  # Timer B (64*T1) without any answer
    with pytest.raises(CallFailed) as info:
        net.result(d)
    assert info.value.status == 408
    assert session.ended
    assert "BYE" in [parse(m).method for m, _ in peer.take()]
    finish(net)


def test_the_transferee_ends_the_old_call_when_the_transferor_does_not(
        net: FakeNetwork, three) -> None:
    from twsip.sip.transfer import TRANSFEREE_BYE_GRACE
    x, y, z = three
    caller, callee = call(net, x, y)
    # The transferor (y) REFERs by hand, so nothing of ours hangs up after the NOTIFY.
    refer = callee.in_dialog_request("REFER")
    refer.set("refer-to", f"<{z.uri}>")
    answers: list[int] = []

    class Got:
        def receive_response(self, response: Response) -> None:
            answers.append(response.status)

        def timed_out(self) -> None:
            answers.append(408)

    mark = len(net.log)
    ClientNonInviteTransaction(y.transactions, refer, callee.destination(), Got())
    net.pump()
    net.result(z.incoming.get()).answer()
    net.advance(0.1)
    assert answers == [202]
    notifies = [parse(dg.data) for dg in net.log[mark:] if dg.data.startswith(b"NOTIFY")]
    assert [parse_sipfrag(n.body) for n in notifies] == [(100, "Trying"), (200, "OK")]
    # y sent its REFER by hand, so it knows no subscription: 481 to both NOTIFYs, which
    # ends the subscription (RFC 6665 §4.1.3) but not the call.
    new = caller.midcall.successor
    assert isinstance(new, ClientSession) and new.established
    assert caller.established and callee.established  # nobody has left the old call yet
    net.advance(TRANSFEREE_BYE_GRACE - 0.2)
    assert caller.established
    net.advance(0.2)
    assert caller.ended and callee.ended
    assert caller.end_reason == "local hangup" and callee.end_reason == "remote hangup"
    assert new.established  # the new call stays
    finish(net)


def test_a_call_ended_while_a_retry_waits_sends_no_retry(net: FakeNetwork) -> None:
    caller, peer, session = _raw_call(net)
    d, first = _hold_refused(net, caller, peer, session, 500, "5")
    peer.take()  # the ACK of the 500
    bye = Request("BYE", first.uri, {
        "via": [f"SIP/2.0/UDP {peer.address[0]}:{peer.address[1]};branch=z9hG4bKbye1"],
        "max-forwards": ["70"], "from": [first.get("to")],
        "to": [first.get("from")], "call-id": [first.call_id], "cseq": ["7 BYE"]})
    peer.send(bye.to_bytes(), caller.address)
    net.pump()
    assert [parse(m).status for m, _ in peer.take()] == [200]
    with pytest.raises(CallFailed) as info:
        net.result(d)
    assert info.value.status == 481 and session.ended
    net.advance(10)
    assert peer.take() == []  # the retry never went out
    finish(net)
