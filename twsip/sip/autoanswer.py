"""A phone on auto-answer: what `SipInstance.start_serving(auto_answer=...)` does.

Testing a caller means facing every kind of callee: one that answers, one that is busy,
one that rings forever, one that never even rings. `AnswerMode` names those behaviours
(``answer``, ``busy``, ``reject:CODE``, ``ring``, ``delay:MS``, ``silent``) in the same
words on the command line (``--answer DN=MODE``) and from Python
(``instance.start_serving(auto_answer="busy")``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from twisted.logger import Logger

from twsip.sip.dialog import ServerSession
from twsip.sip.limits import CallLimits
from twsip.sip.message import REASONS
from twsip.sip.noise import printable

__all__ = ["ANSWER", "AnswerMode", "AutoAnswer", "answerer", "MEDIA_SOURCES", "MODES", "parse_answer_mode"]

log = Logger(namespace="twsip.instance")

MODES = ("answer", "busy", "reject:CODE", "ring", "delay:MS", "silent")
# What an answered call may send (`RtpEndpoint.set_source`), by the name the CLI uses.
MEDIA_SOURCES = {"silence": "silence", "echo": "echo", "tone": "tone:440"}
_NUMBER = re.compile(r"[0-9]{1,7}")  # ASCII digits only: "²".isdigit() is True
MAX_DELAY_MS = 3_600_000  # longer than any caller waits (Timer B is 32 s)


@dataclass(frozen=True)
class AnswerMode:
    """How an auto-answering instance treats each new call.

    `kind` is one of answer, reject (busy is reject with 486), ring, delay, silent;
    `status` the final status a reject sends; `delay_ms` how long delay rings before its
    200; `media` what the answered call sends (a `set_source` name), None for nothing.
    """

    kind: str = "answer"
    status: int = 200
    delay_ms: int = 0
    media: str | None = None

    def __str__(self) -> str:
        if self.kind == "reject":
            return "busy" if self.status == 486 else f"reject:{self.status}"
        if self.kind == "delay":
            return f"delay:{self.delay_ms}"
        return self.kind

    def with_media(self, media: str | None) -> AnswerMode:
        return replace(self, media=media)


ANSWER = AnswerMode()


def parse_answer_mode(text: str) -> AnswerMode:
    """A mode from its command-line spelling; ValueError says what is wrong and what fits."""
    name, _, value = text.strip().partition(":")
    name = name.lower()
    if name in ("answer", "ring", "silent", "busy") and not value:
        return AnswerMode("reject", 486) if name == "busy" else AnswerMode(name)
    if name == "reject":
        if not _NUMBER.fullmatch(value) or not 400 <= int(value) <= 699:
            raise ValueError(f"reject needs a status from 400 to 699 (reject:486), "
                             f"not {value!r}")
        return AnswerMode("reject", int(value))
    if name == "delay":
        if not _NUMBER.fullmatch(value) or int(value) > MAX_DELAY_MS:
            raise ValueError(f"delay needs milliseconds from 0 to {MAX_DELAY_MS} "
                             f"(delay:2000), not {value!r}")
        return AnswerMode("delay", 200, int(value))
    raise ValueError(f"unknown answer mode {text!r}; one of: {', '.join(MODES)}")


def answer_mode(how: bool | str | AnswerMode) -> AnswerMode:
    """What `start_serving(auto_answer=...)` accepts: True (answer), a mode or its name."""
    if isinstance(how, AnswerMode):
        return how
    if isinstance(how, str):
        return parse_answer_mode(how)
    return ANSWER


def answerer(current: AutoAnswer | None, dn: str, limits: CallLimits,
             how: bool | str | AnswerMode) -> AutoAnswer:
    """The auto-answerer for ``start_serving(auto_answer=how)``.

    True keeps the one already set: a flow that shared the instance hands its unclaimed
    calls back with ``start_serving(auto_answer=True)``, and must not turn a busy phone
    into one that answers.
    """
    if how is True and current is not None:
        return current
    return AutoAnswer(dn, limits, how)


class AutoAnswer:
    """Treats each call the instance hands it by its `AnswerMode`, and leaves the hangup to
    the caller.

    The instance hands calls over directly instead of through `incoming`, so that a flow
    may take some calls from the queue while every other caller is still answered (see
    `SipInstance.claim`). Whatever goes wrong with one call ends that call only: the next
    one is answered all the same. A delayed answer's timer ends with its call, so an
    instance's cleanup (which ends every call) leaves none behind.
    """

    __slots__ = ("dn", "limits", "mode")

    def __init__(self, dn: str, limits: CallLimits,
                 mode: AnswerMode | str | bool = ANSWER) -> None:
        self.dn = dn
        self.limits = limits  # an auto-answered call has nobody to hang up for it
        self.mode = answer_mode(mode)

    def take(self, session: ServerSession) -> None:
        mode = self.mode
        try:
            if mode.kind == "silent":
                return  # the instance has sent 100 Trying: nothing more, ever
            if mode.kind == "reject":
                session.reject(mode.status, REASONS.get(mode.status))
                return
            session.ringing()
            if mode.kind == "answer":
                self._answer(session)
            elif mode.kind == "delay":
                self._answer_later(session, mode.delay_ms / 1000.0)
        except Exception:
            log.failure("{dn}: auto-answering call {call_id} failed", dn=self.dn,
                        call_id=printable(session.call_id))
            _give_up(session)

    def _answer(self, session: ServerSession) -> None:
        if session.ended:  # cancelled or abandoned while it rang
            return
        answered = session.answer()
        source = self.mode.media
        if source is not None and session.media is not None:
            session.media.endpoint.set_source(source)
        answered.addErrback(self._failed, session)
        self.limits.auto_answered(session)

    def _answer_later(self, session: ServerSession, delay: float) -> None:
        timer = session.ua.clock.callLater(delay, self._delayed, session)

        def cancel(_: object) -> None:
            if timer.active():
                timer.cancel()

        session.when_ended().addCallback(cancel)

    def _delayed(self, session: ServerSession) -> None:
        try:
            self._answer(session)
        except Exception:
            log.failure("{dn}: answering call {call_id} failed", dn=self.dn,
                        call_id=printable(session.call_id))
            _give_up(session)

    def _failed(self, failure: object, session: ServerSession) -> None:
        why = getattr(failure, "getErrorMessage", lambda: str(failure))()
        log.info("{dn}: auto-answered call {call_id} failed: {why}", dn=self.dn,
                 call_id=printable(session.call_id), why=printable(why))


def _give_up(session: ServerSession) -> None:
    """End a call that auto-answering broke on: 500 if it can still be refused."""
    try:
        if not session.ended:
            session.reject(500, "Server Internal Error")
    except Exception:
        log.failure("could not refuse call {call_id}", call_id=printable(session.call_id))
    if not session.ended:
        session._end("internal error")
