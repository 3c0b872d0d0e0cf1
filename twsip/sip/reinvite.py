"""The re-INVITEs a call sends (RFC 3261 §14.1, RFC 3264 §8): hold, retrieve, any re-offer.

A re-INVITE is a client INVITE transaction inside the dialog carrying the session's new
offer. Its 2xx is ACKed by the dialog (and ACKed again when retransmitted, §13.2.2.4) and
its answer replaces the agreed session only then; any other final answer leaves the
session exactly as it was (`MediaSession.cancel_offer`). A 491 means both sides offered at
once (glare): §14.1 has the Call-ID's owner wait 2.1-4 s and the other side 0-2 s before
trying again, so the two retries do not collide a second time. A 500 with Retry-After
(the peer was busy with another INVITE, §14.2) is retried after the time it asks for. A
408 or 481 means the dialog is gone (§12.2.1.2), and the call ends.

The dialog is reached only through the `ReofferingDialog` protocol, so this module does
not import the session classes (they import it).
"""

from __future__ import annotations

import random
import re
from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from twsip.interfaces import DelayedCall, cancel_call
from twsip.lexical import wire_number
from twsip.outcome import Outcome
from twsip.sip.message import Request, Response
from twsip.sip.sdp import MediaSession, NegotiatedMedia, SdpError
from twsip.sip.transaction import ClientInviteTransaction
from twsip.sip.uri import Address

__all__ = ["ALLOWED_METHODS", "ReInvite", "overlap_refusal", "glare_delay", "MAX_ATTEMPTS", "MAX_RETRY_AFTER"]

log = Logger(namespace="twsip.dialog")

# The methods this UA serves (Allow); defined here, below the session module that names it.
ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "UPDATE", "REFER",
                   "NOTIFY")
MAX_ATTEMPTS = 4       # the first try and up to three retries after 491 or 500
MAX_RETRY_AFTER = 10   # seconds; a longer Retry-After fails the re-INVITE instead

MakeOffer = Callable[[MediaSession], bytes]

# Retry-After = delta-seconds [ comment ] *( SEMI retry-param ) (RFC 3261 §20.33, §25.1):
# the seconds may be followed by a comment such as "(in a meeting)", by parameters, or both.
_RETRY_AFTER = re.compile(r"\s*([0-9]{1,10})\s*(?:\(|;|$)")


class ReofferingDialog(Protocol):
    """What a re-INVITE needs of its dialog (a `Session`)."""

    ua: Any
    call_id: str
    remote_target: str
    owns_call_id: bool

    @property
    def established(self) -> bool: ...
    def in_dialog_request(self, method: str, cseq: int | None = None) -> Request: ...
    def destination(self) -> Address: ...
    def _start_sdp(self) -> MediaSession: ...
    def _apply(self, negotiated: NegotiatedMedia) -> None: ...
    def reinvite_done(self, reinvite: ReInvite) -> None: ...
    def hangup(self) -> Deferred[Any]: ...


def overlap_refusal(request: Request, ours: ReInvite | None, established: bool,
                    awaiting_ack: bool) -> Response | None:
    """The answer RFC 3261 §14.2 owes a re-INVITE that overlaps another INVITE, or None:
    491 while one of ours is out (glare); 500 with Retry-After (0-10 s) while the peer's
    previous INVITE has no final answer or its 2xx no ACK yet (that offer/answer is not
    complete, so a new offer cannot be judged)."""
    if ours is not None and ours.in_progress:
        return request.response(491)
    if not established or awaiting_ack:
        response = request.response(500, "Server Internal Error (INVITE in progress)")
        response.set("retry-after", str(random.randint(0, 10)))
        return response
    return None


def glare_delay(owns_call_id: bool, rng: random.Random | None = None) -> float:
    """RFC 3261 §14.1: after a 491, the Call-ID's owner waits 2.1-4 s, the other side
    0-2 s, both in units of 10 ms."""
    choose = (rng or random).randint
    return choose(210, 400) / 100 if owns_call_id else choose(0, 200) / 100


