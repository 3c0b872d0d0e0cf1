"""SipInstancesService: start creates and serves, calls are answered, stop frees everything."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import protocol, reactor
from twisted.python import usage
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ReactorNotRunning
from twisted.logger import LogLevel

from twsip import InstanceCreationError, InstanceManager, SipInstanceConfig
from twsip.flow.model import graph_for_instances
from twsip.service import Options, SipInstancesService, _stop_reactor, makeService


def of(events: list[dict[str, Any]], namespace: str, level: LogLevel | None = None
       ) -> list[dict[str, Any]]:
    return [e for e in events if e.get("log_namespace") == namespace
            and (level is None or e.get("log_level") == level)]


async def a_caller() -> tuple[InstanceManager, Any]:
    """A separate manager with one phone (DN 900) on a system-chosen port."""
    caller = InstanceManager(base_port=0)
    caller.create_instances([SipInstanceConfig(id="caller", label="caller", dn="900")])
    return caller, caller.get_instance("caller").ua


def assert_port_free(port: int) -> None:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind(("127.0.0.1", port))  # OSError if still bound
    finally:
        probe.close()


def in_order(seen: list[str], expected: list[str]) -> bool:
    """`expected` is a subsequence of `seen` (retransmissions may add lines)."""
    it = iter(seen)
    return all(any(s == e for s in it) for e in expected)


def _parsed(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


# -- start, serve, call, stop --------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_service_answers_options_and_a_whole_call() -> None:
    service = SipInstancesService(graph_for_instances(2), base_port=0)
    caller, ua = await a_caller()
    try:
        service.startService()
        assert service.running
        manager = await service.when_serving()
        assert manager is service.manager
        assert [m.config.dn for m in manager.instances.values()] == ["100", "200"]
        ports = [m.port for m in manager.instances.values()]
        assert all(ports) and len(set(ports)) == 2

        for dn in ("100", "200"):
            response = await ua.options(manager.resolve_target(dn))
            assert response.status == 200
            assert "INVITE" in response.get("allow")

        callee = manager.by_dn("200").ua
        ladder: list[str] = []
        callee.observers.append(lambda e: ladder.append(f"{e.direction} {e.summary}"))
        session = ua.dial(manager.resolve_target("200"), timeout=10)
        ringing = await session.when_ringing()
        assert ringing.status == 180
        answered = await session.when_answered()
        assert answered is session and session.established
        assert b"m=audio" in session.remote_sdp
        assert callee.calls, "the callee holds the dialog while it lasts"
        ended_by_caller = session.when_ended()
        await session.hangup()
        await ended_by_caller
        assert not callee.calls, "the auto-answered dialog ended with the caller's BYE"
        assert in_order(ladder, ["in INVITE", "out 100 Trying", "out 180 Ringing",
                                 "out 200 OK", "in ACK", "in BYE", "out 200 OK"]), ladder
    finally:
        await caller.cleanup()
        await service.stopService()
    assert not service.running
    assert service.manager.instances == {}
    for port in ports:
        assert_port_free(port)


@pytest_twisted.ensureDeferred
async def test_service_logs_each_instance_and_every_message(log_events) -> None:
    service = SipInstancesService(graph_for_instances(2), base_port=0, trace_messages=True)
    caller, ua = await a_caller()
    try:
        service.startService()
        manager = await service.when_serving()
        started = [e for e in of(log_events, "twsip.service", LogLevel.info) if "dn" in e]
        assert [(e["dn"], e["host"], e["port"]) for e in started] == [
            (m.config.dn, "127.0.0.1", m.port) for m in manager.instances.values()]
        await ua.options(manager.resolve_target("100"))
        lines = of(log_events, "twsip.instance", LogLevel.info)
        assert [(e["direction"], e["dn"], e["summary"]) for e in lines] == [
            ("<-", "100", "OPTIONS"), ("->", "100", "200 OK")]
        assert of(log_events, "twsip.instance", LogLevel.debug), "full text at debug (--trace)"
    finally:
        await caller.cleanup()
        await service.stopService()
    assert any("stopped" in e["log_format"] for e in of(log_events, "twsip.service"))


@pytest_twisted.ensureDeferred
async def test_quiet_service_logs_start_and_stop_only(log_events) -> None:
    service = makeService(_parsed("--base-port", "0", "--quiet"))
    service.stop_reactor_on_failure = False
    caller, ua = await a_caller()
    try:
        service.startService()
        manager = await service.when_serving()
        session = await ua.invite(manager.resolve_target("100"), timeout=10)
        await session.hangup()
    finally:
        await caller.cleanup()
        await service.stopService()
    assert of(log_events, "twsip.instance") == []
    formats = [e["log_format"] for e in of(log_events, "twsip.service")]
    assert sum("answers at" in f for f in formats) == 2
    assert any(f.startswith("stopped") for f in formats)


@pytest_twisted.ensureDeferred
async def test_service_from_a_scenario_file(tmp_path: Path) -> None:
    flow = tmp_path / "flow.json"
    flow.write_text(json.dumps({"edges": [], "nodes": [
        {"id": "a", "type": "sipInstance",
         "data": {"label": "alice", "dn": "301", "register": False, "codecs": ["PCMA"]}},
        {"id": "b", "type": "sipInstance",
         "data": {"label": "bob", "dn": "302", "register": False}}]}))
    service = makeService(_parsed("--scenario", str(flow), "--base-port", "0"))
    service.stop_reactor_on_failure = False
    caller, ua = await a_caller()
    try:
        service.startService()
        manager = await service.when_serving()
        assert sorted(manager.instances) == ["a", "b"]
        assert manager.get_instance("a").ua.codecs == ("PCMA",)
        session = await ua.invite(manager.resolve_target("301"), timeout=10)
        assert b"PCMA" in session.remote_sdp
        await session.hangup()
    finally:
        await caller.cleanup()
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_when_serving_waits_for_the_start_and_restart_works() -> None:
    service = SipInstancesService(graph_for_instances(1), base_port=0)
    early = service.when_serving()
    assert not early.called
    service.startService()
    try:
        manager = await early
        assert list(manager.instances) == ["instance-100"]
    finally:
        await service.stopService()
    later = service.when_serving()
    assert not later.called  # stopped: waits for the next start
    service.startService()
    try:
        again = await later
        assert again is not manager and manager.instances == {}
        assert list(again.instances) == ["instance-100"]
        response = await again.get_instance("instance-100").ua.options(
            again.resolve_target("100"))
        assert response.status == 200
    finally:
        await service.stopService()
    pending = service.when_serving()
    pending.cancel()
    with pytest.raises(CancelledError):
        await pending


# -- failure to start ------------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_a_taken_port_is_one_error_line_and_no_port_stays(log_events) -> None:
    held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    held.bind(("127.0.0.1", 0))
    port = held.getsockname()[1]
    service = SipInstancesService(graph_for_instances(2), base_port=port, max_retries=0)
    try:
        service.startService()  # must not raise
        with pytest.raises(InstanceCreationError, match=str(port)):
            await service.when_serving()
        assert service.manager.instances == {}
        errors = of(log_events, "twsip.service", LogLevel.error)
        assert len(errors) == 1 and str(port) in errors[0]["error"]
        assert "log_failure" not in errors[0], "a plain message, no traceback"
    finally:
        held.close()
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_a_failed_start_stops_the_reactor_when_asked() -> None:
    stops: list[Any] = []

    class ReactorSpy:
        def callWhenRunning(self, fn, *args):  # noqa: N802
            stops.append((fn, args))

    spy = ReactorSpy()
    service = SipInstancesService(graph_for_instances(1), host="10.0.0.1",
                                  stop_reactor_on_failure=True, reactor=spy)
    service.startService()
    with pytest.raises(ValueError, match="local mode"):
        await service.when_serving()
    assert stops == [(_stop_reactor, (spy,))]

    class Stopped:
        def stop(self) -> None:
            raise ReactorNotRunning()

    _stop_reactor(Stopped())  # a reactor already stopping is fine
    await service.stopService()


# -- an external peer -------------------------------------------------------------------------

class Sipp(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[Any] = Deferred()

    def outReceived(self, data: bytes) -> None:  # noqa: N802
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason) -> None:  # noqa: N802
        self.ended.callback(reason.value)


@pytest.mark.skipif(shutil.which("sipp") is None,
                    reason="sipp is not installed (Debian package sip-tester; .ci/run installs it)")
@pytest_twisted.ensureDeferred
async def test_sipp_uac_calls_complete_against_the_service(tmp_path: Path) -> None:
    service = SipInstancesService(graph_for_instances(1), base_port=0, log_messages=False)
    service.startService()
    sipp = Sipp()
    try:
        manager = await service.when_serving()
        port = manager.by_dn("100").port
        sipp_path = shutil.which("sipp")
        reactor.spawnProcess(sipp, sipp_path, [
            sipp_path, "-sn", "uac", f"127.0.0.1:{port}", "-i", "127.0.0.1", "-s", "100",
            "-m", "5", "-r", "10", "-d", "100", "-nostdin", "-timeout", "30s",
            "-timeout_error", "-trace_stat", "-stf", str(tmp_path / "stat.csv")],
            path=str(tmp_path), env={"PATH": "/usr/bin:/bin", "TERM": "dumb"})
        result = await sipp.ended
    finally:
        await service.stopService()
    output = sipp.output.decode("utf-8", "replace")
    assert result.exitCode == 0, f"sipp failed ({result}):\n{output[-3000:]}"
    stats = (tmp_path / "stat.csv").read_text().splitlines()
    header, last = stats[0].split(";"), stats[-1].split(";")
    row = dict(zip(header, last))
    assert row["SuccessfulCall(C)"] == "5" and row["FailedCall(C)"] == "0", row


@pytest_twisted.ensureDeferred
async def test_default_service_runs_the_demo_once_then_keeps_serving(log_events) -> None:
    service = makeService(_parsed("--base-port", "0", "--quiet"))
    service.stop_reactor_on_failure = False
    caller, ua = await a_caller()
    try:
        service.startService()
        manager = await service.when_serving()
        result = await service.flow_done
        assert result is not None and result.ok, result.reason if result else None
        summaries = [m.summary for m in result.messages if m.direction == "out"]
        assert summaries[:1] == ["INVITE"] and "BYE" in summaries
        session = await ua.invite(manager.resolve_target("200"), timeout=10)  # auto-answer back
        await session.hangup()
    finally:
        await caller.cleanup()
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_no_demo_runs_nothing() -> None:
    service = makeService(_parsed("--base-port", "0", "--quiet", "--no-demo"))
    service.stop_reactor_on_failure = False
    try:
        service.startService()
        await service.when_serving()
        assert service.flow_done is None and service.engine is None
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_scenario_option_runs_the_flow_once(tmp_path: Path) -> None:
    flow = Path(__file__).resolve().parents[1] / "examples" / "busy.json"
    service = makeService(_parsed("--scenario", str(flow), "--base-port", "0", "--quiet"))
    service.stop_reactor_on_failure = False
    try:
        service.startService()
        await service.when_serving()
        result = await service.flow_done
        assert result is not None and result.ok, result.reason if result else None
        assert any(m.summary.startswith("486") for m in result.messages)
    finally:
        await service.stopService()


def test_scenario_with_unsupported_nodes_is_a_usage_error(tmp_path: Path) -> None:
    flow = tmp_path / "flow.json"
    flow.write_text(json.dumps({"nodes": [
        {"id": "a", "type": "sipInstance", "data": {"label": "a", "dn": "1", "register": False}},
        {"id": "p", "type": "command", "data": {"command": "PlayAudio", "sipInstanceId": "a"}},
    ], "edges": [{"source": "a", "target": "p"}]}))
    with pytest.raises(usage.UsageError, match="PlayAudio"):
        _parsed("--scenario", str(flow))
