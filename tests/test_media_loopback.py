"""Two RTP endpoints on real loopback UDP in the global reactor: a 440 Hz tone arrives whole
and at its pitch; DTMF survives 20% loss (first packets of digits included), each digit once,
in order; close() leaves no port and no timer. Waits on Deferreds, never sleeps."""

from __future__ import annotations

import math
import random
from array import array
from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor, task, udp

from twsip.media.dtmf import DtmfDigit
from twsip.media.endpoint import RtpEndpoint, open_endpoint
from twsip.media.g711 import PCMU
from twsip.media.mux import mux_ports
from twsip.media.rtp import decode_rtp
from twsip.media.sources import tone


class Recording:
    """An AudioSink that fires `done` once `expected` bytes have arrived."""

    def __init__(self, expected: int) -> None:
        self.data = bytearray()
        self.expected = expected
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def write(self, samples: bytes) -> None:
        self.data += samples
        if len(self.data) >= self.expected and not self.done.called:
            self.done.callback(bytes(self.data))


def zero_crossing_frequency(samples: bytes, rate: int = 8000) -> float:
    values = array("h", samples)
    crossings = sum(1 for a, b in zip(values, values[1:]) if (a < 0) != (b < 0))
    return crossings / 2 / (len(values) / rate)


def dft_peak(samples: bytes, candidates: range, rate: int = 8000) -> int:
    """The candidate frequency (Hz) with the most energy, by a direct DFT at each."""
    values = array("h", samples)
    best, best_power = 0, -1.0
    for frequency in candidates:
        step = 2 * math.pi * frequency / rate
        re = sum(v * math.cos(step * n) for n, v in enumerate(values))
        im = sum(v * math.sin(step * n) for n, v in enumerate(values))
        if re * re + im * im > best_power:
            best, best_power = frequency, re * re + im * im
    return best


def bound_ports() -> set[int]:
    """Ports the reactor reads: its own readers, and the RTP ports read through the mux."""
    readers = [r for r in reactor.getReaders() if isinstance(r, udp.Port)]
    return {r.getHost().port for r in readers + mux_ports(reactor)}


def media_timers() -> list[Any]:
    return [c for c in reactor.getDelayedCalls()
            if c.active() and getattr(c.func, "__module__", "").startswith("twsip.media")]


def pair(**b_options: Any) -> tuple[RtpEndpoint, RtpEndpoint]:
    b = open_endpoint(reactor, reactor, **b_options)
    a = open_endpoint(reactor, reactor, remote=("127.0.0.1", b.local_port))
    b.set_remote("127.0.0.1", a.local_port)
    return a, b


@pytest_twisted.ensureDeferred
async def test_tone_arrives_whole_at_440_hz() -> None:
    samples = tone(440, 1.0)
    recording = Recording(len(samples))
    a, b = pair(recorder=recording)
    try:
        assert await a.play(samples) is True
        received = await recording.done.addTimeout(5, reactor)
    finally:
        await a.close()
        await b.close()
    assert len(received) == len(samples)  # every one of the 8000 samples, nothing more
    assert received == PCMU.decode(PCMU.encode(samples))
    assert abs(zero_crossing_frequency(received) - 440) < 2
    assert abs(dft_peak(received[:4000], range(400, 481, 2)) - 440) <= 2
    stats = b.stats()[a.ssrc]
    assert (stats.packets, stats.lost, stats.payload_types) == (50, 0, (0,))
    assert stats.jitter_ms < 20
    assert a.counters.sent_packets == 50 and b.counters.malformed == 0


class LossyEndpoint(RtpEndpoint):
    """Drops 20% of received datagrams (seeded), and every first packet of chosen digits."""

    def __init__(self, *args: Any, drop_first_of: set[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rng = random.Random(4733)
        self.drop_first_of = drop_first_of
        self.markers_seen = 0
        self.dropped_markers = 0
        self.dropped = 0

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        packet = decode_rtp(datagram)
        drop = self.rng.random() < 0.2
        if packet.marker:
            if self.markers_seen in self.drop_first_of:
                drop = True
            self.markers_seen += 1
            self.dropped_markers += drop
        if drop:
            self.dropped += 1
            return
        super().datagramReceived(datagram, addr)


@pytest_twisted.ensureDeferred
async def test_dtmf_with_20_percent_loss_each_digit_once_in_order() -> None:
    digits = "0123456789*#ABCD"
    found: list[DtmfDigit] = []
    all_found: defer.Deferred[None] = defer.Deferred()

    def on_dtmf(digit: DtmfDigit) -> None:
        found.append(digit)
        if len(found) == len(digits):
            all_found.callback(None)

    b = LossyEndpoint(reactor, on_dtmf=on_dtmf, drop_first_of={0, 5, 11}, dtmf_quiet=0.2)
    reactor.listenUDP(0, b, interface="127.0.0.1")
    a = open_endpoint(reactor, reactor, remote=("127.0.0.1", b.local_port))
    b.set_remote("127.0.0.1", a.local_port)
    try:
        assert await a.send_dtmf(digits, interval_ms=60, duration_ms=80) is True
        await all_found.addTimeout(5, reactor)
    finally:
        await a.close()
        await b.close()
    sent = a.counters.sent_packets
    # send_dtmf fires at the last digit's first end packet; its two repeats may follow
    assert 16 * 6 - 2 <= sent <= 16 * 6 and 0.1 * sent < b.dropped < 0.35 * sent
    assert b.dropped_markers >= 3  # the first packet of digits 0, 5 and # (at least) was lost
    assert "".join(d.digit for d in found) == digits.upper()
    assert len({d.timestamp for d in found}) == 16


@pytest_twisted.ensureDeferred
async def test_close_leaves_no_port_and_no_timer() -> None:
    before = bound_ports()
    a, b = pair(source="echo")
    ports = {a.local_port, b.local_port}
    assert ports <= bound_ports() - before
    a.set_source("tone:440")
    a.play(tone(440, 5.0))
    b.send_dtmf("12")
    await task.deferLater(reactor, 0.1, lambda: None)  # let them run (a timer we own)
    assert media_timers()  # the shared pacing timer is running
    await a.close()
    await b.close()
    await task.deferLater(reactor, 0, lambda: None)
    assert not (ports & bound_ports())
    assert media_timers() == []
    assert a.local_port is None and b.local_port is None


@pytest_twisted.ensureDeferred
async def test_listen_rtp_steps_by_two_on_a_taken_port() -> None:
    from twsip.media.net import RtpPortError, listen_rtp

    first = RtpEndpoint(reactor)
    taken = listen_rtp(reactor, first, 0)
    port = taken.getHost().port
    second = RtpEndpoint(reactor)
    third = RtpEndpoint(reactor)
    try:
        if port + 2 <= 65535:
            bound = listen_rtp(reactor, second, port, max_retries=5)
            assert bound.getHost().port in range(port + 2, port + 11, 2)
        try:
            listen_rtp(reactor, third, port, max_retries=0)
        except RtpPortError as exc:
            assert exc.ports == [port] and str(port) in str(exc)
        else:
            raise AssertionError("a taken port was bound twice")
    finally:
        await first.close()
        await second.close()
        await third.close()
