"""A send that fails fails one thing: its transaction (and the call it carries).

EMSGSIZE, EACCES, Twisted's MessageLengthError, a response too large to be a datagram, or
an exception in the UA core: the call ends with one clear line, a response that was owed
becomes 513 or 500 where one fits, and everything else (the next call, the other calls,
cleanup of every instance) carries on.
"""

from __future__ import annotations

import errno
from typing import Any, Callable

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import MessageLengthError
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import LogLevel

from raw_phone import RawPhone, finish, still_serving
from twsip.config import SipInstanceConfig
from twsip.manager import InstanceManager
from twsip.sip.dialog import CallFailed, ServerSession
from twsip.sip.instance import SipInstance
from twsip.sip.message import parse
from twsip.sip.transaction import TransactionState
from twsip.testing import FakeNetwork, LoggedFailures

HUGE = 65_000  # bytes of Record-Route: the request fits a datagram, our answer cannot


def warnings(seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in seen if e.get("log_level") == LogLevel.warn
            and str(e.get("log_namespace", "")).startswith("twsip")]


def failing_writes(instance: Any, error: Callable[[], Exception],
                   when: Callable[[bytes], bool] = lambda data: True) -> list[bytes]:
    """Make the instance's transport refuse (raise `error()`) the datagrams `when` picks;
    the refused ones are listed."""
    transport = instance.transport
    real = transport.write
    refused: list[bytes] = []

    def write(data: bytes, addr: Any = None) -> None:
        if when(data):
            refused.append(data)
            raise error()
        real(data, addr)

    transport.write = write
    return refused


def big_invite(phone: RawPhone, size: int = HUGE, **kwargs: Any):
    return phone.request("INVITE", extra={"record-route": [f"<sip:{'p' * size}@127.0.0.1;lr>"]},
                         **kwargs)


def statuses(phone: RawPhone) -> list[int]:
    return [r.status for r in phone.received()]


# -- a response that cannot fit -------------------------------------------------------------

def test_auto_answer_survives_an_invite_whose_answer_cannot_fit(net, uas, phone, log_events) -> None:
    uas.start_serving(auto_answer=True)
    with LoggedFailures() as failures:
        phone.send(big_invite(phone))
        net.pump()
        got = statuses(phone)
        assert got[0] == 100 and got[-1] == 513, got
        assert not uas.calls and not uas.dialogs
        # The next caller is answered as ever.
        phone.send(phone.request("INVITE"))
        net.pump()
        assert statuses(phone) == [100, 180, 200]
    assert failures.events == [], failures.summary()
    lines = [e for e in warnings(log_events) if "could not send" in e["log_format"]]
    assert len(lines) == 1 and lines[0]["status"] == 513
    finish(net)


@pytest.mark.parametrize("size", [HUGE, 65_100, 65_200])
def test_an_answer_that_does_not_fit_is_513_whoever_answers(net, uas, phone, size) -> None:
    phone.send(big_invite(phone, size))
    net.pump()
    session: ServerSession = net.result(uas.incoming.get())
    ringing = session.ringing
    ringing()
    answered = session.answer()
    net.pump()
    got = statuses(phone)
    assert got[0] == 100 and got.count(513) == 1 and 200 not in got, got
    with pytest.raises(CallFailed) as failed:
        net.result(answered)
    assert failed.value.status in (481, 513)
    assert session.ended and not uas.calls
    # The 513 is a real final answer: resent until ACKed, then the transaction goes.
    net.advance(1)
    assert set(statuses(phone)) == {513}
    net.advance(40)
    assert len(uas.transactions) == 0
    still_serving(net, phone)
    finish(net)


def test_a_non_invite_answer_that_cannot_fit_is_513(net, uas, phone) -> None:
    # OPTIONS is answered by the core; 1,000 Via values make its answer too big only
    # together with a huge Via each... so use a BYE in a dialog whose 200 copies a big To.
    uas.start_serving(auto_answer=True)
    invite, ok = phone.answered_invite()
    phone.send(phone.follow_up("ACK", invite, ok, cseq=1))
    refused = failing_writes(uas, lambda: OSError(errno.EMSGSIZE, "Message too long"),
                             lambda data: data.startswith(b"SIP/2.0 200"))
    phone.send(phone.follow_up("BYE", invite, ok, cseq=2))
    net.pump()
    assert len(refused) == 1
    assert statuses(phone) == [513]
    assert not uas.calls
    finish(net)


# -- requests that cannot be sent ---------------------------------------------------------

