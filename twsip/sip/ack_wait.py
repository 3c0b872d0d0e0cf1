"""The UAS core's reliability for a 2xx to an INVITE (RFC 3261 §13.3.1.4).

A 2xx ends the server INVITE transaction (Accepted only absorbs retransmitted INVITEs), so
it is the dialog's job to resend it until the ACK comes: T1, doubling up to T2, and to give
up after 64*T1, after which the dialog ends with a BYE. Every INVITE answered 2xx, the
initial one and each re-INVITE, gets one `AckWait`.
"""

from __future__ import annotations

from typing import Protocol

from twsip.interfaces import DelayedCall, TimeSource, cancel_call
from twsip.sip.message import Message, Response
from twsip.sip.transaction import TransactionLayer
from twsip.sip.uri import Address

__all__ = ["AckWait", "AckWaiter"]


class _Sender(Protocol):
    @property
    def clock(self) -> TimeSource: ...
    @property
    def transactions(self) -> TransactionLayer: ...
    def send_message(self, message: Message, addr: Address) -> None: ...


class AckWaiter(Protocol):
    """The dialog that owns the 2xx: where to send it (its peer can move), and whom to
    tell when no ACK came."""

    @property
    def ua(self) -> _Sender: ...
    @property
    def peer(self) -> Address: ...
    def no_ack(self) -> None: ...


class AckWait:
    """Resend `response` (the 2xx to the INVITE numbered `cseq`) until `stop()`; after
    64*T1 without it, call `owner.no_ack()`.

    One DelayedCall does both jobs: it is set for the next retransmission, or for the
    give-up time when that comes first (a tie goes to giving up). The owner drops this
    object when the ACK arrives, which lets the 2xx go with it.
    """

    __slots__ = ("owner", "response", "cseq", "_interval", "_give_up_at", "_call")

    def __init__(self, owner: AckWaiter, response: Response, cseq: int) -> None:
        self.owner = owner
        self.response = response
        self.cseq = cseq  # the ACK that counts carries the same number
        ua = owner.ua
        timers = ua.transactions.timers
        self._interval = timers.t1
        self._give_up_at = ua.clock.seconds() + timers.timeout
        self._call: DelayedCall | None = None
        self._schedule()

    def stop(self) -> None:
        cancel_call(self._call)
        self._call = None

    def _schedule(self) -> None:
        clock = self.owner.ua.clock
        now = clock.seconds()
        if now + self._interval < self._give_up_at:
            self._call = clock.callLater(self._interval, self._resend)
        else:
            self._call = clock.callLater(max(0.0, self._give_up_at - now), self._give_up)

    def _resend(self) -> None:
        owner = self.owner
        owner.ua.send_message(self.response, owner.peer)
        self._interval = min(2 * self._interval, owner.ua.transactions.timers.t2)
        self._schedule()

    def _give_up(self) -> None:
        self._call = None
        self.owner.no_ack()
