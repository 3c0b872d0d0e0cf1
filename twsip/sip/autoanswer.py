"""A phone on auto-answer: what `SipInstance.start_serving(auto_answer=True)` does."""

from __future__ import annotations

from twisted.logger import Logger

from twsip.sip.dialog import ServerSession
from twsip.sip.limits import CallLimits
from twsip.sip.noise import printable

__all__ = ["AutoAnswer"]

log = Logger(namespace="twsip.instance")


class AutoAnswer:
    """Rings and answers each call the instance hands it, and leaves the hangup to the
    caller.

    The instance hands calls over directly instead of through `incoming`, so that a flow
    may take some calls from the queue while every other caller is still answered (see
    `SipInstance.claim`). Whatever goes wrong with one call ends that call only: the next
    one is answered all the same.
    """

    __slots__ = ("dn", "limits")

    def __init__(self, dn: str, limits: CallLimits) -> None:
        self.dn = dn
        self.limits = limits  # an auto-answered call has nobody to hang up for it

    def take(self, session: ServerSession) -> None:
        try:
            session.ringing()
            answered = session.answer()
        except Exception:
            log.failure("{dn}: auto-answering call {call_id} failed", dn=self.dn,
                        call_id=printable(session.call_id))
            _give_up(session)
            return
        answered.addErrback(self._failed, session)
        self.limits.auto_answered(session)

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