class ReInvite:
    """One re-offer of a dialog, from its first INVITE to the ACK of its 2xx (or its
    failure), with the retries §14.1 and §14.2 allow. `outcome` fires with the
    `NegotiatedMedia` agreed, or a `CallFailed`-like exception built by `failure`."""

    __slots__ = ("dialog", "make_offer", "outcome", "failure", "attempts", "tx", "_ack",
                 "_retry", "_remote_tag", "in_progress")

    def __init__(self, dialog: ReofferingDialog, make_offer: MakeOffer, outcome: Outcome,
                 failure: Callable[[int, str], Exception]) -> None:
        self.dialog = dialog
        self.make_offer = make_offer
        self.outcome = outcome
        self.failure = failure
        self.attempts = 0
        self.tx: ClientInviteTransaction | None = None
        self._ack: Request | None = None
        self._retry: DelayedCall | None = None
        self._remote_tag: str | None = None
        self.in_progress = False  # an INVITE transaction of ours is out (§14.2's "ours")

    def send(self) -> None:
        """Send the re-INVITE with a fresh offer (the peer's last answer may have changed
        what a hold offer says: sendonly, or inactive when it holds us)."""
        self._retry = None
        dialog = self.dialog
        if not dialog.established:
            self._finish(self.failure(481, "the call ended before the re-INVITE went out"))
            return
        self.attempts += 1
        body = self.make_offer(dialog._start_sdp())
        request = dialog.in_dialog_request("INVITE")
        request.set("allow", list(ALLOWED_METHODS))
        request.set("supported", "replaces")
        request.set("content-type", "application/sdp")
        request.body = body
        self._ack = None
        self.in_progress = True
        self.tx = ClientInviteTransaction(dialog.ua.transactions, request,
                                          dialog.destination(), self)

    # -- what the INVITE transaction reports ------------------------------------------------
    def receive_response(self, response: Response) -> None:
        status = response.status
        if status < 200:
            return
        if status < 300:
            self._accepted(response)
            return
        self.in_progress = False
        self.dialog._start_sdp().cancel_offer()  # §14.1: the session stays as it was
        delay = self._retry_delay(response)
        if delay is not None and self.attempts < MAX_ATTEMPTS:
            log.debug("call {call_id}: re-INVITE answered {status}; retrying in {delay} s",
                      call_id=self.dialog.call_id, status=status, delay=delay)
            self._retry = self.dialog.ua.clock.callLater(delay, self.send)
            return
        self._finish(self.failure(status, response.reason))
        if status in (408, 481):
            self._dialog_gone()

    def timed_out(self) -> None:
        self.in_progress = False
        self.dialog._start_sdp().cancel_offer()
        self._finish(self.failure(408, "no final response to the re-INVITE"))
        self._dialog_gone()

    def _dialog_gone(self) -> None:
        """A 408 or 481 to a request of ours: the dialog is over (§12.2.1.2)."""
        if self.dialog.established:
            self.dialog.hangup().addErrback(lambda _: None)

    def _retry_delay(self, response: Response) -> float | None:
        if response.status == 491:
            return glare_delay(self.dialog.owns_call_id)
        if response.status in (500, 503):
            match = _RETRY_AFTER.match(response.get("retry-after") or "")
            seconds = wire_number(match.group(1)) if match else None
            if seconds is not None and seconds <= MAX_RETRY_AFTER:
                return float(seconds)
        return None

    def _accepted(self, response: Response) -> None:
        dialog = self.dialog
        if self._ack is not None:  # a retransmitted 2xx: the same ACK again (§13.2.2.4)
            if response.to.tag == self._remote_tag:
                dialog.ua.send_message(self._ack, dialog.destination())
            return
        self.in_progress = False
        self._remote_tag = response.to.tag
        contacts = response.contact
        if contacts:  # a 2xx to a re-INVITE refreshes the remote target (§12.2.1.2)
            dialog.remote_target = contacts[0].uri
        cseq = response.cseq.number
        self._ack = dialog.in_dialog_request("ACK", cseq)
        dialog.ua.send_message(self._ack, dialog.destination())
        try:
            negotiated = dialog._start_sdp().receive_answer(response.body)
        except SdpError as exc:
            # Acked, as every 2xx must be; the old session stays (RFC 3264 §8).
            self._finish(self.failure(488, f"unusable SDP answer: {exc}"))
            return
        dialog._apply(negotiated)
        self._finish(negotiated)

    def _finish(self, result: object) -> None:
        self.dialog.reinvite_done(self)
        self.outcome.fire(result)

    def stop(self, reason: str) -> None:
        """The call ended: no retry, and whoever waits hears why."""
        cancel_call(self._retry)
        self._retry = None
        self.in_progress = False
        self.outcome.fire(self.failure(481, reason))

