"""RtpEndpoint on a Clock with a fake datagram transport: what goes on the wire (payload
types from the receiver's SDP, sequence +1, timestamp +160, marker, RFC 4733 layout), the
direction gates, the loopback-only rule, latching, receive-side screening and close()."""

from __future__ import annotations

import io
from array import array

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock

from twsip.media.dtmf import DtmfError, decode_event, encode_event
from twsip.media.endpoint import Direction, PayloadTypes, RtpEndpoint
from twsip.media.net import is_loopback
from twsip.media.g711 import PCMA, PCMU
from twsip.media.pacing import PacingScheduler
from twsip.media.rtp import RtpPacket, decode_rtp, encode_rtp
from twsip.media.sources import ToneSource, tone

PEER = ("127.0.0.1", 40002)


class FakeTransport:
    def __init__(self, port: int = 40000) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.port = port
        self.listening = True

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", "127.0.0.1", self.port)

    def stopListening(self) -> None:
        self.listening = False

    def packets(self) -> list[RtpPacket]:
        return [decode_rtp(data) for data, _ in self.sent]


def make(clock: Clock, **options) -> tuple[RtpEndpoint, FakeTransport]:
    options.setdefault("remote", PEER)
    endpoint = RtpEndpoint(clock, scheduler=PacingScheduler(clock), **options)
    transport = FakeTransport()
    endpoint.makeConnection(transport)  # type: ignore[arg-type]
    return endpoint, transport


def run(clock: Clock, seconds: float) -> None:
    clock.advance(0)
    for _ in range(round(seconds / 0.02)):
        clock.advance(0.02)


def test_play_sends_paced_packets_with_receivers_payload_type() -> None:
    clock = Clock()
    # The receiver's SDP maps PCMA to 8 and telephone-event to 96: those are sent.
    endpoint, transport = make(clock, send=PayloadTypes(PCMA, 8, 96))
    samples = tone(440, 1.0)
    done = endpoint.play(samples)
    fired_at = []
    done.addCallback(lambda ok: fired_at.append((ok, clock.seconds(), len(transport.sent))))
    run(clock, 1.5)
    packets = transport.packets()
    assert len(packets) == 50 and fired_at == [(True, pytest.approx(0.98), 50)]
    assert {p.payload_type for p in packets} == {8}
    assert {p.ssrc for p in packets} == {endpoint.ssrc}
    assert all(len(p.payload) == 160 for p in packets)
    assert [(b.sequence - a.sequence) & 0xFFFF for a, b in zip(packets, packets[1:])] == [1] * 49
    assert [(b.timestamp - a.timestamp) & 0xFFFFFFFF
            for a, b in zip(packets, packets[1:])] == [160] * 49
    assert [p.marker for p in packets] == [True] + [False] * 49  # start of a talkspurt
    assert b"".join(PCMA.decode(p.payload) for p in packets) == PCMA.decode(PCMA.encode(samples))
    assert {addr for _, addr in transport.sent} == {PEER}
    assert clock.getDelayedCalls() == []  # idle again: no timer
    assert endpoint.counters.sent_packets == 50 and endpoint.counters.sent_octets == 8000


def test_random_start_values() -> None:
    clock = Clock()
    a, _ = make(clock)
    b, _ = make(clock)
    assert a.ssrc != b.ssrc or a._sequence != b._sequence  # 2^-48 chance of a false failure


def test_short_last_packet_and_queued_files() -> None:
    clock = Clock()
    endpoint, transport = make(clock)
    first = endpoint.play(bytes(2 * 400))
    second = endpoint.play(bytes(2 * 160))
    results = []
    first.addCallback(results.append)
    second.addCallback(results.append)
    run(clock, 0.2)
    assert [len(p.payload) for p in transport.packets()] == [160, 160, 80, 160]
    assert results == [True, True]