def test_a_bye_that_cannot_be_sent_ends_the_call_and_leaks_nothing(log_events) -> None:
    net = FakeNetwork()
    alice, bob = net.add_instance("100"), net.add_instance("200")
    bob.start_serving(auto_answer=True)
    session = net.run(alice.invite(bob.uri, timeout=10))
    refused = failing_writes(alice, lambda: OSError(errno.EACCES, "Permission denied"))
    response = net.run(session.hangup())
    assert response.status == 503 and "denied" in response.reason
    assert refused and session.ended and not alice.calls and not alice.dialogs
    assert all(key[-1] != "BYE" for key in alice.transactions._client)
    net.advance(40)  # the INVITE's transaction lingers in Accepted (Timer M), then goes
    assert len(alice.transactions) == 0
    assert sum("could not send BYE" in e["log_format"] or e.get("what") == "BYE"
               for e in warnings(log_events)) == 1
    net.run(net.cleanup())
    net.settle()
    assert net.clock.getDelayedCalls() == []


def test_an_invite_that_cannot_be_sent_fails_the_call_503() -> None:
    net = FakeNetwork()
    alice, bob = net.add_instance("100"), net.add_instance("200")
    bob.start_serving(auto_answer=True)
    failing_writes(alice, lambda: MessageLengthError("message too long"),
                   lambda data: data.startswith(b"INVITE"))
    with pytest.raises(CallFailed) as failed:
        net.run(alice.invite(bob.uri, timeout=10))
    assert failed.value.status == 503
    assert not alice.calls and len(alice.transactions) == 0
    alice.transport.write = type(alice.transport).write.__get__(alice.transport)
    session = net.run(alice.invite(bob.uri, timeout=10))  # the instance still calls
    net.run(session.hangup())
    net.run(net.cleanup())
    net.settle()
    assert net.clock.getDelayedCalls() == []


def test_a_retransmission_that_fails_ends_only_its_transaction() -> None:
    net = FakeNetwork()
    alice = net.add_instance("100")
    silent = net.endpoint()  # never answers: Timer A retransmits
    first = [True]

    def second_send(data: bytes) -> bool:
        if first[0]:
            first[0] = False
            return False
        return True

    failing_writes(alice, lambda: OSError(errno.ENOBUFS, "No buffer space"), second_send)
    host, port = silent.address
    with pytest.raises(CallFailed) as failed:
        net.run(alice.invite(f"sip:x@{host}:{port}", timeout=None))
    assert failed.value.status == 503
    assert len(silent.take()) == 1 and len(alice.transactions) == 0
    net.run(net.cleanup())
    net.settle()
    assert net.clock.getDelayedCalls() == []


# -- cleanup never stops half-way ---------------------------------------------------------

def test_cleanup_ends_every_instance_even_when_sends_and_calls_fail(log_events) -> None:
    net = FakeNetwork()
    manager = InstanceManager(base_port=5060, reactor=net)
    created = manager.create_instances(
        [SipInstanceConfig(id=f"i{n}", label=f"i{n}", dn=f"{n}00") for n in range(1, 5)])
    manager.start_serving(auto_answer=True)
    uas = [m.ua for m in created]
    sessions = [net.run(uas[0].invite(u.uri, timeout=10)) for u in uas[1:]]
    healthy = net.run(uas[3].invite(uas[2].uri, timeout=10))
    sessions += [healthy, net.run(uas[1].invite(uas[2].uri, timeout=10))]
    # Instance 1 can send nothing any more, and one of instance 2's calls blows up.
    failing_writes(uas[0], lambda: OSError(errno.EACCES, "Permission denied"))
    broken = sessions[-1]

    def explode() -> Deferred:
        raise RuntimeError("a call that cannot hang up")

    broken.hangup = explode  # type: ignore[method-assign]
    with LoggedFailures() as failures:
        net.run(manager.cleanup())
    assert len(failures.events) == 1  # the exploding call, logged; nothing else
    net.settle()
    assert net.clock.getDelayedCalls() == []
    assert all(not u.calls and len(u.transactions) == 0 for u in uas)
    # Every call that could be hung up was: instance 2's other calls... it has one, the
    # broken one; the callees of instance 1 never got a BYE (it can send nothing) but
    # their own cleanup ended their side.
    assert all(s.ended for s in sessions)
    assert all(not u.dialogs for u in uas)
    # ... and the instance after the failing ones still sent its BYE, answered 200.
    bye = [d for d in net.log if d.data.startswith(b"BYE ") and d.source == uas[3].address
           and d.destination == uas[2].address]
    assert len(bye) == 1 and healthy.end_reason == "local hangup"
    assert any(d.data.startswith(b"SIP/2.0 200") and b"BYE" in d.data
               and d.destination == uas[3].address for d in net.log)
    assert manager.instances == {}


def test_instance_cleanup_completes_when_ending_a_call_raises() -> None:
    net = FakeNetwork()
    alice, bob = net.add_instance("100"), net.add_instance("200")
    bob.start_serving(auto_answer=True)
    calls = [net.run(alice.invite(bob.uri, timeout=10)) for _ in range(3)]
    calls[0].hangup = lambda: (_ for _ in ()).throw(RuntimeError("boom"))  # type: ignore
    with LoggedFailures() as failures:
        net.run(alice.cleanup())
    assert len(failures.events) == 1
    # the two other calls got their BYE, answered 200
    assert sum(1 for d in net.log if d.data.startswith(b"BYE ")) == 2
    assert not alice.calls and len(alice.transactions) == 0
    net.run(bob.cleanup())
    net.settle()
    assert net.clock.getDelayedCalls() == []


