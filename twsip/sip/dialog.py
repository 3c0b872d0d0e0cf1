"""Dialogs (RFC 3261 §12) and the two call sessions built on them.

A `ClientSession` is a call this user agent places; a `ServerSession` one it receives. Both
keep the dialog state (tags, Call-ID, CSeq numbers, remote target, route set) and offer the
same ending API (`hangup()`, `when_ended()`). They talk to their user agent only through the
small `UserAgent` protocol below, so this module knows nothing about sockets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from twsip.sip import sdp
from twsip.sip.message import NameAddr, Request, Response, parse
from twsip.outcome import Outcome
from twsip.sip.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    TransactionLayer,
    build_cancel,
)
from twsip.sip.uri import Address, loopback_address

if TYPE_CHECKING:
    from twsip.sip.message import Message

__all__ = ["CallFailed", "Session", "ClientSession", "ServerSession", "UserAgent"]

log = Logger(namespace="twsip.dialog")


EARLY = "early"
CONFIRMED = "confirmed"
ENDED = "ended"


class CallFailed(Exception):
    """A call that did not come about or did not end well, with the SIP status that says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class UserAgent(Protocol):
    """What a session needs from its user agent (implemented by `SipInstance`)."""

    dn: str
    host: str
    port: int
    codecs: tuple[str, ...]
    clock: IReactorTime
    transactions: TransactionLayer

    @property
    def contact(self) -> str: ...
    def new_via(self) -> str: ...
    def new_tag(self) -> str: ...
    def send_message(self, message: "Message", addr: Address) -> None: ...
    def register_dialog(self, session: "Session") -> None: ...
    def unregister_dialog(self, session: "Session") -> None: ...
    def media_port(self) -> int: ...


