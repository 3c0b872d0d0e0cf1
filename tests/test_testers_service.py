"""``twistd sipinstances`` tester options: --answer, --media, --no-media, --record, --pcap,
--stats, --version; every mistake a usage error before anything starts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.logger import globalLogPublisher
from twisted.python import usage

from twsip import InstanceManager, SipInstanceConfig
from twsip.sip.dialog import CallFailed
from twsip.service import Options, makeService

dpkt = pytest.importorskip("dpkt")


def parsed(*args: str) -> Options:
    options = Options()
    options.parseOptions(["--no-demo", "--base-port", "0", *args])
    return options


def service_for(*args: str):
    options = parsed(*args)
    service = makeService(options)
    service.stop_reactor_on_failure = service.exit_status_on_failure = False
    service.freeze_gc = False
    return service


async def sleep(seconds: float) -> None:
    d: defer.Deferred = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    await d


async def a_caller() -> tuple[InstanceManager, Any]:
    caller = InstanceManager(base_port=0)
    caller.create_instances([SipInstanceConfig(id="caller", label="caller", dn="900")])
    caller.start_serving()
    return caller, caller.get_instance("caller").ua


# -- bad input: usage errors naming what is wrong ----------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--answer", "200=sometimes"], "--answer 200=sometimes: unknown answer mode 'sometimes'"),
    (["--answer", "200"], "--answer 200: write DN=MODE"),
    (["--answer", "700=busy"], "--answer 700=...: no instance has DN 700 (DNs: 100, 200)"),
    (["--answer", "200=reject:99"], "reject needs a status from 400 to 699"),
    (["--media", "music"], "unknown media 'music'; one of: silence, echo, tone"),
    (["--pcap", "/nonexistent/dir/x.pcap"], "--pcap /nonexistent/dir/x.pcap: cannot be "
                                             "written (no folder /nonexistent/dir)"),
    (["--record", "/nonexistent/rec"], "--record /nonexistent/rec: not a folder"),
    (["--no-media", "--media", "tone"], "--no-media leaves calls without RTP"),
    (["--stats", "0"], "an interval from 0.1 to 86400 seconds"),
    (["--stats", "often"], "not a number of seconds"),
])
def test_bad_tester_options_are_usage_errors(args: list[str], message: str) -> None:
    with pytest.raises(usage.UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parsed(*args)


def test_a_pcap_path_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(usage.UsageError, match="is a folder"):
        parsed("--pcap", str(tmp_path))


def test_version_names_twsip_and_twisted(capsys) -> None:
    import twsip
    from twisted import copyright
    with pytest.raises(SystemExit) as exited:
        Options().parseOptions(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == (f"twsip {twsip.__version__} "
                                               f"(Twisted {copyright.version})")


def test_modes_and_media_reach_the_settings() -> None:
    settings = makeService(parsed("--answer", "200=delay:300", "--media", "tone")).testers
    assert str(settings.answers["200"]) == "delay:300"
    assert settings.answers["200"].media == "tone:440"
    assert settings.default is not None and settings.default.media == "tone:440"
    assert makeService(parsed("--no-media")).testers.media is False


# -- the options at work --------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_answer_modes_per_dn_from_the_command_line() -> None:
    service = service_for("--answer", "200=busy", "--answer", "100=reject:503")
    caller, ua = await a_caller()
    try:
        service.startService()
        manager = await service.when_serving()
        for dn, status in (("200", 486), ("100", 503)):
            with pytest.raises(CallFailed) as failed:
                await ua.invite(manager.resolve_target(dn), timeout=5)
            assert failed.value.status == status
    finally:
        await caller.cleanup()
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_media_tone_is_heard_and_no_media_sends_none(tmp_path: Path) -> None:
    service = service_for("--media", "tone", "--record", str(tmp_path))
    caller, ua = await a_caller()
    try:
        service.startService()
        manager = await service.when_serving()
        session = await ua.invite(manager.resolve_target("200"), timeout=5)
        await sleep(0.3)
        counters = session.media.endpoint.counters
        assert counters.received_datagrams >= 5, vars(counters)
        await session.hangup()
    finally:
        await caller.cleanup()
        await service.stopService()
    assert [p for p in os.listdir(tmp_path) if p.endswith(".wav")], "--record wrote a WAV"

    service = service_for("--no-media")
    caller, ua = await a_caller()
    try:
        service.startService()
        manager = await service.when_serving()
        assert manager.media is False
        session = await ua.invite(manager.resolve_target("200"), timeout=5)
        await session.hangup()
    finally:
        await caller.cleanup()
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_stats_lines_per_interval_and_totals_at_stop() -> None:
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "twsip.stats":
            lines.append(event["line"])

    globalLogPublisher.addObserver(observe)
    service = service_for("--stats", "0.2", "--quiet", "--answer", "100=busy")
    caller, ua = await a_caller()
    try:
        service.startService()
        manager = await service.when_serving()
        session = await ua.invite(manager.resolve_target("200"), timeout=5)
        with pytest.raises(CallFailed):
            await ua.invite(manager.resolve_target("100"), timeout=5)
        await sleep(0.25)
        await session.hangup()
        await sleep(0.25)
    finally:
        await caller.cleanup()
        await service.stopService()
        globalLogPublisher.removeObserver(observe)
    interval = [line for line in lines if line.startswith("stats (last 0.2 s)")]
    assert interval, lines
    assert "active 1" in " ".join(interval), interval
    total = [line for line in lines if line.startswith("stats total")]
    assert len(total) == 1, lines
    assert ("calls in 2 out 0, answered 1, failed 4xx 1, active 0, retransmissions sent 0 "
            "received 0") in total[0], total


@pytest_twisted.ensureDeferred
async def test_pcap_holds_every_sip_message_and_the_rtp_once(tmp_path: Path) -> None:
    path = tmp_path / "serve.pcap"
    service = service_for("--pcap", str(path), "--media", "tone")
    caller, ua = await a_caller()
    try:
        service.startService()
        manager = await service.when_serving()
        callee_port = manager.by_dn("200").port
        session = await ua.invite(manager.resolve_target("200"), timeout=5)
        await sleep(0.2)
        await session.hangup()
    finally:
        await caller.cleanup()
        await service.stopService()
    sip, rtp = read_pcap(path)
    # the caller is not one of the service's instances: its messages are captured on arrival
    summary = [(first_line(p), sport == callee_port) for _, sport, _, p in sip]
    assert summary[:5] == [("INVITE", False), ("SIP/2.0 100 Trying", True),
                           ("SIP/2.0 180 Ringing", True), ("SIP/2.0 200 OK", True),
                           ("ACK", False)], summary
    assert ("BYE", False) in summary
    assert len(rtp) >= 5
    assert all(p[0] == 0x80 and p[1] & 0x7F == 0 for _, _, _, p in rtp), "RTP v2, PCMU"


def first_line(payload: bytes) -> str:
    line = payload.split(b"\r\n", 1)[0].decode()
    return line.split(" ", 1)[0] if not line.startswith("SIP/2.0") else line


def read_pcap(path: Path) -> tuple[list, list]:
    """(time, source port, destination port, payload) of each UDP packet, read by dpkt:
    SIP first, then the rest (RTP)."""
    sip, rtp = [], []
    with open(path, "rb") as f:
        reader = dpkt.pcap.Reader(f)
        assert reader.datalink() == dpkt.pcap.DLT_EN10MB
        for ts, buf in reader:
            ip = dpkt.ethernet.Ethernet(buf).data
            assert isinstance(ip, dpkt.ip.IP)
            assert dpkt.utils.inet_to_str(ip.src).startswith("127.")
            assert dpkt.in_cksum(buf[14:34]) == 0, "a valid IPv4 header checksum"
            udp = ip.data
            assert isinstance(udp, dpkt.udp.UDP) and udp.ulen == len(udp)
            row = (ts, udp.sport, udp.dport, bytes(udp.data))
            (sip if udp.data[:1].isalpha() else rtp).append(row)
    return sip, rtp


@pytest_twisted.ensureDeferred
async def test_a_mode_outlives_the_start_up_demo() -> None:
    """The demo (100 calls 200) shares the instances; afterwards 100 is still busy."""
    options = Options()
    options.parseOptions(["--base-port", "0", "--answer", "100=busy"])
    service = makeService(options)
    service.stop_reactor_on_failure = service.exit_status_on_failure = False
    service.freeze_gc = False
    caller, ua = await a_caller()
    try:
        service.startService()
        manager = await service.when_serving()
        result = await service.flow_done
        assert result is not None and result.ok
        with pytest.raises(CallFailed) as failed:
            await ua.invite(manager.resolve_target("100"), timeout=5)
        assert failed.value.status == 486
    finally:
        await caller.cleanup()
        await service.stopService()
