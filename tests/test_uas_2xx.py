"""§13.3.1.4 on a Clock: the UAS core resends its 2xx until the ACK, then gives up with BYE."""

from __future__ import annotations

import pytest

from twsip.sip import sdp
from twsip.sip.dialog import CallFailed
from twsip.sip.message import Request, Response, parse
from twsip.testing import FakeNetwork


def invite_from(peer: tuple[str, int], target: tuple[str, int]) -> Request:
    uri = f"sip:200@{target[0]}:{target[1]}"
    return Request("INVITE", uri, {
        "via": [f"SIP/2.0/UDP {peer[0]}:{peer[1]};branch=z9hG4bKuas2xx"],
        "max-forwards": ["70"],
        "from": [f"<sip:raw@{peer[0]}:{peer[1]}>;tag=r1"],
        "to": [f"<{uri}>"],
        "call-id": ["uas-2xx@127.0.0.1"],
        "cseq": ["1 INVITE"],
        "contact": [f"<sip:raw@{peer[0]}:{peer[1]}>"],
        "content-type": ["application/sdp"],
    }, sdp.build_offer(("PCMU",), peer[0], 40000))


def setup_call():
    network = FakeNetwork()
    callee = network.add_instance("200")
    callee.start_serving()
    peer = network.endpoint()
    target = callee.transport.getHost()
    peer.send(invite_from(peer.address, (target.host, target.port)).to_bytes(),
              (target.host, target.port))
    network.pump()
    session = network.result(callee.incoming.get())
    answered = session.answer()
    network.pump()
    return network, callee, peer, session, answered


def received(peer) -> list:
    return [parse(data) for data, _ in peer.take()]


def test_2xx_is_resent_t1_doubling_to_t2_until_64_t1_then_bye() -> None:
    network, callee, peer, session, answered = setup_call()
    start = network.clock.seconds()
    times: list[float] = []
    byes: list[Request] = []
    while network.clock.seconds() - start < 40:
        for message in received(peer):
            if isinstance(message, Response) and message.status == 200 \
                    and message.cseq.method == "INVITE":
                times.append(round(network.clock.seconds() - start, 3))
            elif isinstance(message, Request) and message.method == "BYE":
                byes.append(message)
        network.advance(0.25)
    # The first 200 at 0, then T1=0.5 s doubling: 0.5, 1.5, 3.5, 7.5, then every T2=4 s.
    assert times[:5] == [0, 0.5, 1.5, 3.5, 7.5]
    assert all(b - a == 4 for a, b in zip(times[4:], times[5:]))
    assert times[-1] < 32
    # No ACK within 64*T1: the dialog ends with one BYE (resent by its own transaction,
    # since this peer answers nothing).
    assert byes and len({bye.top_via.branch for bye in byes}) == 1
    with pytest.raises(CallFailed) as info:
        network.result(answered)
    assert info.value.status == 408
    assert session.ended
    network.run(network.cleanup())
    assert network.clock.getDelayedCalls() == []


def test_ack_stops_the_2xx_retransmissions() -> None:
    network, callee, peer, session, answered = setup_call()
    [*_, ok] = [m for m in received(peer) if isinstance(m, Response) and m.status == 200]
    to = ok.get("to")
    ack = Request("ACK", ok.contact[0].uri, {
        "via": [f"SIP/2.0/UDP {peer.address[0]}:{peer.address[1]};branch=z9hG4bKack"],
        "max-forwards": ["70"],
        "from": [ok.get("from")],
        "to": [to],
        "call-id": [ok.call_id],
        "cseq": ["1 ACK"],
    })
    peer.send(ack.to_bytes(), callee.address)
    network.advance(0.1)
    assert network.result(answered) is session
    network.advance(40)
    assert [m for m in received(peer) if isinstance(m, Response)] == []
    assert session.established
    network.run(network.cleanup())


# -- re-INVITEs: their 2xx is resent by the same mechanism (AckWait) until their ACK -------

def _in_dialog(method: str, ok: Response, peer, cseq: int, branch: str,
               body: bytes = b"") -> Request:
    """A request from the raw peer inside the dialog that `ok` (our 200) confirmed."""
    headers = {
        "via": [f"SIP/2.0/UDP {peer.address[0]}:{peer.address[1]};branch={branch}"],
        "max-forwards": ["70"],
        "from": [ok.get("from")],
        "to": [ok.get("to")],
        "call-id": [ok.call_id],
        "cseq": [f"{cseq} {method}"],
        "contact": [f"<sip:raw@{peer.address[0]}:{peer.address[1]}>"],
    }
    if body:
        headers["content-type"] = ["application/sdp"]
    return Request(method, ok.contact[0].uri, headers, body)


def _established():
    network, callee, peer, session, answered = setup_call()
    [*_, ok] = [m for m in received(peer) if isinstance(m, Response) and m.status == 200]
    peer.send(_in_dialog("ACK", ok, peer, 1, "z9hG4bKack1").to_bytes(), callee.address)
    network.advance(0.1)
    assert network.result(answered) is session
    return network, callee, peer, session, ok


