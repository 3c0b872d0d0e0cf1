"""A result that any number of callers may wait for, each on a Deferred of their own.

The one multi-waiter helper of the package: sessions, the engine and the service all hand
out results this way. It sits at the bottom of the layers and imports only Twisted.
"""

from __future__ import annotations

import weakref
from typing import Callable

from twisted.internet.defer import Deferred, fail, succeed

__all__ = ["Outcome"]


class Outcome:
    """A result that any number of callers may wait for, each on a Deferred of their own.

    Handing out fresh Deferreds keeps one caller's callbacks from changing what another
    sees, and a failure nobody waits for is not reported as an unhandled error.
    """

    __slots__ = ("_waiters", "_result", "done")

    def __init__(self) -> None:
        self._waiters: list[Deferred] = []
        self._result: object = None
        self.done = False

    def wait(self, canceller: Callable[[Deferred], None] | None = None) -> Deferred:
        if self.done:
            result = self._result
            if type(result) is weakref.ref:
                result = result()
            return fail(result) if isinstance(result, Exception) else succeed(result)
        d: Deferred = Deferred(canceller)
        self._waiters.append(d)
        return d

    def fire(self, result: object, *, owner: bool = False) -> None:
        """Fire every waiter with `result`. `owner`: the result is the object that holds
        this outcome (a session answered), kept by weak reference so that the two do not
        form a cycle that only the garbage collector could free; whoever can still wait
        holds the owner, so it is alive whenever it is asked for."""
        if self.done:
            return
        self.done = True
        self._result = weakref.ref(result) if owner else result
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            if not d.called:
                if isinstance(result, Exception):
                    d.errback(result)
                else:
                    d.callback(result)
