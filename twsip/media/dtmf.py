"""RFC 4733 DTMF: the telephone-event payload, the sender's packets, the receiver's detector.

Sender (RFC 4733 §2.5.1): one event is a run of packets that all carry the RTP timestamp of
the event's start; the first has the marker bit, each next one a duration grown by one
packet time, and the last (E bit, final duration) goes out three times, so that losing one
end packet does not make the receiver wait. `event_packets` yields that run for one digit;
`dtmf_ticks` lays out a digit string on the packet clock, one entry per ptime tick (a
packet, or None for the gap between digits).

Receiver (§2.5.2): `DtmfDetector` counts an event once per (SSRC, timestamp), whichever of
its packets arrives (the three end packets, duplicates and reordered ones add nothing), so a
digit whose first packets were lost, or all but one packet, is still reported, once, in
order. A digit is reported when its end packet arrives, when a packet of a later event shows
it must be over, or when the owner calls `flush` (the endpoint does after a quiet spell, and
on close), with the longest duration seen.
"""

from __future__ import annotations

import re
import struct
from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterator

__all__ = ["DTMF_EVENTS", "EVENT_DIGITS", "DtmfError", "validate_digits", "EventPayload",
           "encode_event", "decode_event", "event_packets", "dtmf_ticks", "DtmfDigit",
           "DtmfDetector", "DEFAULT_DURATION_MS", "DEFAULT_INTERVAL_MS", "DEFAULT_VOLUME",
           "END_REPEATS", "TELEPHONE_EVENT_PT"]