def _reinvite_200_times(network, peer, seconds: float) -> tuple[list[float], list[Request]]:
    start = network.clock.seconds()
    times: list[float] = []
    byes: list[Request] = []
    while network.clock.seconds() - start < seconds:
        for message in received(peer):
            if isinstance(message, Response) and message.cseq.number == 2:
                times.append(round(network.clock.seconds() - start, 3))
            elif isinstance(message, Request) and message.method == "BYE":
                byes.append(message)
        network.advance(0.25)
    return times, byes


def test_reinvite_2xx_is_resent_until_its_ack() -> None:
    network, callee, peer, session, ok = _established()
    offer = sdp.build_offer(("PCMU",), peer.address[0], 40000)
    peer.send(_in_dialog("INVITE", ok, peer, 2, "z9hG4bKre", offer).to_bytes(), callee.address)
    network.pump()
    times, _ = _reinvite_200_times(network, peer, 4)
    assert times == [0, 0.5, 1.5, 3.5]  # the same T1-doubling schedule as the first 200
    # An ACK for the first INVITE again (CSeq 1) does not stop the re-INVITE's 2xx ...
    peer.send(_in_dialog("ACK", ok, peer, 1, "z9hG4bKack1").to_bytes(), callee.address)
    network.pump()
    times, _ = _reinvite_200_times(network, peer, 4)
    assert len(times) == 1  # the one due 7.5 s after the re-INVITE
    # ... its own ACK does.
    peer.send(_in_dialog("ACK", ok, peer, 2, "z9hG4bKack2").to_bytes(), callee.address)
    network.pump()
    times, byes = _reinvite_200_times(network, peer, 40)
    assert times == [] and byes == [] and session.established
    network.run(network.cleanup())
    assert network.clock.getDelayedCalls() == []


def test_reinvite_2xx_without_ack_ends_the_call_with_bye() -> None:
    network, callee, peer, session, ok = _established()
    peer.send(_in_dialog("INVITE", ok, peer, 2, "z9hG4bKre").to_bytes(), callee.address)
    network.pump()
    times, byes = _reinvite_200_times(network, peer, 40)
    assert times[:5] == [0, 0.5, 1.5, 3.5, 7.5] and times[-1] < 32
    assert all(b - a == 4 for a, b in zip(times[4:], times[5:]))
    assert byes and len({bye.top_via.branch for bye in byes}) == 1
    assert session.ended
    network.run(network.cleanup())
    assert network.clock.getDelayedCalls() == []


def test_a_caller_resends_its_reinvite_2xx_until_the_ack() -> None:
    """The caller's side (ClientSession) uses the same mechanism for a re-INVITE it gets."""
    network = FakeNetwork()
    caller = network.add_instance("100")
    peer = network.endpoint()
    session = caller.dial(f"sip:200@{peer.address[0]}:{peer.address[1]}")
    network.pump()
    [(data, _)] = peer.take()
    invite = parse(data)
    assert isinstance(invite, Request)
    ok = invite.response(200, to_tag="callee1")
    ok.set("contact", f"<sip:200@{peer.address[0]}:{peer.address[1]}>")
    peer.send(ok.to_bytes(), caller.address)
    network.pump()
    assert session.established and [parse(d).method for d, _ in peer.take()] == ["ACK"]
    # The callee re-INVITEs: from its side, From is our To and the other way round.
    headers = {
        "via": [f"SIP/2.0/UDP {peer.address[0]}:{peer.address[1]};branch=z9hG4bKcre"],
        "max-forwards": ["70"],
        "from": [ok.get("to")],
        "to": [invite.get("from")],
        "call-id": [invite.call_id],
        "cseq": ["1 INVITE"],
        "contact": [f"<sip:200@{peer.address[0]}:{peer.address[1]}>"],
    }
    reinvite = Request("INVITE", caller.contact, headers)
    peer.send(reinvite.to_bytes(), caller.address)
    network.pump()
    times, _ = _reinvite_200_times_for(network, peer, 2.0)
    assert times == [0, 0.5, 1.5]
    ack_headers = dict(headers, via=[headers["via"][0].replace("cre", "cack")],
                       cseq=["1 ACK"])
    peer.send(Request("ACK", caller.contact, ack_headers).to_bytes(), caller.address)
    network.pump()
    times, _ = _reinvite_200_times_for(network, peer, 40)
    assert times == [] and session.established
    network.run(network.cleanup())
    assert network.clock.getDelayedCalls() == []


def _reinvite_200_times_for(network, peer, seconds: float) -> tuple[list[float], list]:
    start = network.clock.seconds()
    times: list[float] = []
    while network.clock.seconds() - start < seconds:
        for message in received(peer):
            if isinstance(message, Response) and message.cseq.method == "INVITE":
                times.append(round(network.clock.seconds() - start, 3))
        network.advance(0.25)
    return times, []
