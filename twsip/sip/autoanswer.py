"""A phone on auto-answer: what `SipInstance.start_serving(auto_answer=True)` does."""

from __future__ import annotations

from twisted.internet.defer import Deferred, DeferredQueue
from twisted.logger import Logger

from twsip.sip.dialog import ServerSession

__all__ = ["AutoAnswer"]

log = Logger(namespace="twsip.instance")


class AutoAnswer:
    """Takes each call from an instance's own queue, rings and answers it, and leaves the
    hangup to the caller. It waits on the queue like any application would, so stopping
    it hands new calls back to the application untouched."""

    __slots__ = ("incoming", "dn", "_waiting")

    def __init__(self, incoming: DeferredQueue[ServerSession], dn: str) -> None:
        self.incoming = incoming
        self.dn = dn
        self._waiting: Deferred[ServerSession] | None = None
        self._next()

    def stop(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.cancel()

    def _next(self) -> None:
        d = self._waiting = self.incoming.get()
        d.addCallbacks(self._answer, lambda _: None)

    def _answer(self, session: ServerSession) -> None:
        session.ringing()
        session.answer().addErrback(
            lambda f: log.info("{dn}: auto-answered call {call_id} failed: {why}",
                               dn=self.dn, call_id=session.call_id, why=f.getErrorMessage()))
        self._next()
