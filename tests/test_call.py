"""Real calls between instances over UDP on 127.0.0.1: each side sees what the other did."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol

from twsip.sip import sdp
from twsip.sip.dialog import CallFailed
from twsip.manager import InstanceManager
from twsip.sip.message import Request, Response, parse
from twsip.flow.model import graph_for_instances


class Ladder:
    """Every message each instance sent or received, as (dn, direction, summary)."""

    def __init__(self, manager: InstanceManager) -> None:
        self.rows: list[tuple[str, str, str]] = []
        for managed in manager.instances.values():
            managed.ua.observers.append(self.record)

    def record(self, event) -> None:
        self.rows.append((event.instance.dn, event.direction, event.summary))

    def of(self, dn: str, direction: str) -> list[str]:
        return [s for d, dr, s in self.rows if d == dn and dr == direction]


@pytest.fixture
def manager():
    m = InstanceManager(base_port=0)
    m.create_instances(graph_for_instances(2).configs)
    m.start_serving()
    yield m
    pytest_twisted.blockon(m.cleanup())


async def until(predicate, manager: InstanceManager, limit: int = 200) -> None:
    """Let the reactor run until `predicate()` holds (bounded by turns, not by time)."""
    for _ in range(limit):
        if predicate():
            return
        d: defer.Deferred = defer.Deferred()
        reactor.callLater(0.005, d.callback, None)
        await d
    raise AssertionError("condition never became true")


@pytest_twisted.ensureDeferred
async def test_full_call_invite_to_bye(manager: InstanceManager) -> None:
    a, b = manager.get_instance("instance-100"), manager.get_instance("instance-200")
    ladder = Ladder(manager)
    calling = a.ua.invite(manager.resolve_target("200"), timeout=5)
    callee = await b.incoming.get()
    assert callee.caller.startswith("sip:100@127.0.0.1")
    callee.ringing()
    answered = callee.answer()
    caller = await calling
    assert await answered is callee
    assert caller.call_id == callee.call_id
    assert (caller.local_tag, caller.remote_tag) == (callee.remote_tag, callee.local_tag)
    assert [pt for pt, _ in sdp.audio_payloads(caller.remote_sdp)] == [0, 8, 101]
    assert b"m=audio" in callee.remote_sdp
    ended = callee.when_ended()
    bye_response = await caller.hangup()
    assert bye_response.status == 200
    assert await ended == "remote hangup"
    assert await caller.when_ended() == "local hangup"
    await until(lambda: "ACK" in ladder.of("200", "in"), manager)
    assert ladder.of("100", "out") == ["INVITE", "ACK", "BYE"]
    assert ladder.of("200", "in") == ["INVITE", "ACK", "BYE"]
    assert ladder.of("200", "out") == ["100 Trying", "180 Ringing", "200 OK", "200 OK"]
    assert ladder.of("100", "in") == ["100 Trying", "180 Ringing", "200 OK", "200 OK"]
    assert a.ua.dialogs == {} and b.ua.dialogs == {}


@pytest_twisted.ensureDeferred
async def test_callee_hangs_up(manager: InstanceManager) -> None:
    a, b = manager.get_instance("instance-100"), manager.get_instance("instance-200")
    calling = a.ua.invite(manager.resolve_target("200"), timeout=5)
    callee = await b.incoming.get()
    await callee.answer()
    caller = await calling
    ended = caller.when_ended()
    assert (await callee.hangup()).status == 200
    assert await ended == "remote hangup"


@pytest_twisted.ensureDeferred
async def test_cancel_before_answer(manager: InstanceManager) -> None:
    a, b = manager.get_instance("instance-100"), manager.get_instance("instance-200")
    ladder = Ladder(manager)
    session = a.ua.dial(manager.resolve_target("200"), timeout=5)
    callee = await b.incoming.get()
    callee.ringing()
    await session.when_ringing()
    answered = session.when_answered()
    answered.cancel()
    with pytest.raises(CallFailed) as info:
        await answered
    assert info.value.status == 487
    assert await callee.when_ended() == "cancelled by caller"
    await until(lambda: "ACK" in ladder.of("200", "in"), manager)
    assert ladder.of("200", "in") == ["INVITE", "CANCEL", "ACK"]
    assert ladder.of("200", "out") == [
        "100 Trying", "180 Ringing", "200 OK", "487 Request Terminated"]


@pytest_twisted.ensureDeferred
async def test_reject_486(manager: InstanceManager) -> None:
    a, b = manager.get_instance("instance-100"), manager.get_instance("instance-200")
    calling = a.ua.invite(manager.resolve_target("200"), timeout=5)
    callee = await b.incoming.get()
    callee.reject(486)
    with pytest.raises(CallFailed) as info:
        await calling
    assert (info.value.status, info.value.reason) == (486, "Busy Here")
    assert await callee.when_ended() == "rejected 486"


@pytest_twisted.ensureDeferred
async def test_full_queue_answers_486() -> None:
    manager = InstanceManager(base_port=0, queue_size=1)
    try:
        a, b = manager.create_instances(graph_for_instances(2).configs)
        manager.start_serving()
        first = a.ua.invite(manager.resolve_target("200"), timeout=5)
        second = a.ua.invite(manager.resolve_target("200"), timeout=5)
        with pytest.raises(CallFailed) as info:
            await second
        assert info.value.status == 486
        queued = await b.incoming.get()  # the first call is still there and usable
        queued.answer()
        session = await first
        assert session.established
    finally:
        await manager.cleanup()


@pytest_twisted.ensureDeferred
async def test_options_gets_200_with_allow_accept_supported(manager: InstanceManager) -> None:
    a = manager.get_instance("instance-100")
    response = await a.ua.options(manager.resolve_target("200"))
    assert response.status == 200
    assert set(response.get_all("allow")) >= {"INVITE", "ACK", "CANCEL", "BYE",
                                               "OPTIONS"}
    assert response.get("accept") == "application/sdp"
    assert "supported" in response


class RawPeer(DatagramProtocol):
    """A test-owned socket that collects every datagram it gets."""

    def __init__(self) -> None:
        self.waiting: list[defer.Deferred] = []

    def datagramReceived(self, data: bytes, addr) -> None:  # noqa: N802
        if self.waiting:
            self.waiting.pop(0).callback(parse(data))

    def next(self) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.waiting.append(d)
        return d.addTimeout(5, reactor)


def raw_request(method: str, port: int, target_port: int, to_tag: str | None = None) -> bytes:
    to = f"<sip:200@127.0.0.1:{target_port}>" + (f";tag={to_tag}" if to_tag else "")
    return Request(method, f"sip:200@127.0.0.1:{target_port}", {
        "via": [f"SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bKraw{method}"],
        "max-forwards": ["70"],
        "from": [f"<sip:raw@127.0.0.1:{port}>;tag=r1"],
        "to": [to],
        "call-id": [f"raw-{method}@127.0.0.1"],
        "cseq": [f"1 {method}"],
    }).to_bytes()


@pytest_twisted.ensureDeferred
async def test_bye_to_no_dialog_gets_481_sent_to_the_source(manager: InstanceManager) -> None:
    b = manager.get_instance("instance-200")
    peer = RawPeer()
    port = reactor.listenUDP(0, peer, interface="127.0.0.1")
    try:
        me = port.getHost().port
        reply = peer.next()
        # The Via names 192.0.2.9: the answer must still come back to our loopback socket.
        port.write(raw_request("BYE", me, b.port, to_tag="nosuch"), ("127.0.0.1", b.port))
        response = await reply
        assert isinstance(response, Response) and response.status == 481
        via = response.top_via
        assert via.received == "127.0.0.1" and via.host == "192.0.2.9"
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_invite_before_serving_is_answered_480() -> None:
    manager = InstanceManager(base_port=0)
    try:
        a, b = manager.create_instances(graph_for_instances(2).configs)
        with pytest.raises(CallFailed) as info:
            await a.ua.invite(manager.resolve_target("200"), timeout=5)
        assert info.value.status == 480
    finally:
        await manager.cleanup()


@pytest_twisted.ensureDeferred
async def test_calls_outside_loopback_are_refused_without_sending(
        manager: InstanceManager) -> None:
    a = manager.get_instance("instance-100")
    with pytest.raises(CallFailed) as info:
        await a.ua.invite("sip:someone@example.com", timeout=5)
    assert info.value.status == 503 and "127.0.0.0/8" in info.value.reason
    with pytest.raises(CallFailed):
        await a.ua.invite("sip:someone@192.0.2.1:5060", timeout=5)
