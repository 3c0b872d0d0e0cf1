"""The pacing scheduler on a Clock: exact packet counts, ticks at start + n * ptime with no
drift over 10,000 ticks even when the clock jumps irregularly, one DelayedCall at most, and
none once nothing plays."""

from __future__ import annotations

import random

import pytest
from twisted.internet.task import Clock

from twsip.media.pacing import PacingScheduler, scheduler_for

PTIME = 0.02


class Stream:
    """Sends `count` packets (None: forever), recording (clock time, due time) per packet."""

    def __init__(self, clock: Clock, count: int | None, check) -> None:
        self.clock = clock
        self.count = count
        self.check = check
        self.sends: list[tuple[float, float]] = []

    def __call__(self, due: float) -> bool:
        self.check()
        self.sends.append((self.clock.seconds(), due))
        return self.count is None or len(self.sends) < self.count


def run_irregular(clock: Clock, until, check, seed: int = 1) -> float:
    """Advance in random steps of 0.1..47 ms until `until()`; returns the largest step."""
    rng = random.Random(seed)
    largest = 0.0
    while not until():
        step = rng.uniform(0.0001, 0.047)
        largest = max(largest, step)
        clock.advance(step)
        check()
    return largest


def test_n_streams_m_seconds_exact_counts_and_one_timer() -> None:
    clock = Clock()
    clock.advance(1000.5)  # an arbitrary origin
    scheduler = PacingScheduler(clock, PTIME)
    max_calls = []

    def check() -> None:
        pending = [c for c in clock.getDelayedCalls() if c.active()]
        max_calls.append(len(pending))
        assert len(pending) <= 1

    streams = [Stream(clock, 3 * 50, check) for _ in range(20)]  # 20 streams, 3 s each
    start = clock.seconds()
    for stream in streams:
        scheduler.add(stream)
    largest = run_irregular(clock, lambda: not scheduler.active, check)
    for stream in streams:
        assert len(stream.sends) == 150
        dues = [due for _, due in stream.sends]
        assert dues == [start + n * PTIME for n in range(150)]
        assert all(0 <= now - due < largest + 1e-9 for now, due in stream.sends)
    assert clock.getDelayedCalls() == [] and len(scheduler) == 0
    assert max(max_calls) == 1


def test_no_drift_after_10000_ticks_with_irregular_steps() -> None:
    clock = Clock()
    scheduler = PacingScheduler(clock, PTIME)

    def check() -> None:
        assert len(clock.getDelayedCalls()) <= 1

    stream = Stream(clock, None, check)
    key = scheduler.add(stream)
    largest = run_irregular(clock, lambda: len(stream.sends) >= 10_001, check, seed=5)
    assert scheduler.late_wakeups > 0  # the steps did skip ticks, which were caught up
    now, due = stream.sends[10_000]
    assert due == pytest.approx(10_000 * PTIME, abs=1e-9)
    assert 0 <= now - due < largest + 1e-9  # late by less than one clock step, not drifted
    # Every tick's lateness is bounded by a step: errors never accumulate.
    assert max(now - due for now, due in stream.sends) < largest + 1e-9
    # And what the clock says is what was sent: all ticks due by now ran, no more.
    assert len(stream.sends) == int(clock.seconds() / PTIME + 1e-6) + 1
    scheduler.remove(key)
    assert clock.getDelayedCalls() == [] and not scheduler.active


def test_regular_steps_send_on_time() -> None:
    clock = Clock()
    scheduler = PacingScheduler(clock, PTIME)
    stream = Stream(clock, 100, lambda: None)
    scheduler.add(stream)
    clock.advance(0)
    for _ in range(99):
        clock.advance(PTIME)
    assert len(stream.sends) == 100
    assert max(abs(now - due) for now, due in stream.sends) < 1e-9
    assert scheduler.late_wakeups == 0 and not scheduler.active


def test_late_joiner_starts_on_next_tick_of_running_schedule() -> None:
    clock = Clock()
    scheduler = PacingScheduler(clock, PTIME)
    first = Stream(clock, None, lambda: None)
    scheduler.add(first)
    clock.advance(0)
    clock.advance(0.030)  # tick 1 (0.02) ran late; tick 2 due at 0.04
    second = Stream(clock, 2, lambda: None)
    scheduler.add(second)
    clock.advance(0.010)
    clock.advance(0.020)
    assert [due for _, due in second.sends] == [pytest.approx(0.04), pytest.approx(0.06)]
    assert len(clock.getDelayedCalls()) == 1
    scheduler.stop()
    assert clock.getDelayedCalls() == [] and len(scheduler) == 0


def test_failing_stream_is_dropped_others_go_on() -> None:
    clock = Clock()
    scheduler = PacingScheduler(clock, PTIME)
    good = Stream(clock, 3, lambda: None)

    def bad(due: float) -> bool:
        raise RuntimeError("boom")

    scheduler.add(bad)
    scheduler.add(good)
    for _ in range(5):
        clock.advance(PTIME)
    assert len(good.sends) == 3 and len(scheduler) == 0
    assert clock.getDelayedCalls() == []