# RFC 4733 §3.2, Table 7: DTMF named events.
DTMF_EVENTS: dict[str, int] = {
    **{str(n): n for n in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15,
}
EVENT_DIGITS: dict[int, str] = {code: digit for digit, code in DTMF_EVENTS.items()}

TELEPHONE_EVENT_PT = 101  # only a habit: the number is dynamic, the receiver's SDP decides
DEFAULT_DURATION_MS = 100
DEFAULT_INTERVAL_MS = 100
DEFAULT_VOLUME = 10  # -10 dBm0 (§2.3.4: 0..63, power level expressed as -dBm0)
END_REPEATS = 3
MAX_DURATION_MS = 8000  # the 16-bit duration field holds 8.19 s at 8000 Hz

_PAYLOAD = struct.Struct("!BBH")
_DIGITS = re.compile(r"[0-9*#A-D]*\Z", re.ASCII)


class DtmfError(ValueError):
    """A digit string or timing that cannot be sent as RFC 4733 events."""


def validate_digits(digits: str, *, allow_empty: bool = False) -> str:
    """The digits normalised (A-D upper case), or `DtmfError` naming what is refused.

    Allowed: 0-9, *, #, and A-D in either case; nothing else (no spaces, no commas for pauses,
    no other scripts' digits). An empty string is refused unless `allow_empty` (an expected
    digit may be "any").
    """
    if not isinstance(digits, str):
        raise DtmfError(f"DTMF digits must be a string, not {type(digits).__name__}")
    normal = digits.upper() if digits.isascii() else digits
    if not _DIGITS.match(normal):
        bad = sorted({ch for ch in digits if ch.upper() not in DTMF_EVENTS or not ch.isascii()})
        shown = ", ".join(repr(ch) for ch in bad)
        raise DtmfError(f"DTMF digits {digits!r} contain {shown}: only 0-9, *, #, A-D may be sent")
    if not normal and not allow_empty:
        raise DtmfError("no DTMF digits to send")
    return normal


@dataclass(frozen=True, slots=True)
class EventPayload:
    """The four bytes of a telephone-event payload (RFC 4733 §2.3)."""

    event: int
    end: bool
    volume: int
    duration: int  # in RTP timestamp units


def encode_event(event: int, end: bool, volume: int, duration: int) -> bytes:
    """A telephone-event payload; `ValueError` for a field out of range."""
    if not (0 <= event <= 255 and 0 <= volume <= 63 and 0 <= duration <= 0xFFFF):
        raise ValueError(f"telephone-event field out of range: event={event} "
                         f"volume={volume} duration={duration}")
    return _PAYLOAD.pack(event, (0x80 if end else 0) | volume, duration)


def decode_event(payload: bytes) -> EventPayload:
    """Parse a telephone-event payload; `ValueError` if it is shorter than 4 bytes.

    Only the first event is read; RFC 4733 §2.5.1.5 lets a packet carry more, none of which
    a DTMF sender needs.
    """
    if len(payload) < 4:
        raise ValueError(f"telephone-event payload of {len(payload)} bytes, 4 needed")
    event, flags, duration = _PAYLOAD.unpack_from(payload)
    return EventPayload(event, bool(flags & 0x80), flags & 0x3F, duration)


@dataclass(frozen=True, slots=True)
class EventPacket:
    """One telephone-event packet to send: its payload and whether it opens the event.

    The sender stamps every packet of one event with the RTP timestamp it had when the event
    started (the packet with `marker` set); the sequence number grows per packet as usual,
    retransmitted end packets included (§2.5.1.4).
    """

    digit: str
    marker: bool
    end: bool
    duration: int
    payload: bytes


def _samples(ms: int, clock_rate: int) -> int:
    return ms * clock_rate // 1000


def event_packets(digit: str, duration_ms: int = DEFAULT_DURATION_MS, *,
                  volume: int = DEFAULT_VOLUME, ptime_ms: int = 20, clock_rate: int = 8000,
                  end_repeats: int = END_REPEATS) -> Iterator[EventPacket]:
    """The packets of one digit, one per ptime: durations ptime, 2*ptime, ... then the end.

    For 100 ms at 20 ms ptime (8000 Hz): durations 160, 320, 480, 640, then 800 with the E
    bit three times; the first packet carries the marker. A duration shorter than one ptime
    is sent as end packets only (the first of them with the marker).
    """
    code = DTMF_EVENTS[validate_digits(digit)] if len(digit) == 1 else None
    if code is None:
        raise DtmfError(f"one digit expected, not {digit!r}")
    if not 10 <= duration_ms <= MAX_DURATION_MS:
        raise DtmfError(f"DTMF digit duration {duration_ms} ms is outside 10..{MAX_DURATION_MS}")
    if ptime_ms <= 0 or end_repeats < 1:
        raise DtmfError(f"ptime {ptime_ms} ms and {end_repeats} end packets make no events")
    total = _samples(duration_ms, clock_rate)
    step = _samples(ptime_ms, clock_rate)
    normal = digit.upper()
    first = True
    duration = step
    while duration < total:
        yield EventPacket(normal, first, False, duration, encode_event(code, False, volume,
                                                                      duration))
        first = False
        duration += step
    payload = encode_event(code, True, volume, total)
    for _ in range(end_repeats):
        yield EventPacket(normal, first, True, total, payload)
        first = False


def dtmf_ticks(digits: str, *, interval_ms: int = DEFAULT_INTERVAL_MS,
               duration_ms: int = DEFAULT_DURATION_MS, volume: int = DEFAULT_VOLUME,
               ptime_ms: int = 20, clock_rate: int = 8000) -> Iterator[EventPacket | None]:
    """What to send on each ptime tick for a digit string: a packet, or None (a gap).

    Each digit starts `duration_ms + interval_ms` (rounded up to whole ticks) after the
    previous one, and never before the previous digit's last end packet went out, so the
    silent gap between tones is `interval_ms` (the flow's intervalMs).
    """
    normal = validate_digits(digits)
    if not 0 <= interval_ms <= 60_000:
        raise DtmfError(f"DTMF interval {interval_ms} ms is outside 0..60000")
    tone_ticks = -(-duration_ms // ptime_ms)
    gap_ticks = -(-interval_ms // ptime_ms)
    for index, digit in enumerate(normal):
        sent = 0
        for packet in event_packets(digit, duration_ms, volume=volume, ptime_ms=ptime_ms,
                                    clock_rate=clock_rate):
            yield packet
            sent += 1
        if index < len(normal) - 1:
            for _ in range(max(0, tone_ticks + gap_ticks - sent)):
                yield None


@dataclass(frozen=True)
class DtmfDigit:
    """A digit the detector saw: which, how long (RTP units and ms), and from which event."""

    digit: str
    duration: int
    duration_ms: float
    ssrc: int
    timestamp: int
    ended: bool  # an end packet arrived (False: inferred from a later event or a flush)
    volume: int


class _Event:
    __slots__ = ("ssrc", "timestamp", "code", "duration", "volume")

    def __init__(self, ssrc: int, timestamp: int, code: int, duration: int, volume: int) -> None:
        self.ssrc = ssrc
        self.timestamp = timestamp
        self.code = code
        self.duration = duration
        self.volume = volume


class DtmfDetector:
    """Turns received telephone-event packets into digits, each reported once, in order.

    `feed` takes every telephone-event packet of a stream (any SSRC); `on_digit` is called
    with a `DtmfDigit` per event. An event is identified by (SSRC, RTP timestamp), as RFC
    4733 §2.5.2.2 says; the last `memory` events are remembered, so late duplicates and
    retransmitted end packets of a reported event are ignored. Events with codes other than
    0-15 (tones, line events) are ignored, and so is a packet of an event older than one
    already seen from the same SSRC (reordered across digits): reporting it would put the
    digits out of order.
    """

    def __init__(self, on_digit: Callable[[DtmfDigit], None], *, clock_rate: int = 8000,
                 memory: int = 64) -> None:
        self.on_digit = on_digit
        self.clock_rate = clock_rate
        self._pending: _Event | None = None
        self._done: deque[tuple[int, int]] = deque(maxlen=memory)
        self._done_set: set[tuple[int, int]] = set()
        self._latest: dict[int, int] = {}  # SSRC -> timestamp of its newest event
        self.digits: list[DtmfDigit] = []

    @property
    def pending(self) -> bool:
        """True while an event has been seen but not yet reported (its end not yet known)."""
        return self._pending is not None

    def feed(self, ssrc: int, timestamp: int, payload: bytes) -> None:
        """One received telephone-event packet; malformed payloads are ignored."""
        if len(payload) < 4:
            return
        code, flags, duration = _PAYLOAD.unpack_from(payload)
        if code > 15:
            return
        key = (ssrc, timestamp)
        if key in self._done_set:
            return
        pending = self._pending
        if pending is None or pending.ssrc != ssrc or pending.timestamp != timestamp:
            latest = self._latest.get(ssrc)
            if latest is not None and (timestamp - latest) & 0x80000000:
                return  # older than an event already seen: too late to report in order
            if pending is not None:
                self._report(pending, ended=False)  # a later event: the pending one is over
            if len(self._latest) >= 64:
                self._latest.clear()
            self._latest[ssrc] = timestamp
            pending = self._pending = _Event(ssrc, timestamp, code, duration, flags & 0x3F)
        elif duration > pending.duration:
            pending.duration = duration
        if flags & 0x80:
            self._report(pending, ended=True)

    def flush(self) -> None:
        """Report the pending event, if any, with the longest duration seen so far.

        For an event whose end packets were all lost: the owner calls this when the stream
        has been quiet for a while, and when it closes.
        """
        if self._pending is not None:
            self._report(self._pending, ended=False)

    def _report(self, event: _Event, *, ended: bool) -> None:
        self._pending = None
        key = (event.ssrc, event.timestamp)
        if len(self._done) == self._done.maxlen:
            self._done_set.discard(self._done[0])
        self._done.append(key)
        self._done_set.add(key)
        digit = DtmfDigit(EVENT_DIGITS[event.code], event.duration,
                          event.duration * 1000 / self.clock_rate, event.ssrc,
                          event.timestamp, ended, event.volume)
        self.digits.append(digit)
        self.on_digit(digit)
