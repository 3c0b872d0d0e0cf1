"""The paced half of an endpoint: what goes out on each 20 ms tick, and in what order.

An endpoint has three kinds of things to send — queued files, queued digit strings and one
standing frame source — and exactly one packet slot per tick. Deciding which of them fills
the slot, and telling each caller when its file or digits are done, is a job of its own,
apart from the socket: `SendJobs` only hands (payload type, timestamp, payload, marker) to
the `send` callable it was given, and the endpoint turns that into a datagram.

DTMF has priority over audio: a file pauses while digits are sent and resumes after them.
`SendJobs` is registered with the `PacingScheduler` only while it has something to send, so
an idle endpoint costs no timer at all.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Iterator

from twisted.internet.defer import Deferred, succeed

from twsip.media.dtmf import (
    DEFAULT_DURATION_MS,
    DEFAULT_INTERVAL_MS,
    DtmfError,
    EventPacket,
    dtmf_ticks,
)
from twsip.media.g711 import CLOCK_RATE, Codec
from twsip.media.pacing import PacingScheduler
from twsip.media.session import PayloadTypes
from twsip.media.sources import EchoSource, FrameSource

__all__ = ["SendJobs", "SendPacket"]

SendPacket = Callable[[int, int, bytes, bool], None]  # payload type, timestamp, payload, marker


class _PlayJob:
    __slots__ = ("encoded", "offset", "deferred")

    def __init__(self, encoded: bytes, deferred: Deferred[bool]) -> None:
        self.encoded = encoded
        self.offset = 0
        self.deferred = deferred


class _DtmfJob:
    """A digit string being sent. Its Deferred fires when the last digit's first end
    packet is out: the digit has ended for the receiver then, and a peer that hangs up on
    it must not turn the two redundant end packets (RFC 4733 §2.5.1.4) into a failure."""

    __slots__ = ("ticks", "deferred", "timestamp", "digits_left", "ending")

    def __init__(self, ticks: Iterator[EventPacket | None], deferred: Deferred[bool],
                 digits: int) -> None:
        self.ticks = ticks
        self.deferred = deferred
        self.timestamp = 0
        self.digits_left = digits
        self.ending = False  # the current digit's end packets are going out


class SendJobs:
    """Files, digit strings and a frame source, one packet per pacing tick.

    The RTP timestamp follows the pacing clock (`timestamp_base` at `origin`, 8000 per
    second), so a pause between two files shows as a timestamp jump, as on a real phone.
    """

    def __init__(self, scheduler: PacingScheduler, send: SendPacket, types: PayloadTypes, *,
                 timestamp_base: int, origin: float) -> None:
        self.scheduler = scheduler
        self._send = send
        self.types = types
        self._audio_pt = types.audio_pt  # read per packet: a plain attribute, not a property
        # One packet per tick: its size follows the scheduler's ptime (160 at 20 ms).
        self.samples_per_packet = round(scheduler.ptime * CLOCK_RATE)
        self._timestamp_base = timestamp_base
        self._origin = origin
        self._plays: deque[_PlayJob] = deque()
        self._dtmf: deque[_DtmfJob] = deque()
        self.source: FrameSource | None = None
        # The source's `next_payload` when it has one (see sources): no codec call per packet.
        self._next_payload: Callable[[Codec], bytes] | None = None
        self._key: int | None = None  # scheduler registration
        self._talking = False  # the last tick sent audio (next audio packet: no marker)
        self.closed = False

    def set_types(self, types: PayloadTypes) -> None:
        self.types = types
        self._audio_pt = types.audio_pt

    def set_source(self, source: FrameSource | None) -> None:
        self.source = source
        self._next_payload = getattr(source, "next_payload", None)
        if source is not None and not isinstance(source, EchoSource):
            self.wake()  # an echo is woken by the receive side when it has audio to send

    @property
    def playing(self) -> bool:
        return bool(self._plays or self._dtmf or self.source is not None)

    def play(self, samples: bytes) -> Deferred[bool]:
        if self.closed:
            return succeed(False)
        deferred: Deferred[bool] = Deferred(self._cancel_job)
        job = _PlayJob(self.types.codec.encode(samples), deferred)
        if not job.encoded:
            deferred.callback(True)
            return deferred
        self._plays.append(job)
        self.wake()
        return deferred

    def send_dtmf(self, digits: str, interval_ms: int = DEFAULT_INTERVAL_MS,
                  duration_ms: int = DEFAULT_DURATION_MS) -> Deferred[bool]:
        if self.types.telephone_event is None:
            raise DtmfError("the peer offered no telephone-event: RFC 4733 DTMF cannot be sent")
        ptime_ms = round(self.scheduler.ptime * 1000)
        ticks = dtmf_ticks(digits, interval_ms=interval_ms, duration_ms=duration_ms,
                           ptime_ms=ptime_ms, clock_rate=CLOCK_RATE)
        first = next(ticks)  # validates now (a generator would only raise on its first tick)
        if self.closed:
            return succeed(False)
        deferred: Deferred[bool] = Deferred(self._cancel_job)
        self._dtmf.append(_DtmfJob(_chain(first, ticks), deferred, len(digits)))
        self.wake()
        return deferred

    def stop(self) -> None:
        """Drop every job and the source; their Deferreds fire False, not an error,
        because being stopped is an ordinary end of a call, not a failure."""
        self.set_source(None)
        jobs: list[_PlayJob | _DtmfJob] = [*self._plays, *self._dtmf]
        self._plays.clear()
        self._dtmf.clear()
        for job in jobs:
            if not job.deferred.called:
                job.deferred.callback(False)
        self._unregister()

    def close(self) -> None:
        """Stop, and refuse new jobs: a closed endpoint has no socket to send them on.
        The endpoint's send function goes too, so that the two do not stay a reference
        cycle only the garbage collector frees."""
        self.stop()
        self.closed = True
        self._send = _no_send

    def wake(self) -> None:
        """Register with the scheduler if not already: new work, or an echo fed."""
        if self._key is None and not self.closed:
            self._key = self.scheduler.add(self._tick)

    def _unregister(self) -> None:
        if self._key is not None:
            key, self._key = self._key, None
            self.scheduler.remove(key)

    def _cancel_job(self, deferred: Deferred[Any]) -> None:
        """Canceller of play/send_dtmf Deferreds: drop the job (Twisted then errbacks the
        Deferred with CancelledError)."""
        for play in [job for job in self._plays if job.deferred is deferred]:
            self._plays.remove(play)
        for dtmf in [job for job in self._dtmf if job.deferred is deferred]:
            self._dtmf.remove(dtmf)

    def _tick(self, due: float) -> bool:
        """Fill this tick's slot: a digit first, else a file, else the source. Returning
        False when nothing is left unregisters, so idle endpoints cost no timer."""
        timestamp = (self._timestamp_base
                     + round((due - self._origin) * CLOCK_RATE)) & 0xFFFFFFFF
        while self._dtmf:
            job = self._dtmf[0]
            item = next(job.ticks, _DONE)
            if item is _DONE:
                self._dtmf.popleft()
                if not job.deferred.called:
                    job.deferred.callback(True)
                continue
            self._talking = False
            if item is not None:
                assert isinstance(item, EventPacket)
                if item.marker:
                    job.timestamp = timestamp  # all packets of one event share its start
                    job.ending = False
                elif item.end and not job.ending:
                    job.ending = True
                    job.digits_left -= 1
                event_pt = self.types.telephone_event
                if event_pt is not None:
                    self._send(event_pt, job.timestamp, item.payload, item.marker)
                if job.digits_left == 0 and not job.deferred.called:
                    job.deferred.callback(True)
            return True
        frame: bytes | None = None
        waiting = False  # a source with nothing this tick (an echo): unregister until fed
        finished: _PlayJob | None = None
        if self._plays:
            job_ = self._plays[0]
            step = self.samples_per_packet
            frame = job_.encoded[job_.offset:job_.offset + step]
            job_.offset += step
            if job_.offset >= len(job_.encoded):
                finished = self._plays.popleft()
        elif self.source is not None:
            next_payload = self._next_payload
            if next_payload is not None:
                frame = next_payload(self.types.codec)
                if not frame:
                    self.set_source(None)
            else:
                linear = self.source.next_frame()
                if linear == b"":
                    self.set_source(None)
                elif linear is None:
                    waiting = True
                elif linear:
                    frame = self.types.codec.encode(linear)
        if frame:
            self._send(self._audio_pt, timestamp, frame, not self._talking)
            self._talking = True
        else:
            self._talking = False
        if finished is not None:
            finished.deferred.callback(True)
        if self._plays or self._dtmf or (self.source is not None and not waiting):
            return True
        self._key = None
        return False


_DONE: Any = object()


def _chain(first: EventPacket | None,
           rest: Iterator[EventPacket | None]) -> Iterator[EventPacket | None]:
    yield first
    yield from rest


def _no_send(payload_type: int, timestamp: int, payload: bytes, marker: bool) -> None:
    """What a closed SendJobs sends with: nothing."""
