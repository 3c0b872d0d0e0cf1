"""Per-call deadlines for a whole instance on one DelayedCall.

An instance under SIPp load starts and ends thousands of calls a second, and each may need
a deadline (the idle limit, a session timer): a DelayedCall per call would be one more
heap entry to push and cancel per call, and one more object per call for the garbage
collector. Keys with the same delay are due in the order they were set, so one
insertion-ordered dict per delay holds them sorted for free; ending a call removes its key
at once (a dict pop), so nothing of a finished call stays behind, and the one DelayedCall
is left to fire (finding nothing, or the next key) rather than be cancelled and set again
per call. `close()` cancels it.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from twisted.logger import Logger

from twsip.interfaces import DelayedCall, TimeSource, cancel_call

__all__ = ["Deadlines"]

log = Logger(namespace="twsip.instance")

K = TypeVar("K")

# Clock arithmetic may land a DelayedCall a hair before the deadline it was set for.
_SLACK = 1e-6


class Deadlines(Generic[K]):
    """Keys that fall due `delay` s after they were `set`, reported to `expired` once."""

    __slots__ = ("clock", "expired", "_queues", "_delays", "_call")

    def __init__(self, clock: TimeSource, expired: Callable[[K], object]) -> None:
        self.clock = clock
        self.expired = expired
        self._queues: dict[float, dict[K, float]] = {}  # delay -> key -> deadline, in order
        self._delays: dict[K, float] = {}  # key -> the delay it is queued under
        self._call: DelayedCall | None = None

    def __len__(self) -> int:
        return len(self._delays)

    def __contains__(self, key: object) -> bool:
        return key in self._delays

    def set(self, key: K, delay: float) -> None:
        """`key` falls due `delay` s from now, instead of when it was due before."""
        self.discard(key)
        deadline = self.clock.seconds() + delay
        queue = self._queues.get(delay)
        if queue is None:
            queue = self._queues[delay] = {}
        queue[key] = deadline
        self._delays[key] = delay
        call = self._call
        if call is None:
            self._call = self.clock.callLater(delay, self._fire)
        elif deadline < call.getTime():
            call.cancel()
            self._call = self.clock.callLater(delay, self._fire)

    def discard(self, key: K) -> None:
        delay = self._delays.pop(key, None)
        if delay is not None:
            queue = self._queues[delay]
            del queue[key]
            if not queue:
                del self._queues[delay]

    def close(self) -> None:
        """Forget every key and cancel the timer (the instance's cleanup)."""
        self._queues.clear()
        self._delays.clear()
        cancel_call(self._call)
        self._call = None

    def _fire(self) -> None:
        self._call = None
        now = self.clock.seconds() + _SLACK
        due: list[K] = []
        earliest: float | None = None
        for delay, queue in list(self._queues.items()):
            first = len(due)
            for key, deadline in queue.items():  # one pass: popping the head one by one
                if deadline > now:                # would rescan the dict's deleted slots
                    if earliest is None or deadline < earliest:
                        earliest = deadline
                    break
                due.append(key)
            for key in due[first:]:
                del queue[key]
                del self._delays[key]
            if not queue:
                del self._queues[delay]
        if earliest is not None:
            self._call = self.clock.callLater(max(0.0, earliest - self.clock.seconds()),
                                              self._fire)
        for key in due:
            try:
                self.expired(key)
            except Exception:
                log.failure("acting on a deadline for {key!r}", key=key)
