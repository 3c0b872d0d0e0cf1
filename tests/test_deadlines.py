"""`Deadlines`: every call's deadline of an instance on one DelayedCall, in order."""

from __future__ import annotations

from twisted.internet.task import Clock

from twsip.sip.deadlines import Deadlines
from twsip.testing import LoggedFailures


def test_deadlines_share_one_delayed_call_and_keep_order() -> None:
    clock = Clock()
    fired: list[str] = []
    deadlines: Deadlines[str] = Deadlines(clock, fired.append)
    deadlines.set("a", 10)
    deadlines.set("b", 10)
    deadlines.set("c", 5)
    deadlines.set("d", 30)
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(1)
    deadlines.set("a", 10)  # reset: now due at 11
    deadlines.discard("d")
    clock.advance(4)
    assert fired == ["c"]
    clock.advance(5)
    assert fired == ["c", "b"]
    clock.advance(1)
    assert fired == ["c", "b", "a"]
    assert len(deadlines) == 0
    clock.advance(100)
    assert clock.getDelayedCalls() == []
    deadlines.set("e", 1)
    deadlines.close()
    assert clock.getDelayedCalls() == [] and len(deadlines) == 0


def test_deadlines_survive_a_failing_callback() -> None:
    clock = Clock()
    seen: list[str] = []

    def expired(key: str) -> None:
        seen.append(key)
        if key == "x":
            raise RuntimeError("boom")

    deadlines: Deadlines[str] = Deadlines(clock, expired)
    deadlines.set("x", 1)
    deadlines.set("y", 1)
    with LoggedFailures() as failures:
        clock.advance(1)
    assert seen == ["x", "y"] and len(failures.events) == 1
