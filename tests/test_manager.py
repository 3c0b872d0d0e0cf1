"""Port allocation by bind-and-keep in +2 steps, all-or-nothing creation, cleanup, lookups."""

from __future__ import annotations

import socket

import pytest
import pytest_twisted
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.internet import reactor, task

from twsip.manager import (
    InstanceCreationError,
    InstanceManager,
    PortAllocationError,
    UnknownInstance,
)
from twsip.config import SipInstanceConfig
from twsip.sip.dialog import CallFailed
from twsip.flow.model import graph_for_instances


def free_base(span: int = 8) -> int:
    """An even port with the next `span` ports free at the moment of asking."""
    for _ in range(50):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1] & ~1
        probe.close()
        if base + span > 65535:
            continue
        held = []
        try:
            for port in range(base, base + span):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    pytest.skip("no run of free UDP ports found on 127.0.0.1")


def hold(port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    return s


def port_is_free(port: int) -> bool:
    try:
        hold(port).close()
        return True
    except OSError:
        return False


def configs(*dns: str) -> list[SipInstanceConfig]:
    return [SipInstanceConfig(id=f"i{dn}", label=dn, dn=dn, register=False) for dn in dns]


async def next_turn() -> None:
    await task.deferLater(reactor, 0, lambda: None)


@pytest_twisted.ensureDeferred
async def test_ports_are_sequential_in_steps_of_two() -> None:
    base = free_base()
    manager = InstanceManager(base_port=base)
    created = manager.create_instances(graph_for_instances(3).configs)
    assert [m.port for m in created] == [base, base + 2, base + 4]
    assert manager.next_port == base + 6
    assert [m.config.dn for m in created] == ["100", "200", "300"]
    await manager.cleanup()
    assert manager.next_port == base and manager.instances == {}


@pytest_twisted.ensureDeferred
async def test_allocation_skips_ports_held_by_another_socket() -> None:
    base = free_base()
    blockers = [hold(base), hold(base + 4)]
    logged: list[dict] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        manager = InstanceManager(base_port=base)
        created = manager.create_instances(configs("100", "200"))
        assert [m.port for m in created] == [base + 2, base + 6]
        await manager.cleanup()
    finally:
        globalLogPublisher.removeObserver(logged.append)
        for s in blockers:
            s.close()
    moved = [formatEvent(e) for e in logged if e.get("log_level") == LogLevel.warn]
    assert moved == [f"DN 100: port {base} is taken, listening on {base + 2} instead",
                     f"DN 200: port {base + 4} is taken, listening on {base + 6} instead"]


@pytest_twisted.ensureDeferred
async def test_exhausted_range_names_every_port_tried() -> None:
    base = free_base()
    blockers = [hold(base + 2 * i) for i in range(3)]
    try:
        manager = InstanceManager(base_port=base, max_retries=2)
        with pytest.raises(InstanceCreationError) as info:
            manager.create_instances(configs("100"))
        cause = info.value.cause
        assert isinstance(cause, PortAllocationError)
        assert cause.ports == [base, base + 2, base + 4]
        for port in cause.ports:
            assert str(port) in str(info.value)
        assert "i100" in str(info.value)
    finally:
        for s in blockers:
            s.close()


@pytest_twisted.ensureDeferred
async def test_create_is_all_or_nothing() -> None:
    base = free_base()
    blocker = hold(base + 4)
    try:
        manager = InstanceManager(base_port=base, max_retries=0)
        with pytest.raises(InstanceCreationError) as info:
            manager.create_instances(configs("100", "200", "300"))
        assert info.value.instance_id == "i300"
        assert manager.instances == {} and manager.next_port == base
        await next_turn()  # a stopped UDP port closes its socket on the next turn
        assert port_is_free(base) and port_is_free(base + 2)
    finally:
        blocker.close()


def test_duplicate_dn_is_refused_before_binding() -> None:
    manager = InstanceManager(base_port=0)
    with pytest.raises(InstanceCreationError, match="DN 100"):
        manager.create_instances(configs("100", "100"))
    assert manager.instances == {}


def test_non_loopback_host_is_refused() -> None:
    with pytest.raises(ValueError, match="local mode"):
        InstanceManager(host="0.0.0.0")


@pytest_twisted.ensureDeferred
async def test_lookups_and_target_resolution() -> None:
    manager = InstanceManager(base_port=0)
    a, b = manager.create_instances(configs("100", "200"))
    assert manager.get_instance("i200") is b
    assert b.incoming is b.ua.incoming
    assert manager.resolve_target("200") == f"sip:200@127.0.0.1:{b.port}"
    assert manager.resolve_target("sip:x@127.0.0.1:9") == "sip:x@127.0.0.1:9"
    with pytest.raises(UnknownInstance, match="nope"):
        manager.get_instance("nope")
    with pytest.raises(UnknownInstance, match="999"):
        manager.resolve_target("999")
    await manager.cleanup()


@pytest_twisted.ensureDeferred
async def test_cleanup_frees_ports_and_timers_even_mid_call() -> None:
    base = free_base()
    manager = InstanceManager(base_port=base)
    a, b = manager.create_instances(configs("100", "200"))
    manager.start_serving()
    call = a.ua.invite(manager.resolve_target("200"), timeout=5)
    incoming = await b.incoming.get()
    incoming.ringing()
    await manager.cleanup()
    assert port_is_free(base) and port_is_free(base + 2)
    assert incoming.ended
    with pytest.raises(CallFailed):
        await call
    twsip_calls = [c for c in reactor.getDelayedCalls()
                   if getattr(c.func, "__module__", "").startswith("twsip")]
    assert twsip_calls == []
    manager.create_instances(configs("100"))  # reset: usable again from base_port
    assert manager.get_instance("i100").port == base
    await manager.reset()
