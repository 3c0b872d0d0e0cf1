"""Receive statistics per RTP stream (RFC 3550 §6.4.1, appendix A.1, A.3 and A.8).

A call report wants to say "1,500 packets received, 3 lost, jitter 0.4 ms" per direction;
these are the figures an RTCP receiver report carries, computed the RFC's way:

- sequence numbers are extended with a count of 16-bit wrap-arounds (A.1), so loss stays
  right across 65535 -> 0;
- expected = highest extended sequence - first + 1, lost = expected - received (A.3; it
  can go negative with duplicates, as the RFC says);
- a jump of more than MAX_DROPOUT ahead (or MAX_MISORDER behind) is taken as a restarted
  source only when the next packet confirms it (seq == bad_seq + 1); until then the stray
  packet counts as received but moves nothing;
- probation (A.1's MIN_SEQUENTIAL) is a parameter, 1 by default: on loopback every source
  is the peer we called, and a report that ignores the first packet of every stream only
  confuses whoever reads it;
- interarrival jitter (A.8): J += (|D| - J) / 16, with D the difference of transit times
  of consecutive packets, arrival times taken from the reactor's clock in seconds and
  converted to the stream's RTP clock (8000 Hz).

`snapshot()` returns a frozen `StreamStats` (plain data) for reports.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ReceiveStats", "StreamStats", "MAX_DROPOUT", "MAX_MISORDER"]

RTP_SEQ_MOD = 1 << 16
MAX_DROPOUT = 3000
MAX_MISORDER = 100


@dataclass(frozen=True)
class StreamStats:
    """One received stream's figures at one moment; `as_dict()` for JSON reports."""

    ssrc: int
    packets: int  # every packet taken in, duplicates included
    octets: int  # payload octets, as RTCP counts them
    expected: int
    lost: int  # cumulative; negative if duplicates outnumber losses
    fraction_lost: float  # lost / expected over the whole stream, 0.0 when nothing expected
    jitter: float  # interarrival jitter in RTP timestamp units
    jitter_ms: float
    highest_sequence: int  # extended: cycles * 65536 + sequence
    payload_types: tuple[int, ...]
    first_arrival: float | None
    last_arrival: float | None
    restarts: int

    def as_dict(self) -> dict[str, Any]:
        """The figures as a dict of plain values."""
        return asdict(self)


