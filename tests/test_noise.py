"""Logs a person can read: what peers throw at an instance is summarised, not echoed.

Garbage datagrams, responses and ACKs that match nothing, and calls refused with the queue
full come at whatever rate a peer likes; each kind is logged at most once every 10 s, with
a count. Text from the wire is escaped. Twisted's own line per port is gone.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent

from raw_phone import finish
from twsip.config import SipInstanceConfig
from twsip.manager import InstanceManager
from twsip.sip.noise import NoiseSummary, printable
from twsip.testing import FakeNetwork


def lines(seen: list[dict[str, Any]], namespace: str = "twsip") -> list[str]:
    return [formatEvent(e) for e in seen if str(e.get("log_namespace", "")).startswith(namespace)]


# -- the summariser on a Clock --------------------------------------------------------------

def test_first_one_at_once_then_one_count_per_interval(log_events) -> None:
    clock = Clock()
    noise = NoiseSummary(clock, Logger(namespace="twsip.test"), "DN 1")
    for n in range(1000):
        noise.note("junk", "junk datagrams", "got junk number {n}", n=n)
    assert lines(log_events) == ["DN 1: got junk number 0"]
    clock.advance(9.9)
    noise.note("junk", "junk datagrams", "got junk number {n}", n=-1)
    assert len(lines(log_events)) == 1
    clock.advance(0.1)
    assert lines(log_events)[1:] == ["DN 1: 1000 more junk datagrams in the last 10 s"]
    noise.note("junk", "junk datagrams", "got junk {n}", n=1)
    clock.advance(10)
    assert lines(log_events)[2:] == ["DN 1: 1 more junk datagrams in the last 10 s"]
    clock.advance(10)  # a quiet interval: no line, and the kind starts afresh
    assert len(lines(log_events)) == 3 and clock.getDelayedCalls() == []
    noise.note("junk", "junk datagrams", "got junk number {n}", n=7)
    assert lines(log_events)[3:] == ["DN 1: got junk number 7"]
    assert noise.counts == {"junk": 1003}
    assert all(e["log_level"] is LogLevel.warn for e in log_events)


def test_kinds_are_limited_separately_and_close_leaves_no_timer(log_events) -> None:
    clock = Clock()
    noise = NoiseSummary(clock, Logger(namespace="twsip.test"), "DN 1")
    for _ in range(5):
        noise.note("a", "a things", "an a")
        noise.note("b", "b things", "a b")
    assert lines(log_events) == ["DN 1: an a", "DN 1: a b"]
    noise.close()
    assert clock.getDelayedCalls() == []
    assert lines(log_events)[2:] == ["DN 1: 4 more a things in the last 10 s",
                                 "DN 1: 4 more b things in the last 10 s"]
    noise.note("a", "a things", "after close")  # counted, not logged, no timer
    assert len(lines(log_events)) == 4 and clock.getDelayedCalls() == []


@pytest.mark.parametrize("text, shown", [
    ("plain", "plain"),
    ("a\r\nInjected: yes", "a\\x0d\\x0aInjected: yes"),
    ("esc\x1b[31mred", "esc\\x1b[31mred"),
    (b"caf\xff\xfe".decode("utf-8", "surrogateescape"), "caf\\xff\\xfe"),
    ("tab\there", "tab\\x09here"),
    ("nul\x00", "nul\\x00"),
    ("\u2028line", "\\u2028line"),
    ("é ok", "é ok"),
])
def test_printable(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_printable_is_bounded() -> None:
    assert len(printable("x" * 100_000)) <= 203


# -- an instance under a flood -----------------------------------------------------------------

def test_twenty_thousand_garbage_datagrams_write_a_handful_of_lines(log_events) -> None:
    net = FakeNetwork(keep_log=False)
    uas = net.add_instance("200")  # not logging messages: what --quiet runs
    uas.start_serving()
    peer = net.endpoint()
    rng = random.Random(7)
    garbage = [b"", b"\r\n", b"INVITE", b"SIP/2.0 200 OK\r\n\r\n", b"\x00\xff" * 40,
               b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKx\r\n"
               b"CSeq: one OPTIONS\r\n\r\n"]
    for n in range(20_000):
        peer.send(rng.choice(garbage) + bytes([n % 256]), uas.address)
        if n % 1000 == 0:
            net.advance(1)
    net.advance(1)
    # 20 simulated seconds: a first line and at most one count per 10 s per kind.
    written = lines(log_events)
    assert 1 <= len(written) <= 6, written
    assert any("more malformed datagrams" in line for line in written)
    assert sum(uas.noise.counts.values()) >= 19_000
    finish(net)
    assert net.clock.getDelayedCalls() == []


def test_stray_responses_acks_and_overload_are_summarised(log_events) -> None:
    net = FakeNetwork(keep_log=False)
    caller, callee = net.add_instance("100"), net.add_instance("200", queue_size=4)
    callee.start_serving()  # nobody takes the calls: the queue fills
    peer = net.endpoint()
    host, port = peer.address
    for n in range(500):
        peer.send(f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {host}:{port};branch=z9hG4bKs{n}\r\n"
                  f"From: <sip:a@{host}>;tag=1\r\nTo: <sip:b@{host}>;tag=2\r\n"
                  f"Call-ID: stray\x1b{n}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
                  .encode(), callee.address)
        peer.send(f"ACK {callee.uri} SIP/2.0\r\nVia: SIP/2.0/UDP {host}:{port};"
                  f"branch=z9hG4bKa{n}\r\nFrom: <sip:a@{host}>;tag=1\r\nTo: <sip:b@{host}>;"
                  f"tag=2\r\nCall-ID: gone{n}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\n"
                  f"Content-Length: 0\r\n\r\n".encode(), callee.address)
    for _ in range(200):
        caller.invite(callee.uri, timeout=None).addErrback(lambda _: None)
    net.advance(0.1)
    written = lines(log_events)
    assert len(written) == 3, written
    assert any("matching no transaction" in line and "stray\\x1b0" in line
               for line in written), written
    assert any("ACK matching no dialog" in line for line in written)
    assert any("queue full" in line for line in written)
    net.advance(10)
    written = lines(log_events)
    assert any("499 more responses matching no transaction" in line for line in written)
    assert any("195 more calls refused 486" in line for line in written), written
    net.run(net.cleanup())
    net.settle()
    assert net.clock.getDelayedCalls() == []


# -- Twisted's own per-port line -----------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_binding_ports_logs_only_the_managers_line(log_events) -> None:
    manager = InstanceManager(base_port=0)
    try:
        manager.create_instances([SipInstanceConfig(id=f"i{n}", label=f"i{n}", dn=f"{n}00")
                                  for n in range(1, 4)])
        text = [formatEvent(e) for e in log_events]
        assert not [line for line in text if "starting on" in line or "Starting protocol"
                    in line], text
        assert sum("listening on 127.0.0.1:" in line for line in text) == 3
        ua = manager.get_instance("i1").ua
        response = await ua.options(manager.resolve_target("200"))  # the port works
        assert response.status == 200
    finally:
        await manager.cleanup()
