"""Pacing: one timer drives every playing RTP stream of a reactor, each on its own 20 ms grid.

One DelayedCall per stream would make 1000 calls cost 50,000 timer reschedules a second and
let every stream drift on its own. Here a `PacingScheduler` owns at most one DelayedCall;
streams register a callback, which is called once per ptime with that packet's due time.

Phases. Sending 1000 packets in one burst every 20 ms makes the last of them late by the
time the other 999 took (tens of milliseconds in Python), and fills the receivers' socket
buffers in one go. So the ptime is cut into `phases` equal phases (the reactor's shared
scheduler uses `SHARED_PHASES`, 2 ms apart at 20 ms), and each stream is given one phase
for as long as it stays registered: the least crowded one, so 1000 streams become 10
bursts of 100. A stream still sends exactly once per ptime; only where in the ptime its
packets fall differs from stream to stream. A bare `PacingScheduler` has one phase: all
its streams share each tick, as before phases existed.

Tick n (a count of phases) is due at ``start + (n // phases) * ptime + (n % phases) *
ptime / phases``, computed by multiplication from the clock's `seconds()` at start, never
by adding up delays: so one stream's packets are exactly one ptime apart, a late wake-up
delays the packets of that tick only, the next tick is aimed at its own exact time again,
and timing errors never accumulate. If the reactor wakes up late by more than a phase (a
busy reactor, or a test `Clock` advanced in big steps), every tick that is due runs, each
with its own due time, so no packet is skipped and the packet count matches the elapsed
time exactly. Phases nobody uses are skipped without a wake-up.

When the last stream leaves, the DelayedCall is cancelled: an idle scheduler holds no timer,
so cleanup leaves none behind. `scheduler_for(clock)` returns the one scheduler of a reactor
(tests pass a `twisted.internet.task.Clock`).
"""

from __future__ import annotations

import weakref
from typing import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["PacingScheduler", "TickCallback", "scheduler_for", "PTIME", "SHARED_PHASES"]

PTIME = 0.020
# Phases per ptime of the reactor's shared scheduler: 10 is 2 ms apart at 20 ms. Finer is
# not better: the reactor's timer wakes up to 1 ms late (epoll waits in whole
# milliseconds), so 1 ms phases mostly ran two at a time anyway, and every wake-up costs
# CPU of its own (60-180 us measured on the benchmark VM): at 250 streams 20 phases took
# 0.27 of a core, 10 phases 0.23-0.26, 5 phases 0.23, one phase 0.17 (p99 1.4, 1.6, 2.1,
# 5.4 ms).
SHARED_PHASES = 10
log = Logger()

# Called with the packet's due time (clock seconds); returns False when the stream is done.
TickCallback = Callable[[float], bool]

_schedulers: weakref.WeakKeyDictionary[IReactorTime, dict[float, PacingScheduler]] = \
    weakref.WeakKeyDictionary()


def scheduler_for(clock: IReactorTime, ptime: float = PTIME) -> PacingScheduler:
    """The shared scheduler of `clock` for this ptime (with `SHARED_PHASES` phases),
    created on first use."""
    per_clock = _schedulers.setdefault(clock, {})
    scheduler = per_clock.get(ptime)
    if scheduler is None:
        scheduler = per_clock[ptime] = PacingScheduler(clock, ptime, phases=SHARED_PHASES)
    return scheduler