def test_dtmf_packets_on_the_wire_per_rfc4733() -> None:
    clock = Clock()
    endpoint, transport = make(clock, send=PayloadTypes(PCMU, 0, 96))
    done = endpoint.send_dtmf("1#", interval_ms=100, duration_ms=100)
    run(clock, 1.0)
    assert done.called and done.result is True
    packets = transport.packets()
    assert len(packets) == 14 and {p.payload_type for p in packets} == {96}
    assert [(b.sequence - a.sequence) & 0xFFFF for a, b in zip(packets, packets[1:])] == [1] * 13
    for digit, event_packets in (("1", packets[:7]), ("#", packets[7:])):
        events = [decode_event(p.payload) for p in event_packets]
        assert len({p.timestamp for p in event_packets}) == 1  # one timestamp per event
        assert [p.marker for p in event_packets] == [True] + [False] * 6
        assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
        assert [e.end for e in events] == [False] * 4 + [True] * 3
        assert {e.event for e in events} == {1 if digit == "1" else 11}
        assert {e.volume for e in events} == {10}
    # The second event starts 10 ticks (100 ms tone + 100 ms gap) after the first.
    assert (packets[7].timestamp - packets[0].timestamp) & 0xFFFFFFFF == 1600


def test_dtmf_refused_without_telephone_event_or_bad_digits() -> None:
    clock = Clock()
    endpoint, transport = make(clock, send=PayloadTypes(PCMU, 0, None))
    with pytest.raises(DtmfError, match="telephone-event"):
        endpoint.send_dtmf("1")
    endpoint.set_payload_types(send=PayloadTypes(PCMU, 0, 101))
    with pytest.raises(DtmfError, match="'x'"):
        endpoint.send_dtmf("1x")
    assert clock.getDelayedCalls() == [] and transport.sent == []


def test_dtmf_interrupts_audio_which_resumes() -> None:
    clock = Clock()
    endpoint, transport = make(clock)
    played = endpoint.play(tone(440, 0.2))  # 10 packets
    clock.advance(0)
    clock.advance(0.02)  # two audio packets out
    endpoint.send_dtmf("5", interval_ms=0)
    run(clock, 1.0)
    kinds = [p.payload_type for p in transport.packets()]
    assert kinds == [0, 0] + [101] * 7 + [0] * 8 and played.result is True
    audio = [p for p in transport.packets() if p.payload_type == 0]
    assert audio[2].marker  # a new talkspurt after the digit


@pytest.mark.parametrize("direction", ["recvonly", "inactive"])
def test_no_sending_unless_direction_allows_but_time_goes_on(direction: str) -> None:
    clock = Clock()
    endpoint, transport = make(clock, direction=direction)
    done = endpoint.play(tone(440, 0.4))
    run(clock, 0.5)
    assert transport.sent == [] and done.result is True
    assert endpoint.counters.suppressed == 20
    endpoint.set_direction(Direction.SENDRECV)
    endpoint.play(tone(440, 0.04))
    run(clock, 0.1)
    assert len(transport.sent) == 2


@pytest.mark.parametrize("host", ["10.0.0.1", "localhost", "127.0.0.1 ", "127.0.0.0",
                                  "127.255.255.255", "127.000.0.1", "::1", "\u0661\u0662\u0667.0.0.1"])
def test_only_loopback_literals_are_sent_to(host: str) -> None:
    clock = Clock()
    endpoint, transport = make(clock, remote=(host, 4000))
    endpoint.play(tone(440, 0.1))
    run(clock, 0.2)
    assert transport.sent == [] and endpoint.counters.refused_destination == 5
    assert not is_loopback(host)
    assert is_loopback("127.0.0.1") and is_loopback("127.1.2.3")


def rtp(pt: int, seq: int, ts: int, payload: bytes, ssrc: int = 77, marker=False) -> bytes:
    return encode_rtp(pt, seq, ts, ssrc, payload, marker)