class Session:
    """Dialog state shared by both ends of a call, and how a call ends."""

    def __init__(self, ua: UserAgent, call_id: str, local_tag: str) -> None:
        self.ua = ua
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag: str | None = None
        self.local_uri = ""
        self.remote_uri = ""
        self.local_cseq = 0
        self.remote_cseq: int | None = None
        self.remote_target = ""
        self.route_set: list[str] = []
        self.peer: Address = ("127.0.0.1", 5060)
        self.state = EARLY
        self.remote_sdp: bytes | None = None
        self.local_sdp: bytes | None = None
        self.end_reason: str | None = None
        self._ended = Outcome()
        self._hangup: Outcome | None = None

    @property
    def dialog_id(self) -> tuple[str, str, str | None]:
        return (self.call_id, self.local_tag, self.remote_tag)

    @property
    def ended(self) -> bool:
        return self.state == ENDED

    @property
    def established(self) -> bool:
        return self.state == CONFIRMED

    def when_ended(self) -> Deferred[str]:
        """A new Deferred firing with a short reason once the dialog ends, from either side."""
        return self._ended.wait()

    def hangup(self) -> Deferred:
        """End an established call with BYE; fires with the BYE's final response."""
        if self._hangup is not None:
            return self._hangup.wait()
        if self.state != CONFIRMED:
            return fail(CallFailed(481, f"call {self.call_id} is not established"))
        outcome = self._hangup = Outcome()

        def on_response(response: Response) -> None:
            if response.status >= 200:
                outcome.fire(response)

        self._send_request(self.in_dialog_request("BYE"), on_response,
                           lambda: outcome.fire(CallFailed(408, "no response to BYE")))
        self._end("local hangup")
        return outcome.wait()

    # -- requests inside the dialog (§12.2.1.1) -------------------------------------------
    def in_dialog_request(self, method: str, cseq: int | None = None) -> Request:
        """A request inside the dialog; a new CSeq number unless one is given (ACK)."""
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        to = NameAddr(self.remote_uri, params={"tag": self.remote_tag} if self.remote_tag else {})
        frm = NameAddr(self.local_uri, params={"tag": self.local_tag})
        uri = self.remote_target
        headers: dict[str, list[str]] = {
            "via": [self.ua.new_via()],
            "max-forwards": ["70"],
            "from": [str(frm)],
            "to": [str(to)],
            "call-id": [self.call_id],
            "cseq": [f"{cseq} {method}"],
        }
        if self.route_set:
            if ";lr" in self.route_set[0]:
                headers["route"] = list(self.route_set)
            else:  # strict router (§12.2.1.1): it takes the Request-URI's place
                uri = self.route_set[0].strip("<>")
                headers["route"] = self.route_set[1:] + [f"<{self.remote_target}>"]
        headers["contact"] = [f"<{self.ua.contact}>"]
        return Request(method, uri, headers)

    def destination(self) -> Address:
        """Where in-dialog requests go: the first route or the remote target, if loopback.

        Local mode never resolves a name nor leaves 127.0.0.0/8; a target that is not a
        loopback literal is replaced by the address the peer's messages came from.
        """
        target = self.route_set[0].strip("<>") if self.route_set else self.remote_target
        addr = loopback_address(target.split(">")[0]) if target else None
        return addr or self.peer

    def _send_request(self, request: Request, on_response: Callable[[Response], None],
                      on_timeout: Callable[[], None]) -> ClientNonInviteTransaction:
        return ClientNonInviteTransaction(self.ua.transactions, request, self.destination(),
                                          on_response, on_timeout)

    def receive_request(self, request: Request, tx) -> None:
        """An in-dialog request other than ACK/CANCEL (BYE, re-INVITE, ...)."""
        cseq = request.cseq.number
        if self.remote_cseq is not None and cseq < self.remote_cseq:
            tx.respond(request.response(500, "CSeq out of order"))
            return
        self.remote_cseq = cseq
        if request.method == "BYE":
            tx.respond(request.response(200))
            self._remote_bye()
        elif request.method == "INVITE":
            self._reinvite(request, tx)
        else:
            tx.respond(request.response(200))

    def _reinvite(self, request: Request, tx) -> None:
        """A session refresh: answer with the same session description."""
        response = request.response(200)
        response.set("contact", f"<{self.ua.contact}>")
        if self.local_sdp:
            response.set("content-type", "application/sdp")
            response.body = self.local_sdp
        tx.respond(response)

    def _remote_bye(self) -> None:
        self._end("remote hangup")

    def _end(self, reason: str) -> None:
        if self.state == ENDED:
            return
        self.state = ENDED
        self.end_reason = reason
        self._stop_timers()
        self.ua.unregister_dialog(self)
        self._ended.fire(reason)

    def _stop_timers(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.call_id} {self.state}>"


def _cancel_call(call: IDelayedCall | None) -> None:
    if call is not None and call.active():
        call.cancel()


