"""The calls of one run, by the flow's names for them: (instance, callId) -> session.

A flow names a call ("call-1") and several chains act on it, in any order: RINGING on the
caller's chain may start before MakeCall has created the call, so a node can wait for a
call slot to fill. An incoming call rings until a node answers or rejects it, or its ring
timer runs out. A transfer moves a name to the call that took the old one's place (see
`_hand_over`). All of that state belongs to one run and ends with `close`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed

from twsip.flow.model import ScenarioNode
from twsip.outcome import Outcome
from twsip.sip.dialog import Session
from twsip.interfaces import DelayedCall, TimeSource

__all__ = ["CallRegistry"]

CallKey = tuple[str, str]  # (instance id, the flow's callId)


class CallRegistry:
    """Sessions of the run by (instance id, callId), and who waits for which slot."""

    def __init__(self, clock: TimeSource) -> None:
        self.clock = clock
        self.sessions: dict[CallKey, Session] = {}
        # SIP Call-ID -> the flow's callId of the call it belongs to ("call-1")
        self.call_names: dict[str, str] = {}
        self._slots: dict[CallKey, Outcome] = {}
        self._ring_timers: dict[Session, DelayedCall] = {}
        self._released: set[Session] = set()
        # calls whose callId a transfer moved to another call, with the key they had
        self.replaced: list[tuple[CallKey, Session]] = []

    @staticmethod
    def key(node: ScenarioNode) -> CallKey:
        return (node.instance_id, node.call_id)

    def get(self, node: ScenarioNode) -> Session | None:
        return self.sessions.get(self.key(node))

    def bind(self, node: ScenarioNode, session: Session) -> None:
        """`session` is now the node's call; whoever waited for that slot gets it."""
        key = self.key(node)
        self.sessions[key] = session
        self.call_names.setdefault(session.call_id, node.call_id)
        session.midcall.on_hand_over(lambda new: self._hand_over(key, session, new))
        slot = self._slots.pop(key, None)
        if slot is not None:
            slot.fire(session)

    def _hand_over(self, key: CallKey, old: Session, new: Session) -> None:
        """A transfer put `new` in `old`'s place (the transferee's new call, the dialog a
        Replaces INVITE took over): the flow's callId now names `new`, so a Release or
        DISCONNECTED later in the chain acts on the call the person is actually in. The
        old call stays in `replaced` for the report's media figures."""
        if self.sessions.get(key) is not old:
            return
        self.sessions[key] = new
        self.replaced.append((key, old))
        self.call_names.setdefault(new.call_id, key[1])
        new.midcall.on_hand_over(lambda newer: self._hand_over(key, new, newer))

    def wait(self, node: ScenarioNode) -> Deferred[Session]:
        """The node's call, as soon as another chain has created it."""
        session = self.get(node)
        if session is not None:
            return succeed(session)
        slot = self._slots.get(self.key(node))
        if slot is None:
            slot = self._slots[self.key(node)] = Outcome()
        return slot.wait()

    # -- releasing a call before its answer -------------------------------------------------
    def mark_released(self, session: Session) -> None:
        """A Release node ended this call before the answer, so its MakeCall did what the
        flow asked rather than fail."""
        self._released.add(session)

    def was_released(self, session: Session) -> bool:
        return session in self._released

    # -- ringing ---------------------------------------------------------------------------
    def ring(self, session: Session, seconds: float,
             expired: Callable[..., Any], *args: Any) -> None:
        """Call `expired(*args)` if `session` still rings after `seconds`."""
        def fire() -> None:
            self._ring_timers.pop(session, None)
            expired(*args)

        self._ring_timers[session] = self.clock.callLater(seconds, fire)
        session.when_ended().addCallback(lambda _: self.stop_ringing(session))

    def stop_ringing(self, session: Session) -> None:
        timer = self._ring_timers.pop(session, None)
        if timer is not None and timer.active():
            timer.cancel()

    # -- the end ---------------------------------------------------------------------------
    def live(self) -> Iterator[tuple[str, str, Session]]:
        """(instance id, callId, session) of each call still live, once per SIP call even
        when both of its ends are the run's."""
        seen: set[str] = set()
        for (instance_id, call), session in list(self.sessions.items()):
            if session.ended or session.call_id in seen:
                continue
            seen.add(session.call_id)
            yield instance_id, call, session

    def close(self) -> None:
        """Stop every ring timer and give up every wait for a call slot."""
        for session in list(self._ring_timers):
            self.stop_ringing(session)
        slots, self._slots = self._slots, {}
        for slot in slots.values():
            slot.fire(CancelledError("the run is over"))
