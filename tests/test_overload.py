"""Overload control (twsip.sip.overload): while datagrams wait in an instance's queue longer
than the limit, a new INVITE gets 503 + Retry-After at once, and everything else (OPTIONS,
in-dialog requests, retransmissions) is still served.

On a FakeNetwork, lag is simulated by moving the Clock while datagrams wait (the instance's
echo among them); over real UDP by blocking the reactor while they wait in the kernel.
"""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from twsip.config import SipInstanceConfig
from twsip.manager import InstanceManager
from twsip.sip.dialog import CallFailed
from twsip.sip.instance import SipInstance
from twsip.sip import overload
from twsip.sip.overload import ECHO_PREFIX, OverloadControl, OverloadSettings
from twsip.sip.transaction import server_key
from twsip.testing import FakeNetwork

from raw_phone import RawPhone, finish


def probes(net: FakeNetwork) -> list:
    return [c for c in net.clock.getDelayedCalls()
            if getattr(c.func, "__self__", None).__class__ is OverloadControl]


def lagging_uas(net: FakeNetwork, **kwargs: object) -> tuple[SipInstance, RawPhone]:
    uas = net.add_instance("200", **kwargs)
    uas.start_serving(auto_answer=True)
    return uas, RawPhone(net, uas)


def first_call(net: FakeNetwork, phone: RawPhone) -> tuple:
    invite = phone.request("INVITE")
    phone.send(invite)
    net.pump()
    answers = phone.received()
    assert [r.status for r in answers] == [100, 180, 200]
    phone.send(phone.follow_up("ACK", invite, answers[-1], cseq=1))
    net.pump()
    return invite


def lag(net: FakeNetwork, phone: RawPhone, seconds: float, *datagrams: bytes) -> None:
    """`datagrams` queue and `seconds` pass before anything is delivered (a busy
    reactor): the probe's timer runs that late."""
    net.clock.advance(0.06)  # the probe runs on time
    for data in datagrams:
        phone.send(data)
    net.clock.advance(seconds)  # nothing is read meanwhile
    net.pump()


def test_new_invites_get_503_while_datagrams_wait() -> None:
    net = FakeNetwork()
    uas, phone = lagging_uas(net)
    first_call(net, phone)
    assert len(probes(net)) == 1  # one DelayedCall per instance, at most
    invite = phone.request("INVITE")
    options = phone.request("OPTIONS")
    lag(net, phone, 0.3, invite.to_bytes(), options.to_bytes())
    answers = phone.received()
    refused = [r for r in answers if r.status == 503]
    assert [r.status for r in answers] == [503, 200]  # no 100, no dialog; OPTIONS served
    assert refused[0].get("retry-after") == "2"
    assert refused[0].body == b"" and refused[0].to.tag
    assert uas.overload.shed == 1 and uas.noise.counts["overload-503"] == 1
    assert uas.calls and len(uas.calls) == 1  # only the first call
    # Refused statelessly (RFC 3261 8.2.7, twsip.sip.shedding): no transaction is kept,
    # so a retransmission is refused again, and the ACK of the 503 is dropped unparsed.
    assert not uas.transactions.has_server(server_key(invite))
    assert refused[0].top_via.params["rport"] == str(phone.addr[1])  # as stateful answers
    assert refused[0].to.tag.startswith(uas.shedder.marker.decode())
    phone.send(invite)
    net.pump()
    assert [r.status for r in phone.received()] == [503]
    assert uas.overload.shed == 2
    phone.send(phone.follow_up("ACK", invite, refused[0], cseq=1, same_branch=True))
    net.pump()
    assert uas.shedder.acks_dropped == 1 and not phone.received()
    assert set(uas.noise.counts) == {"overload-503"}  # nothing stray, nothing malformed
    # Once the queue is read promptly again, new calls are taken.
    net.advance(0.2)
    assert uas.overload.current_delay() < 0.1
    first_call(net, phone)
    finish(net)


def test_a_collector_pause_is_no_overload(monkeypatch: pytest.MonkeyPatch) -> None:
    """The garbage collector held the process for most of the lag: the queue it left is
    no backlog, so the new call is taken (the same lag without the pause sheds it)."""
    net = FakeNetwork()
    uas, phone = lagging_uas(net)
    first_call(net, phone)
    net.clock.advance(0.06)  # the probe runs on time, and is set again
    phone.send(phone.request("INVITE"))
    monkeypatch.setattr(overload.collector, "total", overload.collector.total + 0.25)
    net.clock.advance(0.3)
    net.pump()
    assert [r.status for r in phone.received()] == [100, 180, 200]
    assert uas.overload.shed == 0 and uas.overload.current_delay() < 0.1
    finish(net)


def test_in_dialog_requests_are_served_while_shedding() -> None:
    net = FakeNetwork()
    uas, phone = lagging_uas(net)
    invite, ok = phone.answered_invite()
    ack = phone.follow_up("ACK", invite, ok, cseq=1)
    bye = phone.follow_up("BYE", invite, ok, cseq=2)
    lag(net, phone, 0.3, ack.to_bytes(), phone.request("INVITE").to_bytes(), bye.to_bytes())
    assert [r.status for r in phone.received()] == [503, 200]  # new call shed; BYE served
    assert not uas.calls
    finish(net)