# -- an exception in the UA core ------------------------------------------------------------

@pytest.mark.parametrize("serving_mode", ["queue", "auto"])
def test_an_internal_error_on_an_invite_answers_500_and_ends_the_transaction(
        net, uas, phone, monkeypatch, serving_mode) -> None:
    if serving_mode == "auto":
        uas.start_serving(auto_answer=True)
        boom = [True]
        real = ServerSession.ringing

        def ringing(self, status: int = 180) -> None:
            if boom and boom.pop():
                raise RuntimeError("a bug in one call")
            real(self, status)

        monkeypatch.setattr(ServerSession, "ringing", ringing)
    else:
        def put(session: Any) -> None:
            raise RuntimeError("a bug in the UA core")

        monkeypatch.setattr(uas.incoming, "put", put)
    invite = phone.request("INVITE")
    with LoggedFailures() as failures:
        phone.send(invite)
        net.pump()
    assert len(failures.events) == 1
    answers = phone.received()
    assert [r.status for r in answers] == [100, 500]
    assert not uas.calls and not uas.dialogs
    phone.send(phone.follow_up("ACK", invite, answers[-1], cseq=1, same_branch=True))
    net.advance(6)  # Timer I
    assert len(uas.transactions) == 0
    if serving_mode == "auto":  # the next call is auto-answered as ever
        phone.send(phone.request("INVITE"))
        net.pump()
        assert statuses(phone) == [100, 180, 200]
    finish(net)


def test_a_server_transaction_never_stays_proceeding_after_an_error(net, uas, phone,
                                                                    monkeypatch) -> None:
    monkeypatch.setattr("twsip.sip.instance.screen_offer",
                        lambda *a: (_ for _ in ()).throw(KeyError("oops")))
    with LoggedFailures():
        for _ in range(5):
            phone.send(phone.request("INVITE"))
        net.pump()
    assert statuses(phone) == [500] * 5
    assert all(tx.state is not TransactionState.PROCEEDING
               for tx in uas.transactions._server.values())
    net.advance(40)  # Timer H: nobody ACKed
    assert len(uas.transactions) == 0
    finish(net)


# -- over a real socket: EMSGSIZE from the kernel ----------------------------------------------

class _Peer(DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: list[tuple[Callable[[bytes], bool], Deferred[bytes]]] = []

    def datagramReceived(self, data: bytes, addr: Any) -> None:  # noqa: N802
        for item in list(self.waiting):
            if item[0](data):
                self.waiting.remove(item)
                item[1].callback(data)

    def expect(self, match: Callable[[bytes], bool]) -> Deferred[bytes]:
        d: Deferred[bytes] = Deferred()
        self.waiting.append((match, d))
        d.addTimeout(10, reactor)
        return d


@pytest_twisted.ensureDeferred
async def test_over_udp_an_answer_the_kernel_refuses_is_513_and_serving_goes_on() -> None:
    manager = InstanceManager(base_port=0)
    peer = _Peer()
    port = reactor.listenUDP(0, peer, interface="127.0.0.1")
    try:
        managed = manager.create_instances(
            [SipInstanceConfig(id="callee", label="callee", dn="200")])[0]
        manager.start_serving(auto_answer=True)
        callee: SipInstance = managed.ua
        me = port.getHost()
        # 65,300 bytes of Record-Route: the INVITE (no body) is just under the 65,507
        # that UDP over IPv4 carries, and so is the 180, but the 200 with its SDP is not.
        rr = "<sip:" + "p" * 65_100 + "@127.0.0.1;lr>"
        invite = (f"INVITE {callee.uri} SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP 127.0.0.1:{me.port};branch=z9hG4bKbig1;rport\r\n"
                  f"Max-Forwards: 70\r\nFrom: <sip:big@127.0.0.1:{me.port}>;tag=b1\r\n"
                  f"To: <{callee.uri}>\r\nCall-ID: big1@127.0.0.1\r\nCSeq: 1 INVITE\r\n"
                  f"Contact: <sip:big@127.0.0.1:{me.port}>\r\nRecord-Route: {rr}\r\n"
                  f"Content-Length: 0\r\n\r\n").encode()
        assert len(invite) < 65_507
        final = peer.expect(lambda d: d.startswith(b"SIP/2.0 5"))
        port.write(invite, callee.address)
        answer = parse(await final)
        assert answer.status == 513 and answer.call_id == "big1@127.0.0.1"
        assert not callee.calls
        ok = peer.expect(lambda d: d.startswith(b"SIP/2.0 200"))
        port.write(invite.replace(b"Record-Route: " + rr.encode() + b"\r\n", b"")
                   .replace(b"big1", b"small1").replace(b"bKbig1", b"bKsmall1"),
                   callee.address)
        assert parse(await ok).status == 200
    finally:
        await port.stopListening()
        await manager.cleanup()
