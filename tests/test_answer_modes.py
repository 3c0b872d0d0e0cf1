"""Answer modes: how an auto-answering instance treats a call (busy, ring, delay, ...),
seen from a real caller on the in-memory network."""

from __future__ import annotations

import pytest

from twsip.sip.autoanswer import AnswerMode, parse_answer_mode
from twsip.sip.dialog import CallFailed
from twsip.testing import FakeNetwork


def call(net: FakeNetwork, mode, timeout: float | None = 32.0):
    caller = net.add_instance("100")
    callee = net.add_instance("200")
    caller.start_serving()
    callee.start_serving(auto_answer=mode)
    seen: list[tuple[str, str]] = []
    caller.observers.append(lambda e: seen.append((e.direction, e.summary)))
    d = caller.invite(callee.uri, timeout=timeout)
    return caller, callee, d, seen


def test_answer_is_the_default_and_true_means_it() -> None:
    assert parse_answer_mode("answer") == AnswerMode() == AnswerMode("answer", 200)
    net = FakeNetwork()
    _, _, d, seen = call(net, True)
    session = net.run(d)
    assert session.established
    assert [s for d_, s in seen if d_ == "in"][:3] == ["100 Trying", "180 Ringing", "200 OK"]
    net.run(session.hangup())


@pytest.mark.parametrize("mode, status, reason", [
    ("busy", 486, "Busy Here"),
    ("reject:603", 603, "Decline"),
    ("reject:480", 480, "Temporarily Unavailable"),
])
def test_busy_and_reject_send_their_status_with_its_standard_reason(mode, status,
                                                                    reason) -> None:
    net = FakeNetwork()
    _, callee, d, seen = call(net, mode)
    with pytest.raises(CallFailed) as failed:
        net.run(d)
    assert failed.value.status == status
    assert ("in", f"{status} {reason}") in seen
    assert ("in", "180 Ringing") not in seen
    assert not callee.calls


def test_ring_rings_until_the_caller_cancels() -> None:
    net = FakeNetwork()
    _, callee, d, seen = call(net, "ring", timeout=None)
    net.advance(60)  # far beyond any answer: still ringing
    assert not d.called
    assert ("in", "180 Ringing") in seen
    d.cancel()
    with pytest.raises(CallFailed) as failed:
        net.run(d)
    assert failed.value.status == 487
    net.advance(1)
    assert not callee.calls


def test_delay_answers_after_the_delay_and_not_before() -> None:
    net = FakeNetwork()
    _, _, d, seen = call(net, "delay:1500")
    net.advance(1.4)
    assert not d.called and ("in", "180 Ringing") in seen
    net.advance(0.2)
    session = net.run(d)
    assert session.established
    net.run(session.hangup())


def test_a_cancelled_delayed_call_leaves_no_timer_and_is_not_answered() -> None:
    net = FakeNetwork()
    _, callee, d, seen = call(net, "delay:5000")
    net.advance(1)
    d.cancel()
    with pytest.raises(CallFailed):
        net.run(d)
    assert not [c for c in net.clock.getDelayedCalls() if c.func.__name__ == "_delayed"]
    net.advance(10)
    assert ("in", "487 Request Terminated") in seen
    assert seen.count(("in", "200 OK")) == 1  # the CANCEL's, never the INVITE's
    assert not callee.calls


def test_silent_sends_100_and_nothing_more() -> None:
    net = FakeNetwork()
    _, callee, d, seen = call(net, "silent", timeout=40)
    with pytest.raises(CallFailed) as failed:
        net.run(d, timeout=60)
    assert failed.value.status == 408
    # the caller gave up (408) and CANCELled: the INVITE itself only ever got 100
    assert [s for d_, s in seen if d_ == "in"][0] == "100 Trying"
    assert ("in", "180 Ringing") not in seen
    assert ("out", "CANCEL") in seen


def test_cleanup_ends_a_ringing_call_and_its_delay_timer() -> None:
    net = FakeNetwork()
    caller, callee, d, _ = call(net, "delay:10000")
    net.advance(0.5)
    d.addErrback(lambda f: None)
    net.run(callee.cleanup())
    net.run(caller.cleanup())
    assert not [c for c in net.clock.getDelayedCalls() if c.func.__name__ == "_delayed"]


@pytest.mark.parametrize("text, message", [
    ("bogus", "unknown answer mode 'bogus'; one of: answer, busy, reject:CODE"),
    ("reject:200", "reject needs a status from 400 to 699"),
    ("reject:4x6", "reject needs a status from 400 to 699"),
    ("reject:", "reject needs a status from 400 to 699"),
    ("delay:-5", "delay needs milliseconds"),
    ("delay:²", "delay needs milliseconds"),
    ("busy:3", "unknown answer mode"),
])
def test_bad_modes_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_answer_mode(text)


def test_start_serving_rejects_a_bad_mode_before_serving() -> None:
    net = FakeNetwork()
    instance = net.add_instance("200")
    with pytest.raises(ValueError, match="unknown answer mode"):
        instance.start_serving(auto_answer="sometimes")


def test_modes_print_as_they_are_written() -> None:
    for text in ("answer", "busy", "reject:503", "ring", "delay:250", "silent"):
        assert str(parse_answer_mode(text)) == text


def test_true_keeps_the_mode_set_before() -> None:
    """A flow sharing the instance hands calls back with auto_answer=True: still busy."""
    net = FakeNetwork()
    _, callee, d, _ = call(net, "busy")
    callee.start_serving(auto_answer=True)
    with pytest.raises(CallFailed) as failed:
        net.run(d)
    assert failed.value.status == 486
    callee.start_serving(auto_answer="answer")
    assert str(callee._auto_answer.mode) == "answer"