def test_below_the_limit_nothing_is_shed() -> None:
    net = FakeNetwork()
    uas, phone = lagging_uas(net)
    first_call(net, phone)
    lag(net, phone, 0.15, phone.request("INVITE").to_bytes())
    assert 503 not in [r.status for r in phone.received()]
    assert uas.overload.shed == 0
    finish(net)


def test_the_limit_is_configurable_and_control_can_be_off() -> None:
    net = FakeNetwork()
    uas, phone = lagging_uas(net, overload=OverloadSettings(max_delay=1.0))
    first_call(net, phone)
    lag(net, phone, 0.3, phone.request("INVITE").to_bytes())
    assert 503 not in [r.status for r in phone.received()]
    finish(net)

    net = FakeNetwork()
    uas, phone = lagging_uas(net, overload=OverloadSettings(enabled=False))
    first_call(net, phone)
    assert probes(net) == []  # off: no probe, no echo
    lag(net, phone, 5.0, phone.request("INVITE").to_bytes())
    assert 503 not in [r.status for r in phone.received()]
    finish(net)


def test_probe_stops_when_calls_stop_and_at_cleanup() -> None:
    net = FakeNetwork()
    uas, phone = lagging_uas(net)
    first_call(net, phone)
    assert len(probes(net)) == 1
    net.advance(0.2)  # the echo came back and no INVITE came: the probe stops
    assert probes(net) == []
    first_call(net, phone)
    assert len(probes(net)) == 1
    d = uas.cleanup()
    assert probes(net) == []  # cancelled at once
    net.run(d)
    net.settle()
    assert net.clock.getDelayedCalls() == []


def test_a_datagram_looking_like_an_echo_from_elsewhere_is_garbage() -> None:
    net = FakeNetwork()
    uas, phone = lagging_uas(net)
    phone.send(ECHO_PREFIX + b"123 1.0")
    net.pump()
    assert uas.noise.counts.get("malformed") == 1
    assert uas.overload.delay == 0.0
    finish(net)


@pytest_twisted.ensureDeferred
async def test_over_real_udp_a_blocked_reactor_sheds_then_recovers() -> None:
    manager = InstanceManager(base_port=0, media=False)
    caller, callee = manager.create_instances(
        [SipInstanceConfig("a", "a", "100"), SipInstanceConfig("b", "b", "200")])
    manager.start_serving(auto_answer=True)
    try:
        session = await caller.ua.invite(callee.ua.uri)
        await session.hangup()
        assert callee.ua.overload.delay < 0.1
        # The echo and a new INVITE wait in the kernel while the reactor is blocked.
        callee.ua.overload.send_echo()
        refused = caller.ua.invite(callee.ua.uri)
        time.sleep(0.3)
        with pytest.raises(CallFailed) as info:
            await refused
        assert info.value.status == 503
        assert 0.3 <= callee.ua.overload.delay < 2.0
        assert (await caller.ua.options(callee.ua.uri)).status == 200
        # Refused from its bytes (twsip.sip.shedding); the caller's ACK of the 503 came
        # before the OPTIONS and was dropped unparsed.
        assert callee.ua.shedder.count == 1 and callee.ua.shedder.acks_dropped == 1
        await task.deferLater(reactor, 0.15, lambda: None)  # echoes come back promptly
        session = await caller.ua.invite(callee.ua.uri)
        await session.hangup()
        assert callee.ua.overload.shed == 1
    finally:
        await manager.cleanup()


@pytest_twisted.ensureDeferred
async def test_over_real_udp_a_lost_echo_counts_with_its_age_and_is_replaced() -> None:
    manager = InstanceManager(base_port=0, media=False)
    (callee,) = manager.create_instances([SipInstanceConfig("b", "b", "200")])
    manager.start_serving(auto_answer=True)
    control = callee.ua.overload
    try:
        lost = control._sent_at = callee.ua.clock.seconds() - 1.5  # the kernel dropped it
        control._gc_at_send = overload.collector.total
        assert control.current_delay() >= 1.5
        control._arm()
        await task.deferLater(reactor, 0.2, lambda: None)  # the probe gives it up and
        assert control._sent_at != lost                    # sends another, which comes back
        assert control.current_delay() < 0.1
    finally:
        await manager.cleanup()


def test_twistd_options_switch_it_off_and_set_the_limit() -> None:
    from twsip.service import Options, makeService

    def service_for(*args: str):  # type: ignore[no-untyped-def]
        options = Options()
        options.parseOptions(["--base-port", "0", "--quiet", *args])
        return makeService(options)

    assert service_for().overload == OverloadSettings()
    assert service_for("--no-overload-control").overload.enabled is False
    assert service_for("--overload-delay", "250").overload.max_delay == 0.25
    with pytest.raises(Exception):
        service_for("--overload-delay", "0")