def test_receive_records_counts_and_latches() -> None:
    clock = Clock()
    recording = io.BytesIO()
    digits = []
    endpoint, transport = make(clock, recorder=recording, on_dtmf=digits.append,
                               receive=PayloadTypes(PCMA, 8, 97))
    source = ("127.0.0.5", 50000)
    audio = tone(440, 0.06)
    for n in range(3):
        clock.advance(0.02)
        frame = PCMA.encode(audio[n * 320:(n + 1) * 320])
        endpoint.datagramReceived(rtp(8, 10 + n, 1000 + 160 * n, frame), source)
    assert endpoint.remote == source and endpoint.latched  # symmetric RTP: latched
    endpoint.datagramReceived(b"\x00garbage", source)
    endpoint.datagramReceived(rtp(0, 13, 1480, PCMU.encode(bytes(320))), source)  # static PCMU
    endpoint.datagramReceived(rtp(18, 14, 1640, b"g729"), source)  # not ours
    endpoint.datagramReceived(bytes([0x80, 200]) + bytes(10), source)  # RTCP SR (mux)
    for n in range(3):
        endpoint.datagramReceived(rtp(97, 15 + n, 1800, encode_event(4, True, 10, 800)),
                                  ("127.0.0.9", 1))
    assert endpoint.remote == source  # latched once only
    assert [d.digit for d in digits] == ["4"]
    counters = endpoint.counters
    assert (counters.malformed, counters.unknown_payload, counters.rtcp) == (1, 1, 1)
    recorded = recording.getvalue()
    assert recorded[:960] == PCMA.decode(PCMA.encode(audio)) and len(recorded) == 960 + 320
    stats = endpoint.stats()[77]
    assert (stats.packets, stats.expected, stats.lost) == (8, 8, 0)
    assert stats.payload_types == (0, 8, 18, 97)
    report = endpoint.report()
    assert report.digits == ("4",) and report.counters["malformed"] == 1
    assert clock.getDelayedCalls() == []  # the digit ended: no quiet timer left


def test_sendonly_drops_received() -> None:
    clock = Clock()
    digits = []
    endpoint, _ = make(clock, direction="sendonly", on_dtmf=digits.append)
    endpoint.datagramReceived(rtp(101, 1, 0, encode_event(1, True, 10, 800)), PEER)
    assert digits == [] and endpoint.counters.dropped_direction == 1 and endpoint.stats() == {}


def test_digit_without_end_packets_reported_after_quiet_spell() -> None:
    clock = Clock()
    digits = []
    endpoint, _ = make(clock, on_dtmf=digits.append, dtmf_quiet=0.3)
    for n in range(3):
        endpoint.datagramReceived(rtp(101, n, 5000, encode_event(9, False, 10, 160 * (n + 1))),
                                  PEER)
        clock.advance(0.02)
    assert digits == [] and len(clock.getDelayedCalls()) == 1
    clock.advance(0.3)
    assert [(d.digit, d.duration, d.ended) for d in digits] == [("9", 480, False)]
    assert clock.getDelayedCalls() == []


def test_echo_sends_back_what_it_hears() -> None:
    clock = Clock()
    endpoint, transport = make(clock, source="echo", latch=False)
    assert clock.getDelayedCalls() == []  # nothing heard yet: no ticking
    heard = tone(300, 0.06)
    for n in range(3):
        endpoint.datagramReceived(rtp(0, n, 160 * n, PCMU.encode(heard[320 * n:320 * (n + 1)])),
                                  ("127.0.0.1", 1234))
    run(clock, 0.2)
    sent = transport.packets()
    assert b"".join(PCMU.decode(p.payload) for p in sent) == PCMU.decode(PCMU.encode(heard))
    assert clock.getDelayedCalls() == []


def test_tone_source_until_stopped_then_close_cleans_up() -> None:
    clock = Clock()
    endpoint, transport = make(clock, source="tone:1000")
    run(clock, 1.0)
    assert len(transport.sent) == 51 and endpoint.playing
    pending = endpoint.send_dtmf("123")
    play = endpoint.play(tone(440, 5))
    closed = endpoint.close()
    assert closed.called and not transport.listening
    assert pending.result is False and play.result is False
    assert clock.getDelayedCalls() == [] and len(endpoint.scheduler) == 0
    assert endpoint.play(b"\x00\x00").result is False  # closed: nothing plays
    run(clock, 0.1)
    assert len(transport.sent) == 51