def test_restart_after_idle_and_one_scheduler_per_clock() -> None:
    clock = Clock()
    assert scheduler_for(clock) is scheduler_for(clock)
    assert scheduler_for(clock) is not scheduler_for(Clock())
    scheduler = scheduler_for(clock)
    stream = Stream(clock, 1, lambda: None)
    scheduler.add(stream)
    clock.advance(0)
    assert len(stream.sends) == 1 and clock.getDelayedCalls() == []
    clock.advance(5.003)
    again = Stream(clock, 2, lambda: None)
    scheduler.add(again)
    clock.advance(0)
    clock.advance(PTIME)
    assert [due for _, due in again.sends] == [pytest.approx(5.003), pytest.approx(5.023)]
    assert clock.getDelayedCalls() == []


def test_phases_spread_streams_each_on_an_exact_ptime_grid() -> None:
    """The shared scheduler's phases: 100 streams started together go out in 20 bursts of
    5, one phase (1 ms) apart, and every stream still sends exactly every 20 ms: its n-th
    due time is its own start + n * ptime, with irregular clock steps and no drift."""
    clock = Clock()
    clock.advance(17.25)
    scheduler = PacingScheduler(clock, PTIME, phases=20)

    def check() -> None:
        assert len(clock.getDelayedCalls()) <= 1

    streams = [Stream(clock, 250, check) for _ in range(100)]  # 5 s each
    start = clock.seconds()
    for stream in streams:
        scheduler.add(stream)
    assert scheduler.phase_sizes() == [5] * 20
    largest = run_irregular(clock, lambda: not scheduler.active, check, seed=3)
    firsts = sorted({stream.sends[0][1] for stream in streams})
    assert firsts == [pytest.approx(start + k * 0.001, abs=1e-9) for k in range(20)]
    for stream in streams:
        assert len(stream.sends) == 250
        first = stream.sends[0][1]
        dues = [due for _, due in stream.sends]
        assert dues == [pytest.approx(first + n * PTIME, abs=1e-9) for n in range(250)]
        # Never early beyond the scheduler's 1 us tolerance, never later than a clock step.
        assert all(-1e-6 <= now - due < largest + 1e-9 for now, due in stream.sends)
    assert clock.getDelayedCalls() == [] and len(scheduler) == 0


def test_phases_on_regular_steps_send_on_time_without_catching_up() -> None:
    clock = Clock()
    scheduler = PacingScheduler(clock, PTIME, phases=4)  # 5 ms apart
    streams = [Stream(clock, 10, lambda: None) for _ in range(8)]
    for stream in streams:
        scheduler.add(stream)
    clock.advance(0)
    for _ in range(200):
        clock.advance(0.005 / 4)
    for stream in streams:
        assert len(stream.sends) == 10
        assert max(now - due for now, due in stream.sends) < 1e-9
        gaps = [b[1] - a[1] for a, b in zip(stream.sends, stream.sends[1:])]
        assert gaps == [pytest.approx(PTIME, abs=1e-12)] * 9
    assert scheduler.late_wakeups == 0 and not scheduler.active


def test_a_joiner_in_an_empty_phase_wakes_the_sleeping_timer_early() -> None:
    """With one stream in phase 0 the timer sleeps a whole ptime; a second stream given the
    empty phase 1 must not wait for that wake-up: its first packet is due 1 ms later."""
    clock = Clock()
    scheduler = PacingScheduler(clock, PTIME, phases=20)
    first = Stream(clock, None, lambda: None)
    scheduler.add(first)
    clock.advance(0)  # phase 0 of period 0 ran; the timer now aims at 0.020
    second = Stream(clock, None, lambda: None)
    scheduler.add(second)
    assert scheduler.phase_sizes()[:2] == [1, 1]
    clock.advance(0.0005)
    clock.advance(0.0005)
    assert [due for _, due in second.sends] == [pytest.approx(0.001)]
    clock.advance(0.019)
    assert [due for _, due in first.sends] == [0.0, pytest.approx(0.020)]
    clock.advance(0.001)
    assert [due for _, due in second.sends] == [pytest.approx(0.001), pytest.approx(0.021)]
    assert len(clock.getDelayedCalls()) == 1
    scheduler.stop()
    assert clock.getDelayedCalls() == [] and not scheduler.active


def test_leaving_and_joining_keep_phases_balanced() -> None:
    clock = Clock()
    scheduler = PacingScheduler(clock, PTIME, phases=5)
    keys = [scheduler.add(Stream(clock, None, lambda: None)) for _ in range(10)]
    clock.advance(0)
    assert scheduler.phase_sizes() == [2] * 5
    for key in keys[:2]:  # both of phase 0 leave (the first and the sixth join phase 0, 1)
        scheduler.remove(key)
    for _ in range(3):
        scheduler.add(Stream(clock, None, lambda: None))
    assert sorted(scheduler.phase_sizes()) == [2, 2, 2, 2, 3]
    assert len(scheduler) == 11
    scheduler.stop()
    assert clock.getDelayedCalls() == []


def test_the_shared_scheduler_has_phases_and_bad_phases_are_refused() -> None:
    assert scheduler_for(Clock()).phases > 1
    with pytest.raises(ValueError):
        PacingScheduler(Clock(), PTIME, phases=0)