class ReceiveStats:
    """Statistics of one SSRC's packets as they arrive; `update` is the per-packet work."""

    __slots__ = ("ssrc", "clock_rate", "min_sequential", "packets", "octets", "received",
                 "base_seq", "max_seq", "cycles", "bad_seq", "probation", "jitter",
                 "payload_types", "first_arrival", "last_arrival", "restarts",
                 "_last_timed_arrival", "_last_timed_timestamp", "_started", "_settled",
                 "_last_type")

    def __init__(self, ssrc: int, clock_rate: int = 8000, *, min_sequential: int = 1) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.min_sequential = max(1, min_sequential)
        self.packets = 0
        self.octets = 0
        self.received = 0  # packets counted for loss (A.1's `received`)
        self.base_seq = 0
        self.max_seq = 0
        self.cycles = 0
        self.bad_seq = RTP_SEQ_MOD + 1  # no sequence number equals it
        self.probation = self.min_sequential
        self.jitter = 0.0
        self.payload_types: set[int] = set()
        self.first_arrival: float | None = None
        self.last_arrival: float | None = None
        self.restarts = 0
        self._last_timed_arrival: float | None = None
        self._last_timed_timestamp = 0
        self._started = False
        self._settled = False  # started and off probation: `update` takes the short path
        self._last_type = -1  # the payload type of the last packet (already in the set)

    def _init_seq(self, seq: int) -> None:
        self.base_seq = seq
        self.max_seq = seq
        self.bad_seq = RTP_SEQ_MOD + 1
        self.cycles = 0
        self.received = 0

    def _update_seq(self, seq: int) -> bool:
        """A.1's update_seq: True if the packet counts as received for the loss figures."""
        counted = self._update_seq_a1(seq)
        self._settled = self._started and not self.probation
        return counted

    def _update_seq_a1(self, seq: int) -> bool:
        if not self._started:
            self._started = True
            self._init_seq(seq)
            self.max_seq = seq
            self.probation -= 1
            return self.probation == 0
        udelta = (seq - self.max_seq) & 0xFFFF
        if self.probation:
            # Still on probation: only in-order packets move it along.
            if udelta == 1:
                self.probation -= 1
                self.max_seq = seq
                if self.probation == 0:
                    self._init_seq(seq)
                    return True
            else:
                self.probation = self.min_sequential - 1
                self.max_seq = seq
            return False
        if udelta < MAX_DROPOUT:
            if seq < self.max_seq:
                self.cycles += RTP_SEQ_MOD  # wrapped around
            self.max_seq = seq
        elif udelta <= RTP_SEQ_MOD - MAX_MISORDER:
            if seq == self.bad_seq:
                # Two packets in a row agree on the jump: the source restarted.
                self._init_seq(seq)
                self.restarts += 1
            else:
                self.bad_seq = (seq + 1) & 0xFFFF
                return False
        # else: a duplicate or a reordered packet, counted but moving nothing
        return True

    def update(self, sequence: int, timestamp: int, arrival: float, payload_type: int,
               payload_size: int, *, timed: bool = True) -> None:
        """One packet of this SSRC arrived at `arrival` (the clock's seconds).

        `timed` is False for packets whose RTP timestamp is not a sampling instant of the
        packet itself, such as telephone events (every packet of one event carries the
        event's start): they would make the jitter figure measure the event's length.
        """
        self.packets += 1
        self.octets += payload_size
        if payload_type != self._last_type:
            self.payload_types.add(payload_type)
            self._last_type = payload_type
        if self.first_arrival is None:
            self.first_arrival = arrival
        self.last_arrival = arrival
        max_seq = self.max_seq
        if self._settled and (sequence - max_seq) & 0xFFFF < MAX_DROPOUT:
            # A.1's every-packet case, inline: in order (or a duplicate, or a small gap).
            if sequence < max_seq:
                self.cycles += RTP_SEQ_MOD  # wrapped around
            self.max_seq = sequence
            self.received += 1
        elif self._update_seq(sequence):
            self.received += 1
        if not timed:
            return
        last = self._last_timed_arrival
        if last is not None:
            # D(i-1, i) = (Rj - Ri) - (Sj - Si), in RTP units; timestamp difference signed
            # 32-bit so a wrap-around of the RTP timestamp is a small step, not 2^32.
            elapsed = (timestamp - self._last_timed_timestamp) & 0xFFFFFFFF
            if elapsed & 0x80000000:
                elapsed -= 1 << 32
            delta = abs((arrival - last) * self.clock_rate - elapsed)
            self.jitter += (delta - self.jitter) / 16.0
        self._last_timed_arrival = arrival
        self._last_timed_timestamp = timestamp

    @property
    def extended_max(self) -> int:
        """The highest sequence number seen, extended by the wrap-arounds."""
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        """Packets expected since the first one counted (A.3)."""
        if not self._started or self.probation:
            return 0
        return self.extended_max - self.base_seq + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost (A.3): expected - received."""
        return self.expected - self.received

    def snapshot(self) -> StreamStats:
        """The figures now, as plain data."""
        expected = self.expected
        lost = expected - self.received
        return StreamStats(
            ssrc=self.ssrc, packets=self.packets, octets=self.octets, expected=expected,
            lost=lost, fraction_lost=(lost / expected) if expected > 0 and lost > 0 else 0.0,
            jitter=self.jitter, jitter_ms=self.jitter * 1000.0 / self.clock_rate,
            highest_sequence=self.extended_max, payload_types=tuple(sorted(self.payload_types)),
            first_arrival=self.first_arrival, last_arrival=self.last_arrival,
            restarts=self.restarts)