class ClientSession(Session):
    """A call this user agent places (UAC, §13.2)."""

    def __init__(self, ua: UserAgent, target: str, addr: Address, call_id: str,
                 timeout: float | None = None, from_uri: str | None = None) -> None:
        super().__init__(ua, call_id, ua.new_tag())
        self.local_uri = from_uri or f"sip:{ua.dn}@{ua.host}:{ua.port}"
        self.remote_uri = target
        self.remote_target = target
        self.peer = addr
        self.provisional: list[Response] = []
        self.final_response: Response | None = None
        self._answered = Outcome()
        self._ringing = Outcome()
        self._cancel_pending = False
        self._cancelled = False
        self._ack: tuple[bytes, Request] | None = None
        self.local_cseq = 1
        self.local_sdp = sdp.offer(ua.codecs, ua.host, ua.media_port())
        self.invite = self._build_invite()
        self._tx = ClientInviteTransaction(ua.transactions, self.invite, addr,
                                           self._on_response, self._on_timeout)
        self._setup_timer: IDelayedCall | None = None
        if timeout:
            self._setup_timer = ua.clock.callLater(timeout, self._setup_timeout, timeout)

    def _build_invite(self) -> Request:
        headers: dict[str, list[str]] = {
            "via": [self.ua.new_via()],
            "max-forwards": ["70"],
            "from": [f"<{self.local_uri}>;tag={self.local_tag}"],
            "to": [f"<{self.remote_uri}>"],
            "call-id": [self.call_id],
            "cseq": ["1 INVITE"],
            "contact": [f"<{self.ua.contact}>"],
            "allow": list(ALLOWED_METHODS),
            "content-type": ["application/sdp"],
        }
        return Request("INVITE", self.remote_target, headers, self.local_sdp or b"")

    def when_answered(self) -> Deferred["ClientSession"]:
        """Fires with this session once a 2xx arrived and was ACKed; fails with CallFailed.

        Cancelling the returned Deferred before the final response cancels the call.
        """
        return self._answered.wait(lambda _d: self.cancel())

    def when_ringing(self) -> Deferred[Response]:
        """Fires with the first 180/183 received; fails with CallFailed if none comes."""
        return self._ringing.wait()

    # -- responses to the INVITE --------------------------------------------------------
    def _on_response(self, response: Response) -> None:
        status = response.status
        if status < 200:
            self.provisional.append(response)
            tag = response.to.tag
            if tag and self.remote_tag is None and self.state == EARLY:
                self.remote_tag = tag
            if self._cancel_pending:
                self._send_cancel()
            if status in (180, 183):
                self._ringing.fire(response)
        elif status < 300:
            self._on_2xx(response)
        else:
            self.final_response = response
            self._fail(CallFailed(status, response.reason), f"rejected {status}")

    def _on_2xx(self, response: Response) -> None:
        tag = response.to.tag
        if self._ack is not None:
            if tag == self.remote_tag:
                self.ua.send_message(self._ack[1], self.destination())  # re-ACK (§13.2.2.4)
            return
        self.final_response = response
        self.remote_tag = tag
        self.remote_sdp = response.body or None
        contacts = response.contact
        if contacts:
            self.remote_target = contacts[0].uri
        self.route_set = list(reversed(response.get_all("record-route")))
        self.peer = self._tx.addr
        ack = self.in_dialog_request("ACK", self.invite.cseq.number)
        self._ack = (ack.to_bytes(), ack)
        self.ua.send_message(ack, self.destination())
        _cancel_call(self._setup_timer)
        if self._cancelled or self.state == ENDED:
            # A 2xx that crossed our CANCEL: confirm it, then end it at once (§15).
            self.state = CONFIRMED
            self.ua.register_dialog(self)
            self._hangup = None
            self.hangup().addErrback(lambda _: None)
            return
        self.state = CONFIRMED
        self.ua.register_dialog(self)
        self._answered.fire(self, owner=True)
        self._ringing.fire(CallFailed(200, "answered without ringing"))

    def _on_timeout(self) -> None:
        self._fail(CallFailed(408, "no final response to INVITE (Timer B)"), "timeout")

    def _setup_timeout(self, timeout: float) -> None:
        self._setup_timer = None
        if self.state == EARLY:
            self._request_cancel()
            self._fail(CallFailed(408, f"no answer within {timeout:g} s"), "timeout")

    def _fail(self, failure: CallFailed, reason: str) -> None:
        _cancel_call(self._setup_timer)
        self._setup_timer = None
        self._answered.fire(failure)
        self._ringing.fire(failure)
        self._end(reason)

    # -- cancelling (§9.1) ----------------------------------------------------------------
    def cancel(self) -> None:
        """Give up on a call not yet answered: CANCEL it; the call fails with 487."""
        if self.state != EARLY:
            return
        self._request_cancel()
        self._fail(CallFailed(487, "Request Terminated (cancelled by caller)"), "cancelled")

    def _request_cancel(self) -> None:
        self._cancelled = True
        if any(True for _ in self.provisional):
            self._send_cancel()
        else:
            self._cancel_pending = True  # a CANCEL may only follow a provisional response

    def _send_cancel(self) -> None:
        self._cancel_pending = False
        cancel = build_cancel(self.invite)
        ClientNonInviteTransaction(self.ua.transactions, cancel, self._tx.addr,
                                   lambda r: None, lambda: None)

    def hangup(self) -> Deferred:
        if self.state == EARLY:
            self.cancel()
            return succeed(None)
        return super().hangup()

    def _end(self, reason: str) -> None:
        if self.state == EARLY and reason in ("cancelled", "timeout"):
            # The INVITE transaction lives on to receive the 487 (or a crossing 2xx).
            self.state = ENDED
            self.end_reason = reason
            self._ended.fire(reason)
            return
        super()._end(reason)
        tx = self._tx
        if self._ack is not None and tx.on_response == self._on_response:
            # All the INVITE transaction can still pass up (Timer M, 32 s) is a 2xx
            # retransmission, which gets the same ACK again: hand it just that, so that
            # the ended session is not kept alive for it.
            tx.on_response = _ReAck(self.ua, self._ack[0], self.remote_tag,
                                    self.destination())

    def _stop_timers(self) -> None:
        _cancel_call(self._setup_timer)
        self._setup_timer = None


