"""What the layers above watch on a call between its answer and its end: the hold state
the peer's SDP sets, and transfers.

A flow's HELD or RETRIEVED node may start before or after the re-INVITE it is about, so
the state is kept here and asked for with a predicate: the Deferred fires at once when the
state already holds. A transfer replaces one call by another (the transferee's new call,
the dialog a Replaces INVITE takes over); whoever names calls (the flow's `CallRegistry`)
hears of it through `on_hand_over`, so a name follows the call the person is actually in.
Nothing here knows about SIP messages; the dialog layer feeds it.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, succeed

from twsip.outcome import Outcome
from twsip.sip.sdp import NegotiatedMedia

__all__ = ["MidCallState", "CallEnded"]

MediaTest = Callable[[NegotiatedMedia], bool]


class CallEnded(Exception):
    """The call ended before the state a watcher waited for came about."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MidCallState:
    """The hold state watchers and the transfer hand-over of one call."""

    __slots__ = ("negotiated", "_waiters", "transferred", "successor", "predecessor",
                 "_hand_over", "ended")

    def __init__(self) -> None:
        self.negotiated: NegotiatedMedia | None = None
        self._waiters: list[tuple[MediaTest, Deferred[NegotiatedMedia]]] = []
        # Fires with a sentence once this call took part in a completed transfer.
        self.transferred = Outcome()
        self.successor: Any = None     # the call that took this one's place
        self.predecessor: Any = None   # the call this one replaced
        self._hand_over: list[Callable[[Any], None]] = []
        self.ended: str | None = None

    # -- hold state (RFC 3264 §8.4) ---------------------------------------------------------
    def media_changed(self, negotiated: NegotiatedMedia) -> None:
        self.negotiated = negotiated
        waiting, self._waiters = self._waiters, []
        for test, d in waiting:
            if d.called:
                continue
            if test(negotiated):
                d.callback(negotiated)
            else:
                self._waiters.append((test, d))

    def until(self, test: MediaTest) -> Deferred[NegotiatedMedia]:
        """Fires with the agreed media once `test` holds for it (at once if it does now);
        fails with CallEnded if the call ends first. Cancelling stops the wait."""
        current = self.negotiated
        if current is not None and test(current):
            return succeed(current)
        if self.ended is not None:
            return fail(CallEnded(self.ended))
        entry: list[tuple[MediaTest, Deferred[NegotiatedMedia]]] = []

        def cancel(d: Deferred[NegotiatedMedia]) -> None:
            if entry and entry[0] in self._waiters:
                self._waiters.remove(entry[0])

        d: Deferred[NegotiatedMedia] = Deferred(cancel)
        entry.append((test, d))
        self._waiters.append(entry[0])
        return d

    # -- transfer ---------------------------------------------------------------------------
    def on_hand_over(self, listener: Callable[[Any], None]) -> None:
        """Call `listener(new_call)` when another call takes this one's place."""
        self._hand_over.append(listener)

    def hand_over(self, old: Any, new: Any, note: str) -> None:
        """`new` now stands for `old` (whose state this is); both count as transferred."""
        self.successor = new
        new.midcall.predecessor = old
        for listener in list(self._hand_over):
            listener(new)
        self.transferred.fire(note)
        new.midcall.transferred.fire(note)

    def close(self, reason: str) -> None:
        """The call ended: waiters for a hold state fail, a transfer never came."""
        self.ended = reason
        waiting, self._waiters = self._waiters, []
        for _, d in waiting:
            if not d.called:
                d.errback(CallEnded(reason))
        self.transferred.fire(CallEnded(reason))