def test_cancelling_play() -> None:
    clock = Clock()
    endpoint, transport = make(clock)
    play = endpoint.play(tone(440, 1.0))
    run(clock, 0.1)
    play.cancel()
    failures = []
    play.addErrback(failures.append)
    run(clock, 0.2)
    assert len(transport.sent) == 6 and len(failures) == 1
    assert clock.getDelayedCalls() == []


def test_send_failure_is_counted_not_raised() -> None:
    clock = Clock()
    endpoint, transport = make(clock)

    def refuse(data: bytes, addr: tuple[str, int]) -> None:
        raise OSError(90, "Message too long")

    endpoint._sendto = refuse
    done = endpoint.play(tone(440, 0.06))
    run(clock, 0.1)
    assert done.result is True and endpoint.counters.send_errors == 3
    assert endpoint.counters.sent_packets == 0 and clock.getDelayedCalls() == []


@pytest.mark.parametrize("codec, payload_type", [(PCMU, 0), (PCMA, 8), (PCMU, 112)])
def test_tone_source_packets_are_the_encoded_tone_with_rfc3550_headers(codec, payload_type
                                                                         ) -> None:
    """A tone's cached payloads and the in-place header give the same datagrams as
    `encode_rtp` over the freshly encoded frames: SSRC fixed, sequence +1, timestamp +160,
    the marker on the first packet only, the receiver's payload type."""
    clock = Clock()
    endpoint, transport = make(clock, send=PayloadTypes(codec, payload_type, 101),
                               source="tone:440")
    run(clock, 1.5)  # 76 packets: past the end of the one-second loop
    frames = ToneSource(440)
    first = transport.packets()[0]
    expected = [encode_rtp(payload_type, (first.sequence + n) & 0xFFFF,
                           (first.timestamp + 160 * n) & 0xFFFFFFFF, endpoint.ssrc,
                           codec.encode(frames.next_frame() or b""), n == 0)
                for n in range(len(transport.sent))]
    assert len(expected) == 76
    assert [data for data, _ in transport.sent] == expected


def test_general_rtp_headers_count_like_plain_ones() -> None:
    """Plain headers (0x80: no padding, extension or CSRC) take the receiver's short path;
    the same packets with a CSRC, a header extension and padding go through decode_rtp.
    Statistics, recording and DTMF must not tell the two apart."""

    def dressed(plain: bytes) -> bytes:
        header, payload = plain[:12], plain[12:]
        first = 0x80 | 0x20 | 0x10 | 1  # padding, extension, one CSRC
        return (bytes([first]) + header[1:] + (1234).to_bytes(4, "big")
                + bytes([0xBE, 0xDE, 0, 1]) + bytes(4) + payload + bytes([0, 0, 3]))

    audio = tone(440, 0.1)
    plain = [rtp(0, 100 + n, 160 * n, PCMU.encode(audio[320 * n:320 * (n + 1)]))
             for n in range(5)]
    plain += [rtp(101, 105 + n, 800, encode_event(7, n == 2, 10, 160 * (n + 1)))
              for n in range(3)]
    results = []
    for wrap in (lambda data: data, dressed):
        clock = Clock()
        recording = io.BytesIO()
        digits: list = []
        endpoint, _ = make(clock, recorder=recording, on_dtmf=digits.append)
        for data in plain:
            clock.advance(0.02)
            endpoint.datagramReceived(wrap(data), PEER)
        results.append((endpoint.stats(), recording.getvalue(),
                        [(d.digit, d.duration) for d in digits], vars(endpoint.counters)))
    assert results[0] == results[1]
    stats = results[0][0][77]
    assert (stats.packets, stats.octets, stats.lost, stats.payload_types) == (8, 812, 0, (0, 101))
    assert results[0][1] == PCMU.decode(PCMU.encode(audio)) and results[0][2] == [("7", 480)]
