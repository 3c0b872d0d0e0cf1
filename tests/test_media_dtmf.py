"""RFC 4733 DTMF: digit validation, the sender's packet layout, and a detector that reports
each digit once, in order, whatever was lost, duplicated or reordered."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twsip.media.dtmf import (
    DTMF_EVENTS,
    DtmfDetector,
    DtmfDigit,
    DtmfError,
    decode_event,
    dtmf_ticks,
    encode_event,
    event_packets,
    validate_digits,
)

SSRC = 0x11223344


# -- validation ------------------------------------------------------------------------------
def test_event_codes() -> None:
    assert [DTMF_EVENTS[d] for d in "0123456789*#ABCD"] == list(range(16))


@pytest.mark.parametrize("digits, normal", [("0123456789", "0123456789"), ("*#", "*#"),
                                            ("abcd", "ABCD"), ("1a#D", "1A#D")])
def test_valid_digits(digits: str, normal: str) -> None:
    assert validate_digits(digits) == normal


@pytest.mark.parametrize("digits, shown", [
    ("12 3", "' '"), ("1E", "'E'"), ("1,2", "','"), ("\u0661\u0662", "'\u0661'"),
    ("\u00b2", "'\u00b2'"), ("p", "'p'"),
])
def test_invalid_digits_named(digits: str, shown: str) -> None:
    with pytest.raises(DtmfError, match="only 0-9, \\*, #, A-D") as caught:
        validate_digits(digits)
    assert shown in str(caught.value)


def test_empty_digits() -> None:
    with pytest.raises(DtmfError, match="no DTMF digits"):
        validate_digits("")
    assert validate_digits("", allow_empty=True) == ""


# -- sender ----------------------------------------------------------------------------------
def test_payload_layout() -> None:
    assert encode_event(11, True, 10, 800) == bytes([11, 0x80 | 10, 0x03, 0x20])
    assert encode_event(5, False, 63, 160) == bytes([5, 63, 0, 160])
    event = decode_event(bytes([11, 0x80 | 10, 0x03, 0x20]))
    assert (event.event, event.end, event.volume, event.duration) == (11, True, 10, 800)


def test_one_digit_packets_per_rfc4733() -> None:
    packets = list(event_packets("5", 100, volume=10))
    assert [p.duration for p in packets] == [160, 320, 480, 640, 800, 800, 800]
    assert [p.marker for p in packets] == [True] + [False] * 6  # marker: first packet only
    assert [p.end for p in packets] == [False] * 4 + [True] * 3  # end packet three times
    assert all(decode_event(p.payload).event == 5 and decode_event(p.payload).volume == 10
               for p in packets)
    assert packets[4].payload == packets[5].payload == packets[6].payload


def test_short_digit_is_end_packets_only() -> None:
    packets = list(event_packets("#", 15))
    assert [(p.marker, p.end, p.duration) for p in packets] == [
        (True, True, 120), (False, True, 120), (False, True, 120)]


def test_digit_string_ticks_and_gap() -> None:
    ticks = list(dtmf_ticks("1a", interval_ms=100, duration_ms=100))
    # digit 1: 7 packets; the next digit starts 5 (tone) + 5 (gap) ticks after the first
    assert [t is None for t in ticks] == [False] * 7 + [True] * 3 + [False] * 7
    assert [t.digit for t in ticks if t is not None] == ["1"] * 7 + ["A"] * 7
    assert list(dtmf_ticks("9", interval_ms=500)) == list(event_packets("9"))
    tight = list(dtmf_ticks("12", interval_ms=0))
    assert tight[7] is not None and tight[7].marker  # never before the end packets are out


@pytest.mark.parametrize("kwargs", [dict(duration_ms=5), dict(duration_ms=9000),
                                    dict(interval_ms=-1)])
def test_bad_timing_refused(kwargs: dict) -> None:
    with pytest.raises(DtmfError):
        list(dtmf_ticks("1", **kwargs))


# -- detector --------------------------------------------------------------------------------
def stream(digits: str, start: int = 1000) -> list[tuple[int, int, bytes, bool]]:
    """(digit index, RTP timestamp, payload, marker) of each packet a sender puts out."""
    out = []
    digit_index = -1
    event_ts = start
    for tick, item in enumerate(dtmf_ticks(digits, interval_ms=100, duration_ms=100)):
        if item is not None:
            if item.marker:  # a new event: its timestamp is the tick it starts on
                event_ts = start + 160 * tick
                digit_index += 1
            out.append((digit_index, event_ts, item.payload, item.marker))
    return out


def detect(packets, flush: bool = True) -> list[DtmfDigit]:
    found: list[DtmfDigit] = []
    detector = DtmfDetector(found.append)
    for _digit, timestamp, payload, _marker in packets:
        detector.feed(SSRC, timestamp, payload)
    if flush:
        detector.flush()
    return found


def test_every_digit_once_with_its_duration() -> None:
    found = detect(stream("0123456789*#ABCD"), flush=False)
    assert "".join(d.digit for d in found) == "0123456789*#ABCD"
    assert all(d.duration == 800 and d.duration_ms == 100 and d.ended for d in found)
    assert len({d.timestamp for d in found}) == 16


def test_three_end_packets_count_once_and_repeated_digit_twice() -> None:
    packets = stream("55")
    ends_only = [p for p in packets if decode_event(p[2]).end]
    assert [d.digit for d in detect(ends_only)] == ["5", "5"]
    assert [d.digit for d in detect(packets + packets)] == ["5", "5"]  # replayed: nothing new


def test_duplicates_and_reordering_within_digits() -> None:
    rng = random.Random(7)
    packets = stream("123")
    shuffled = []
    for index in range(3):
        mine = [p for p in packets if p[0] == index] * 2
        rng.shuffle(mine)
        shuffled += mine
    found = detect(shuffled)
    assert [d.digit for d in found] == ["1", "2", "3"]
    assert all(d.duration == 800 for d in found)


def test_event_older_than_a_seen_one_is_not_reported_out_of_order() -> None:
    packets = stream("12")
    late_first = [p for p in packets if p[0] == 1] + [p for p in packets if p[0] == 0]
    assert [d.digit for d in detect(late_first)] == ["2"]


def test_digit_without_end_packets_is_reported_by_next_event_or_flush() -> None:
    packets = [p for p in stream("78") if not decode_event(p[2]).end]
    found = detect(packets, flush=False)
    assert [(d.digit, d.ended, d.duration) for d in found] == [("7", False, 640)]
    found = detect(packets, flush=True)
    assert [(d.digit, d.ended) for d in found] == [("7", False), ("8", False)]


DIGITS = "0123456789*#ABCD"


@given(st.lists(st.booleans(), min_size=7 * len(DIGITS), max_size=7 * len(DIGITS)))
def test_any_loss_pattern_reports_each_surviving_digit_once_in_order(keep: list[bool]) -> None:
    packets = stream(DIGITS)
    assert len(packets) == len(keep)
    kept = [p for p, k in zip(packets, keep) if k]
    expected = [DIGITS[i] for i in range(len(DIGITS)) if any(p[0] == i for p in kept)]
    found = detect(kept)
    assert [d.digit for d in found] == expected
    for digit in found:
        index = DIGITS.index(digit.digit, 0)
        mine = [decode_event(p[2]) for p in kept if p[0] == index]
        assert digit.duration == max(e.duration for e in mine)
        assert digit.ended == any(e.end for e in mine)


@given(st.data())
def test_first_packets_lost(data: st.DataObject) -> None:
    """The packets carrying the marker (and possibly more after them) never arrive."""
    packets = stream("147#")
    kept = []
    for index in range(4):
        mine = [p for p in packets if p[0] == index]
        lost = data.draw(st.integers(1, len(mine) - 1))
        kept += mine[lost:]
    assert not any(p[3] for p in kept)
    assert [d.digit for d in detect(kept)] == list("147#")


def test_other_events_and_short_payloads_ignored() -> None:
    found = detect([(0, 5, encode_event(16, True, 10, 800), True), (0, 6, b"\x01\x02", True)])
    assert found == []