class PacingScheduler:
    """Runs registered stream callbacks once per ptime each, on one DelayedCall.

    `add(callback)` registers a stream: `callback(due)` is then called once per ptime with
    that packet's due time (the ideal send time, clock seconds) until it returns False or
    `remove` is called. A stream added to an idle scheduler starts a new schedule at once
    (phase 0); one added while others play joins the least crowded phase (the soonest of
    equally crowded ones) at its next tick, at most one ptime later.
    """

    def __init__(self, clock: IReactorTime, ptime: float = PTIME, *, phases: int = 1,
                 tolerance: float = 1e-6) -> None:
        if ptime <= 0:
            raise ValueError(f"ptime must be positive, not {ptime}")
        if phases < 1:
            raise ValueError(f"phases must be at least 1, not {phases}")
        self.clock = clock
        self.ptime = ptime
        self.phases = phases
        self.tolerance = tolerance
        self._step = ptime / phases
        self._slots: list[dict[int, TickCallback]] = [{} for _ in range(phases)]
        self._phase_of: dict[int, int] = {}  # key -> phase
        self._next_key = 0
        self._call: IDelayedCall | None = None
        self._wake_tick = 0  # the tick the pending DelayedCall is aimed at
        self._running = False
        self._start = 0.0
        self._tick = 0  # the next tick to run; every earlier one has run
        self.tick_time: float | None = None  # due time of the tick being run, else None
        self.ticks = 0  # ticks (of a phase with streams) run since creation, for statistics
        self.late_wakeups = 0  # firings that found more than one such tick due

    def __len__(self) -> int:
        """The number of registered streams."""
        return len(self._phase_of)

    @property
    def active(self) -> bool:
        """True while a schedule runs (a DelayedCall is pending or a tick is being run)."""
        return self._running

    def phase_sizes(self) -> list[int]:
        """How many streams each phase holds (for tests and statistics)."""
        return [len(slot) for slot in self._slots]

    def due_time(self, tick: int) -> float:
        """When tick `tick` of the running schedule is due (clock seconds)."""
        period, phase = divmod(tick, self.phases)
        return self._start + period * self.ptime + phase * self._step

    def add(self, callback: TickCallback) -> int:
        """Register a stream; returns the key `remove` takes."""
        key = self._next_key
        self._next_key += 1
        if not self._running:
            self._running = True
            self._start = self.clock.seconds()
            self._tick = 0
            self._phase_of[key] = 0
            self._slots[0][key] = callback
            self._wake_tick = 0
            self._call = self.clock.callLater(0, self._run)
            return key
        # The least crowded phase; among equals the one whose next tick comes first.
        slots = self._slots
        phases = self.phases
        first = self._tick
        best_tick = first
        best_size = len(slots[first % phases])
        for tick in range(first + 1, first + phases):
            size = len(slots[tick % phases])
            if size < best_size:
                best_tick, best_size = tick, size
        phase = best_tick % phases
        self._phase_of[key] = phase
        slots[phase][key] = callback
        call = self._call
        if call is not None and best_tick < self._wake_tick:
            # The timer sleeps past this stream's first tick (its phase was empty): wake
            # earlier. (While `_run` runs, `_call` is None and it aims the timer itself.)
            self._wake_tick = best_tick
            call.reset(max(0.0, self.due_time(best_tick) - self.clock.seconds()
                           - self.tolerance))
        return key

    def remove(self, key: int) -> None:
        """Unregister a stream (unknown keys are ignored); the timer stops with the last."""
        phase = self._phase_of.pop(key, None)
        if phase is not None:
            del self._slots[phase][key]
        if not self._phase_of and self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
            self._running = False

    def stop(self) -> None:
        """Unregister every stream and cancel the timer."""
        for slot in self._slots:
            slot.clear()
        self._phase_of.clear()
        self.remove(-1)

    def _run(self) -> None:
        self._call = None
        now = self.clock.seconds()
        limit = now + self.tolerance
        slots = self._slots
        phases = self.phases
        phase_of = self._phase_of
        ran = 0
        tick = self._tick
        due = self.due_time(tick)
        while phase_of and due <= limit:
            streams = slots[tick % phases]
            tick += 1
            self._tick = tick  # streams added by a callback start after this tick
            if streams:
                self.tick_time = due
                for key, callback in list(streams.items()):
                    try:
                        keep = callback(due)
                    except Exception:
                        log.failure("media stream {key} failed on a tick; it stops", key=key)
                        keep = False
                    if not keep and phase_of.pop(key, None) is not None:
                        del streams[key]
                ran += 1
            due = self.due_time(tick)
        self.tick_time = None
        self.ticks += ran
        if ran > 1:
            self.late_wakeups += 1
        if phase_of:
            while not slots[tick % phases]:  # sleep through phases nobody uses
                tick += 1
            self._wake_tick = tick
            # Aim `tolerance` early: a clock that adds up float steps (a test Clock advanced
            # by 0.02 at a time) lands a hair below k * ptime and would otherwise fire a
            # whole step late; a wake-up up to 1 us early is taken as on time.
            self._call = self.clock.callLater(
                max(0.0, self.due_time(tick) - now - self.tolerance), self._run)
        else:
            self._running = False
