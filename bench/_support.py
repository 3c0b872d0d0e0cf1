"""Helpers for the benchmarks that run the real reactor inside their (child) process."""

from __future__ import annotations

import sys
from typing import Any, Awaitable, Callable


def run_on_reactor(main: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``await main()`` on the global reactor and return its result (or raise)."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure

    outcome: list[Any] = []

    def start() -> None:
        d = Deferred.fromCoroutine(main())

        def done(result: Any) -> None:
            outcome.append(result)
            reactor.stop()

        d.addBoth(done)

    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)
    if not outcome:
        raise RuntimeError("the reactor stopped before the benchmark finished")
    result = outcome[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


class RetransmissionCounter:
    """Counts the retransmissions twsip sends, by wrapping its two resend points.

    Retransmissions are rare on a healthy run, so the wrapper costs nothing measurable on
    the hot path; a benchmark that sees any has overloaded something.
    """

    def __init__(self) -> None:
        self.count = 0
        self._undo: list[Callable[[], None]] = []

    def install(self) -> "RetransmissionCounter":
        from twsip.sip import transaction

        try:  # the UAS's 2xx retransmissions (RFC 3261 13.3.1.4), in the dialog layer
            from twsip.sip.ack_wait import AckWait
            resend_2xx: tuple[Any, str] = (AckWait, "_resend")
        except ImportError:  # an older twsip (--twsip DIR) resent them from the session
            from twsip.sip import dialog
            resend_2xx = (dialog.ServerSession, "_resend_2xx")
        for owner, name in ((transaction._Transaction, "_resend"), resend_2xx):
            original = getattr(owner, name, None)
            if original is None:
                print(f"  (cannot count retransmissions: no {owner.__name__}.{name})",
                      file=sys.stderr)
                continue
            self._wrap(owner, name, original)
        return self

    def _wrap(self, owner: type, name: str, original: Callable) -> None:
        counter = self

        def counted(this: Any, *args: Any, **kwargs: Any) -> Any:
            counter.count += 1
            return original(this, *args, **kwargs)

        setattr(owner, name, counted)
        self._undo.append(lambda: setattr(owner, name, original))

    def uninstall(self) -> None:
        for undo in self._undo:
            undo()
        self._undo.clear()