class _ReAck:
    """A confirmed call's INVITE transaction TU once the call has ended: ACK again each
    retransmitted 2xx from the dialog's peer (§13.2.2.4), as `ClientSession._on_2xx` does.
    It keeps the ACK's bytes only, and rebuilds the message in the rare case it is needed."""

    __slots__ = ("ua", "ack", "remote_tag", "destination")

    def __init__(self, ua: UserAgent, ack: bytes, remote_tag: str | None,
                 destination: Address) -> None:
        self.ua = ua
        self.ack = ack
        self.remote_tag = remote_tag
        self.destination = destination

    def __call__(self, response: Response) -> None:
        if 200 <= response.status < 300 and response.to.tag == self.remote_tag:
            self.ua.send_message(parse(self.ack), self.destination)


ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS")


class _EndedCall:
    """What an answered INVITE transaction keeps of its call once the call has ended: the
    To tag that a late CANCEL is answered with (§9.2). The transaction lingers 32 s (Timer
    L) after every call; holding this instead of the session lets the session and its
    INVITE go as soon as the call ends."""

    __slots__ = ("local_tag",)

    def __init__(self, local_tag: str) -> None:
        self.local_tag = local_tag


class ServerSession(Session):
    """A call this user agent receives (UAS, §13.3). Created by the UA core per new INVITE."""

    def __init__(self, ua: UserAgent, invite: Request, tx: ServerInviteTransaction,
                 addr: Address) -> None:
        super().__init__(ua, invite.call_id, ua.new_tag())
        self.invite = invite
        self.tx = tx
        tx.tu = self
        tx.on_timeout = self._no_ack_for_error
        frm = invite.from_
        self.remote_tag = frm.tag
        self.remote_uri = frm.uri
        self.local_uri = invite.to.uri
        self.remote_cseq = invite.cseq.number
        self.peer = addr
        contacts = invite.contact
        self.remote_target = contacts[0].uri if contacts else frm.uri
        self.route_set = invite.get_all("record-route")
        self.remote_sdp = invite.body or None
        self.answered = False
        self._answered: Outcome | None = None
        self._retransmit: IDelayedCall | None = None  # the 2xx retransmission or give-up
        self._interval = 0.0
        self._give_up_at = 0.0
        self._final: Response | None = None  # the 2xx, while it is retransmitted
        self._ringing_sent = False
        ua.register_dialog(self)

    @property
    def caller(self) -> str:
        return self.remote_uri

    def _response(self, status: int, reason: str | None = None) -> Response:
        response = self.invite.response(status, reason, to_tag=self.local_tag)
        if 100 < status < 300:
            response.set("contact", f"<{self.ua.contact}>")
            if self.route_set:
                response.set("record-route", self.route_set)
        return response

    @property
    def ringing_sent(self) -> bool:
        return self._ringing_sent

    def ringing(self, status: int = 180) -> None:
        """Send 180 Ringing (or 183) on this call, if it is still waiting for an answer."""
        if self.state != EARLY or self.tx.answered:
            return
        self.tx.respond(self._response(status))
        self._ringing_sent = True

    def answer(self) -> Deferred["ServerSession"]:
        """Send 200 with an SDP answer; fires when the ACK arrives, fails with 408 without."""
        if self._answered is not None:
            return self._answered.wait()
        if self.state != EARLY or self.tx.answered:
            return fail(CallFailed(481, f"call {self.call_id} can no longer be answered"))
        response = self._response(200)
        ua = self.ua
        try:
            if self.remote_sdp:
                self.local_sdp = sdp.answer(self.remote_sdp, ua.codecs, ua.host,
                                            ua.media_port())
            else:  # offer in the 2xx, answer in the ACK (§13.2.1)
                self.local_sdp = sdp.offer(ua.codecs, ua.host, ua.media_port())
        except sdp.SdpError as exc:
            self.reject(488, "Not Acceptable Here")
            return fail(CallFailed(488, str(exc)))
        response.set("allow", list(ALLOWED_METHODS))
        response.set("content-type", "application/sdp")
        response.body = self.local_sdp
        self.answered = True
        self.state = CONFIRMED
        self._answered = Outcome()
        self.tx.respond(response)
        self._final = response
        # §13.3.1.4: the UAS core retransmits the 2xx until the ACK, T1 doubling to T2, and
        # gives up after 64*T1. One timer does both: it is set for the next retransmission,
        # or for the give-up time when that comes first (a tie goes to giving up).
        timers = ua.transactions.timers
        self._interval = timers.t1
        self._give_up_at = ua.clock.seconds() + timers.timeout
        self._next_2xx_timer()
        return self._answered.wait()

    def _next_2xx_timer(self) -> None:
        clock = self.ua.clock
        now = clock.seconds()
        if now + self._interval < self._give_up_at:
            self._retransmit = clock.callLater(self._interval, self._resend_2xx)
        else:
            self._retransmit = clock.callLater(max(0.0, self._give_up_at - now), self._no_ack)

    def _resend_2xx(self) -> None:
        assert self._final is not None
        self.ua.send_message(self._final, self.peer)
        self._interval = min(2 * self._interval, self.ua.transactions.timers.t2)
        self._next_2xx_timer()

    def _no_ack(self) -> None:
        self._retransmit = None
        self._final = None
        if self.state == CONFIRMED:
            # §13.3.1.4: no ACK within 64*T1 -> the dialog is confirmed but ends with a BYE.
            self.hangup().addErrback(lambda _: None)
        if self._answered is not None:
            self._answered.fire(CallFailed(408, "no ACK for the 2xx"))

    def ack_received(self, ack: Request) -> None:
        self._stop_timers()  # retransmitted no more: let the 2xx go
        if ack.body and self.remote_sdp is None:
            self.remote_sdp = ack.body
        if self._answered is not None:
            self._answered.fire(self, owner=True)

    def reject(self, status: int = 486, reason: str | None = None) -> None:
        """Refuse the call with a final 3xx-6xx status."""
        if not 300 <= status <= 699:
            raise ValueError(f"reject needs a status from 300 to 699, not {status}")
        if self.state != EARLY or self.tx.answered:
            return
        self.tx.respond(self._response(status, reason))
        self._end(f"rejected {status}")

    def hangup(self) -> Deferred:
        """BYE when answered; before that, decline the call (603)."""
        if self.state == EARLY and not self.answered:
            self.reject(603)
            return succeed(None)
        return super().hangup()

    def remote_cancel(self) -> None:
        """The caller CANCELled before our final response (§9.2): 487 the INVITE."""
        if self.state == EARLY and not self.tx.answered:
            self.tx.respond(self._response(487))
            self._end("cancelled by caller")

    def _remote_bye(self) -> None:
        if not self.tx.answered:
            self.tx.respond(self._response(487))
        super()._remote_bye()
        if self._answered is not None:
            self._answered.fire(CallFailed(487, "caller hung up before the ACK"))

    def _end(self, reason: str) -> None:
        super()._end(reason)
        tx = self.tx
        if tx.tu is self and tx.answered:
            tx.tu = _EndedCall(self.local_tag)

    def _no_ack_for_error(self) -> None:
        log.debug("no ACK for the error response to {call_id}", call_id=self.call_id)

    def _stop_timers(self) -> None:
        _cancel_call(self._retransmit)
        self._retransmit = None
        self._final = None
