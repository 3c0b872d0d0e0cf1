"""Pacing: one timer per ptime tick drives every playing RTP stream of a reactor.

One DelayedCall per stream would make 1000 calls cost 50,000 timer reschedules a second and
let every stream drift on its own. Here a `PacingScheduler` owns at most one DelayedCall;
streams register a callback, and on each tick every registered stream sends its next packet.

Tick n is due at ``start + n * ptime``, computed by multiplication from the clock's
`seconds()` at start, never by adding up delays: a late wake-up delays the packets of that
tick only, the next tick is aimed at its own exact time again, so timing errors never
accumulate. If the reactor wakes up late by more than one ptime (a busy reactor, or a test
`Clock` advanced in big steps), every tick that is due runs, each with its own due time, so
no packet is skipped and the packet count matches the elapsed time exactly.

When the last stream leaves, the DelayedCall is cancelled: an idle scheduler holds no timer,
so cleanup leaves none behind. `scheduler_for(clock)` returns the one scheduler of a reactor
(tests pass a `twisted.internet.task.Clock`).
"""

from __future__ import annotations

import weakref
from typing import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["PacingScheduler", "TickCallback", "scheduler_for", "PTIME"]

PTIME = 0.020
log = Logger()

# Called with the tick's due time (clock seconds); returns False when the stream is done.
TickCallback = Callable[[float], bool]

_schedulers: weakref.WeakKeyDictionary[IReactorTime, dict[float, PacingScheduler]] = \
    weakref.WeakKeyDictionary()


def scheduler_for(clock: IReactorTime, ptime: float = PTIME) -> PacingScheduler:
    """The shared scheduler of `clock` for this ptime, created on first use."""
    per_clock = _schedulers.setdefault(clock, {})
    scheduler = per_clock.get(ptime)
    if scheduler is None:
        scheduler = per_clock[ptime] = PacingScheduler(clock, ptime)
    return scheduler


class PacingScheduler:
    """Runs registered stream callbacks once per ptime tick, on one DelayedCall.

    `add(callback)` registers a stream: from the next tick on, `callback(due)` is called once
    per tick with that tick's due time (the ideal send time, clock seconds) until it returns
    False or `remove` is called. A stream added while others play joins on the next tick of
    the running schedule; one added to an idle scheduler starts a new schedule at once.
    """

    def __init__(self, clock: IReactorTime, ptime: float = PTIME, *,
                 tolerance: float = 1e-6) -> None:
        if ptime <= 0:
            raise ValueError(f"ptime must be positive, not {ptime}")
        self.clock = clock
        self.ptime = ptime
        self.tolerance = tolerance
        self._streams: dict[int, TickCallback] = {}
        self._next_key = 0
        self._call: IDelayedCall | None = None
        self._running = False
        self._start = 0.0
        self._tick = 0
        self.tick_time: float | None = None  # due time of the tick being run, else None
        self.ticks = 0  # ticks run since creation, for statistics
        self.late_wakeups = 0  # firings that found more than one tick due

    def __len__(self) -> int:
        """The number of registered streams."""
        return len(self._streams)

    @property
    def active(self) -> bool:
        """True while a schedule runs (a DelayedCall is pending or a tick is being run)."""
        return self._running

    def add(self, callback: TickCallback) -> int:
        """Register a stream; returns the key `remove` takes."""
        key = self._next_key
        self._next_key += 1
        self._streams[key] = callback
        if not self._running:
            self._running = True
            self._start = self.clock.seconds()
            self._tick = 0
            self._call = self.clock.callLater(0, self._run)
        return key

    def remove(self, key: int) -> None:
        """Unregister a stream (unknown keys are ignored); the timer stops with the last."""
        self._streams.pop(key, None)
        if not self._streams and self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
            self._running = False

    def stop(self) -> None:
        """Unregister every stream and cancel the timer."""
        self._streams.clear()
        self.remove(-1)

    def _run(self) -> None:
        self._call = None
        now = self.clock.seconds()
        streams = self._streams
        ran = 0
        due = self._start + self._tick * self.ptime
        while streams and due <= now + self.tolerance:
            self.tick_time = due
            for key, callback in list(streams.items()):
                try:
                    keep = callback(due)
                except Exception:
                    log.failure("media stream {key} failed on a tick; it stops", key=key)
                    keep = False
                if not keep:
                    streams.pop(key, None)
            self._tick += 1
            ran += 1
            due = self._start + self._tick * self.ptime
        self.tick_time = None
        self.ticks += ran
        if ran > 1:
            self.late_wakeups += 1
        if streams:
            # Aim `tolerance` early: a clock that adds up float steps (a test Clock advanced
            # by 0.02 at a time) lands a hair below k * ptime and would otherwise fire a
            # whole step late; a wake-up up to 1 us early is taken as on time.
            self._call = self.clock.callLater(max(0.0, due - now - self.tolerance), self._run)
        else:
            self._running = False
