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
