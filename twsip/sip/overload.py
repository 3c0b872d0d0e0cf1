"""Overload control: while datagrams wait too long, new calls get 503 at once.

Why: a UDP server that falls behind does not slow down gracefully. Once a datagram waits
in the socket's queue longer than T1 (500 ms), the peer retransmits it, every
retransmission is one more datagram in the same queue, and the load doubles exactly when
there is no room for it (issue 14: 6000 calls/s offered, OPTIONS unanswered for 18 s,
16,190 calls torn down for "no ACK"). Refusing *new* calls early with ``503 Service
Unavailable`` + ``Retry-After`` (RFC 3261 §21.5.4) costs one small response and no dialog,
SDP or RTP port, so the calls already up, in-dialog requests (ACK, BYE, CANCEL,
re-INVITE), OPTIONS and retransmissions (absorbed by their transactions) keep being
served and the queue drains.

What is measured: the queueing delay itself. While new INVITEs arrive, the instance sends
one small datagram ("echo", stamped with the time and a random nonce) to its own socket
every `interval` seconds; it comes back through the same kernel queue as the peers'
datagrams, so its age on arrival is the delay they see. An echo still on its way counts
with its age so far, so a queue that grows is seen before its echo is read. The lateness
of the probe's own timer counts too (a long GC pause, a blocked reactor; and the only
measure on a test transport without a socket, where tests simulate lag by moving the
Clock while datagrams wait), but alone it would say little: Twisted's UDP port reads up
to 256 KiB per reactor turn, so timers run every few tens of ms even with seconds of
datagrams waiting in the kernel.

Pauses of the garbage collector are left out of both measures (see `_CollectorPauses`):
they delay every datagram once, and are no reason to refuse calls.

Cost: one datagram to itself per `interval` while calls arrive, and a subtraction and a
comparison per new INVITE. One DelayedCall per instance at most, none once the calls stop
coming (the echo came back and no INVITE arrived for one interval), cancelled by `close`.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from twsip.interfaces import DelayedCall, TimeSource, cancel_call
from twsip.sip.message import Request, Response
from twsip.sip.noise import NoiseSummary, printable

__all__ = ["OverloadSettings", "OverloadControl", "DEFAULT_MAX_DELAY", "ECHO_PREFIX"]

DEFAULT_MAX_DELAY = 0.2  # s of queueing delay: well under T1 and the 0.3 s OPTIONS target
DEFAULT_INTERVAL = 0.05  # s between two echoes while calls arrive
DEFAULT_RETRY_AFTER = 2  # s a refused caller is asked to wait (RFC 3261 §20.33)
LOST_AFTER = 1.0  # an echo not back after this long is taken as dropped: send another


class _CollectorPauses:
    """Seconds the cyclic garbage collector has held the whole process, since import.

    A full collection with tens of thousands of calls' transactions lingering takes
    100-200 ms here; every datagram waits that long once, and the backlog is read within
    milliseconds afterwards unless the instance really is behind. Counted as queueing
    delay, one pause would shed a burst of new calls at a load the instance handles
    (issue 14: ~300 calls refused 503 at 3000/s, one second after an overload). So the
    delays measured below leave out the time spent in collections meanwhile; a backlog
    that outlasts the pause still shows, and still sheds.
    """

    def __init__(self) -> None:
        self.total = 0.0
        self._started = 0.0
        gc.callbacks.append(self._hook)

    def _hook(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._started


collector = _CollectorPauses()
ECHO_PREFIX = b"\x00twsip-echo "  # never the start of a SIP message (not a token)


@dataclass(frozen=True)
class OverloadSettings:
    """When an instance sheds new calls (`enabled` False: never, raw behaviour)."""

    enabled: bool = True
    max_delay: float = DEFAULT_MAX_DELAY  # shed new INVITEs while datagrams wait longer
    interval: float = DEFAULT_INTERVAL
    retry_after: int = DEFAULT_RETRY_AFTER


class _Owner(Protocol):
    """The instance: its clock, its summariser, and where its echo goes."""

    clock: TimeSource
    noise: NoiseSummary
    transport: Any

    @property
    def address(self) -> tuple[str, int]: ...


class OverloadControl:
    """Measures one instance's queueing delay and refuses new calls beyond its limit."""

    def __init__(self, owner: _Owner, settings: OverloadSettings | None = None) -> None:
        self.owner = owner
        self.settings = settings or OverloadSettings()
        self.delay = 0.0  # the delay the last echo measured (s)
        self.late = 0.0  # how late the probe's timer ran last time (s)
        self.shed = 0  # new calls refused 503 so far
        self._prefix = ECHO_PREFIX + os.urandom(6).hex().encode() + b" "
        self._sent_at: float | None = None  # the echo on its way, if any
        self._gc_at_send = 0.0  # `collector.total` when it was sent
        self._gc_at_arm = 0.0  # ... and when the probe was set
        self._probe: DelayedCall | None = None
        self._due = 0.0  # when the probe should run
        self._invites = 0  # new INVITEs since the probe last ran

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def current_delay(self) -> float:
        """The largest of: the last echo's delay, the probe's lateness, the age of the
        echo on its way."""
        delay = max(self.delay, self.late)
        sent = self._sent_at
        if sent is None:
            return delay
        return max(delay, self._in_flight(sent))

    def _in_flight(self, sent: float) -> float:
        """How long the echo on its way has waited so far, collector pauses left out."""
        return self.owner.clock.seconds() - sent - (collector.total - self._gc_at_send)

    @property
    def retry_after(self) -> int:
        return self.settings.retry_after

    def overloaded(self) -> bool:
        """Whether a new INVITE arriving now is to be refused; counts it as arriving."""
        settings = self.settings
        if not settings.enabled:
            return False
        self._invites += 1
        if self._probe is None and not self.owner.noise.closed:
            # The first echo goes from the timer: nothing but answers leaves while a
            # datagram is handled.
            self._arm()
        limit = settings.max_delay  # current_delay() > limit, on every new INVITE
        if self.delay > limit or self.late > limit:
            return True
        sent = self._sent_at
        return sent is not None and self._in_flight(sent) > limit

    def note_shed(self, call_id: str) -> None:
        """One more new call refused (here or statelessly by `twsip.sip.shedding`)."""
        self.shed += 1
        self.owner.noise.note(
            "overload-503", "new calls refused 503 (overload)",
            "datagrams wait {delay_ms:.0f} ms, over {limit_ms:.0f} ms: answering 503 to "
            "new calls (first: call-id {call_id})", delay_ms=self.current_delay() * 1000,
            limit_ms=self.settings.max_delay * 1000, call_id=printable(call_id))

    def refusal(self, invite: Request, new_tag: Callable[[], str]) -> Response | None:
        """503 + Retry-After for a new out-of-dialog INVITE while overloaded, else None."""
        if not self.overloaded():
            return None
        self.note_shed(invite.call_id)
        response = invite.response(503, "Service Unavailable", to_tag=new_tag())
        response.set("retry-after", str(self.settings.retry_after))
        return response

    def echo(self, data: bytes) -> bool:
        """True if `data` is this instance's echo (it then measured the delay); a datagram
        that merely looks like one from elsewhere is not ours and is treated as garbage."""
        if not data.startswith(self._prefix):
            return False
        try:
            sent = float(data[len(self._prefix):])
        except ValueError:
            return False
        if sent == self._sent_at:  # an older echo, given up as lost, measures nothing
            self.delay = max(0.0, self._in_flight(sent))
            self._sent_at = None
        return True

    def send_echo(self) -> None:
        """Send an echo now through the instance's socket (the probe does; tests too).

        Only a real socket has a kernel queue to measure: on a test transport (no
        `socket`) the probe's own lateness is the measure, and no extra datagram shows
        up in the test network's log."""
        sock = getattr(self.owner.transport, "socket", None)
        if sock is None:
            return
        now = self.owner.clock.seconds()
        try:
            sock.sendto(self._prefix + repr(now).encode(), self.owner.address)
        except OSError:  # a full socket buffer, a closed port: no measurement this time
            return
        self._sent_at = now
        self._gc_at_send = collector.total

    def _arm(self) -> None:
        interval = self.settings.interval
        self._due = self.owner.clock.seconds() + interval
        self._gc_at_arm = collector.total
        self._probe = self.owner.clock.callLater(interval, self._run)

    def _run(self) -> None:
        """The probe: note how late it runs; a new echo once the last one is back (or
        lost); keep going while calls arrive, an echo is on its way or the reactor is
        late, else stop and forget the load."""
        self._probe = None
        now = self.owner.clock.seconds()
        self.late = max(0.0, now - self._due - (collector.total - self._gc_at_arm))
        sent = self._sent_at
        if sent is not None and now - sent >= LOST_AFTER:
            self.delay = self._in_flight(sent)  # at least this; resend, maybe dropped
            sent = self._sent_at = None
        if sent is None and not self._invites and self.late <= self.settings.max_delay:
            self.delay = self.late = 0.0  # quiet: nothing waits, no call arrives
            return
        if sent is None:
            self.send_echo()
        self._invites = 0
        self._arm()

    def close(self) -> None:
        """Stop probing (the instance's cleanup): no timer is left behind."""
        cancel_call(self._probe)
        self._probe = None
        self._sent_at = None
        self.delay = self.late = 0.0
