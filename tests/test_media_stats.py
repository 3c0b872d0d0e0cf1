"""RFC 3550 receive statistics on crafted arrivals: loss and expected across a sequence
wrap-around, duplicates, restarts, probation, and A.8's interarrival jitter arithmetic."""

from __future__ import annotations

import pytest

from twsip.media.stats import ReceiveStats


def feed(stats: ReceiveStats, sequences, *, ts0: int = 0, jitter_of=lambda i: 0.0,
         timed: bool = True) -> None:
    for i, seq in enumerate(sequences):
        stats.update(seq & 0xFFFF, (ts0 + 160 * i) & 0xFFFFFFFF, 10.0 + 0.02 * i + jitter_of(i),
                     0, 160, timed=timed)


def test_clean_stream_across_wrap_around() -> None:
    stats = ReceiveStats(1)
    feed(stats, range(65500, 65600), ts0=0xFFFFFF00)  # sequence and timestamp both wrap
    snap = stats.snapshot()
    assert (snap.packets, snap.octets, snap.expected, snap.lost) == (100, 16000, 100, 0)
    assert snap.highest_sequence == 65536 + (65599 - 65536)
    assert snap.jitter == pytest.approx(0.0, abs=1e-6)
    assert snap.payload_types == (0,)
    assert (snap.first_arrival, snap.last_arrival) == (10.0, pytest.approx(10.0 + 0.02 * 99))
    assert snap.as_dict()["lost"] == 0


def test_losses_counted_across_wrap() -> None:
    stats = ReceiveStats(1)
    sequences = [s for s in range(65530, 65560) if s % 7]  # every 7th missing
    feed(stats, sequences)
    missing = sum(1 for s in range(65530, 65560) if s % 7 == 0)
    snap = stats.snapshot()
    # A missing sequence number before the first or after the last is not known to be lost
    assert snap.expected == sequences[-1] - sequences[0] + 1
    assert snap.lost == missing - (65530 % 7 == 0) - (65559 % 7 == 0)
    assert snap.fraction_lost == pytest.approx(snap.lost / snap.expected)


def test_duplicates_make_loss_negative_as_rfc_says() -> None:
    stats = ReceiveStats(1)
    feed(stats, [1, 2, 2, 3, 3, 4])
    snap = stats.snapshot()
    assert (snap.packets, snap.expected, snap.lost, snap.fraction_lost) == (6, 4, -2, 0.0)


def test_reordered_packet_is_not_a_wrap() -> None:
    stats = ReceiveStats(1)
    feed(stats, [10, 11, 13, 12, 14])
    assert (stats.expected, stats.lost, stats.cycles) == (5, 0, 0)


def test_stray_jump_ignored_confirmed_jump_restarts() -> None:
    stats = ReceiveStats(1)
    feed(stats, [100, 101, 102, 30000, 103, 104])  # one stray packet far away
    assert (stats.expected, stats.lost, stats.restarts) == (5, 0, 0)
    stats.update(40000, 0, 20.0, 0, 160)
    stats.update(40001, 160, 20.02, 0, 160)  # confirmed: the source restarted
    assert stats.restarts == 1
    assert (stats.expected, stats.received, stats.lost) == (1, 1, 0)  # counted from 40001
    assert stats.packets == 8


def test_probation_counts_from_the_second_sequential_packet() -> None:
    stats = ReceiveStats(1, min_sequential=2)
    stats.update(500, 0, 0.0, 0, 160)
    assert (stats.expected, stats.lost) == (0, 0)
    stats.update(900, 0, 0.02, 0, 160)  # not sequential: probation starts over
    stats.update(901, 0, 0.04, 0, 160)
    stats.update(903, 0, 0.06, 0, 160)
    assert (stats.expected, stats.received, stats.lost) == (3, 2, 1)


def test_jitter_recurrence_of_rfc3550_a8() -> None:
    """Every second packet 1 ms late: |D| = 8 units (1 ms at 8000 Hz) on every transition,
    so J_n = 8 * (1 - (15/16)^n) after n transitions."""
    stats = ReceiveStats(1)
    feed(stats, range(50), jitter_of=lambda i: 0.001 * (i % 2))
    expected = 8 * (1 - (15 / 16) ** 49)
    assert stats.jitter == pytest.approx(expected, rel=1e-9)
    assert stats.snapshot().jitter_ms == pytest.approx(expected / 8)


def test_jitter_of_a_single_late_packet() -> None:
    stats = ReceiveStats(1)
    feed(stats, range(4), jitter_of=lambda i: 0.005 if i == 2 else 0.0)
    # D = +40 then -40: J = 40/16 = 2.5, then J += (40 - 2.5)/16
    assert stats.jitter == pytest.approx(2.5 + (40 - 2.5) / 16)


def test_untimed_packets_leave_jitter_alone() -> None:
    stats = ReceiveStats(1)
    for i in range(10):  # telephone events: one timestamp, arrivals 20 ms apart
        stats.update(i, 5000, 1.0 + 0.02 * i, 101, 4, timed=False)
    assert stats.jitter == 0.0 and stats.snapshot().payload_types == (101,)
    assert (stats.expected, stats.lost) == (10, 0)


def test_nothing_received() -> None:
    snap = ReceiveStats(9).snapshot()
    assert (snap.packets, snap.expected, snap.lost, snap.first_arrival) == (0, 0, 0, None)


@pytest.mark.parametrize("seed", range(5))
def test_the_inline_in_order_path_matches_appendix_a1(seed: int) -> None:
    """`update` handles the every-packet case (settled, a step under MAX_DROPOUT) without
    calling A.1's update_seq; forcing the general path each time must give the same
    figures for any mix of order, loss, duplicates, wrap-arounds and restarts."""
    import random

    rng = random.Random(seed)
    fast, general = ReceiveStats(1), ReceiveStats(1)
    sequence, arrival = rng.randrange(65536), 5.0
    for n in range(3000):
        roll = rng.random()
        if roll < 0.05:
            step = rng.choice([-1, -2, 0, 3, 50])  # reordered, duplicate, small gaps
        elif roll < 0.06:
            step = rng.choice([20000, 40000])  # a stray jump; sometimes confirmed below
        else:
            step = 1
        sequence = (sequence + step) & 0xFFFF
        arrival += 0.02 + rng.uniform(-0.002, 0.002)
        for stats in (fast, general):
            if stats is general:
                stats._settled = False  # always A.1's update_seq
            stats.update(sequence, (160 * n) & 0xFFFFFFFF, arrival, n % 3, 160)
    assert fast.snapshot() == general.snapshot()
    assert fast.snapshot().payload_types == (0, 1, 2)
