"""How many calls one instance holds, and for how long.

Three bounds keep a long run (or a hostile peer) from holding an instance's memory and
ports until shutdown:

- `max_calls`: a new INVITE beyond this many calls is refused 503 with Retry-After (RFC
  3261 §21.5.4), which sheds load early instead of queueing it; the refusals are counted
  and summarised, not logged one by one.
- `max_call_seconds`: a call the instance auto-answered is ended with BYE after this long
  (the caller may have vanished after its ACK, and an auto-answering phone has nobody to
  hang up for it).
- RFC 4028 session timers (`session_timer`), for calls whose peer offers them.

It also holds the set-up limit of the calls the instance places (`ClientSession`'s
`timeout`: no answer by then, the call is cancelled).

The deadlines of all calls share one DelayedCall per kind (`Deadlines`), so the limits
cost a dict insert and a dict pop per call on the SIPp hot path.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred

from twsip.sip.deadlines import Deadlines
from twsip.sip.message import Request, Response
from twsip.sip.noise import NoiseSummary, printable
from twsip.sip.session_timer import SessionTimers, TimedSession

__all__ = ["CallLimits", "DEFAULT_MAX_CALLS", "DEFAULT_MAX_CALL_SECONDS", "RETRY_AFTER"]

DEFAULT_MAX_CALLS = 10_000  # some 50 MB of dialogs; far above what a test needs at once
DEFAULT_MAX_CALL_SECONDS = 3600.0
RETRY_AFTER = 5  # seconds a refused caller is asked to wait (calls end, the cap frees)


class _Call(Protocol):
    call_id: str

    @property
    def established(self) -> bool: ...
    def hangup(self) -> Deferred[Any]: ...


class _Placed(Protocol):
    def setup_timed_out(self) -> None: ...


def _setup_over(call: _Placed) -> None:
    call.setup_timed_out()


class CallLimits:
    """The bounds on one instance's calls (see the module); 0 turns a bound off."""

    def __init__(self, noise: NoiseSummary, max_calls: int = DEFAULT_MAX_CALLS,
                 max_call_seconds: float = DEFAULT_MAX_CALL_SECONDS) -> None:
        self.noise = noise
        self.max_calls = max_calls
        self.max_call_seconds = max_call_seconds
        self.idle: Deadlines[_Call] = Deadlines(noise.clock, self._idle_over)
        self.timers = SessionTimers(noise.clock, noise)
        # The calls we place that wait for an answer within their `timeout`: one shared
        # timer instead of a DelayedCall (and a bound method) per call.
        self.setup: Deadlines[_Placed] = Deadlines(noise.clock, _setup_over)

    def refusal(self, invite: Request, calls: int, new_tag: Callable[[], str],
                ) -> Response | None:
        """503 + Retry-After for a new call while `calls` are up already, at the cap."""
        if calls < self.max_calls or not self.max_calls:
            return None
        self.noise.note("max-calls", "calls refused 503 at the call limit",
                        "{calls} calls up, the limit (max_calls): answering 503 to "
                        "call-id {call_id}", calls=calls, call_id=printable(invite.call_id))
        response = invite.response(503, to_tag=new_tag())
        response.set("retry-after", str(RETRY_AFTER))
        return response

    def auto_answered(self, session: _Call) -> None:
        """Start the idle limit of a call the instance answered by itself."""
        if self.max_call_seconds > 0 and session.established:
            self.idle.set(session, self.max_call_seconds)

    def negotiate(self, session: TimedSession, request: Request, response: Response) -> None:
        """Our 2xx to an INVITE or re-INVITE: the session timer settled, or restarted."""
        self.timers.negotiate(session, request, response)

    def ended(self, session: Any) -> None:
        """A call ended: it needs none of its deadlines any more."""
        self.idle.discard(session)
        if self.timers.active:
            self.timers.stop(session)

    def close(self) -> None:
        self.idle.close()
        self.timers.close()
        self.setup.close()

    def _idle_over(self, session: _Call) -> None:
        if not session.established:
            return
        self.noise.note("max-call-seconds", "auto-answered calls ended at max_call_seconds",
                        "call-id {call_id} up for {seconds:g} s, the most an auto-answered "
                        "call may last: hanging up", call_id=printable(session.call_id),
                        seconds=self.max_call_seconds)
        session.hangup().addErrback(lambda _: None)
