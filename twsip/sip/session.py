"""Dialog state (RFC 3261 §12) shared by both ends of a call, and how a call ends.

`Session` keeps the tags, Call-ID, CSeq numbers, remote target and route set, builds the
requests sent inside the dialog, answers the ones received there, and offers the ending API
(`hangup()`, `when_ended()`) that both `ClientSession` (uac) and `ServerSession` (uas) share.
It talks to its user agent only through the small `UserAgent` protocol, so nothing here
knows about sockets.
"""

from __future__ import annotations

import enum
from typing import Callable, Protocol

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger

from twsip.interfaces import TimeSource
from twsip.outcome import Outcome
from twsip.sip.ack_wait import AckWait
from twsip.sip.call_media import (
    DTMF_INFO_TYPES,
    CallMedia,
    MediaFactory,
    dtmf_info_body,
    parse_dtmf_info,
)
from twsip.sip.challenged import send_answering_challenges
from twsip.sip.limits import CallLimits
from twsip.sip.message import (
    Message,
    NameAddr,
    Request,
    Response,
    request_headers,
    warning_value,
)
from twsip.sip.midcall_state import MidCallState
from twsip.sip.reinvite import ALLOWED_METHODS, ReInvite, overlap_refusal
from twsip.sip.sdp import MediaSession, NegotiatedMedia, OfferAnswerStateError, SdpError
from twsip.sip.transaction import (
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    TransactionLayer,
)
from twsip.sip.uri import Address, loopback_address

__all__ = ["ALLOWED_METHODS", "CallFailed", "DialogState", "FinalResponse", "Session",
           "TransferHandler", "UserAgent"]

log = Logger(namespace="twsip.dialog")


class DialogState(enum.Enum):
    EARLY = "early"          # no final answer yet (the dialog may not exist on the wire)
    CONFIRMED = "confirmed"  # a 2xx was sent or received
    ENDED = "ended"


EARLY = DialogState.EARLY
CONFIRMED = DialogState.CONFIRMED
ENDED = DialogState.ENDED


class CallFailed(Exception):
    """A call that did not come about or did not end well, with the SIP status that says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class TransferHandler(Protocol):
    """Who serves REFER and NOTIFY inside a dialog (twsip.sip.transfer, on the instance)."""

    def receive(self, session: Session, request: Request, tx: ServerTransaction) -> None: ...
    def refer(self, session: Session, target: str) -> Deferred[str]: ...


class UserAgent(Protocol):
    """What a session needs from its user agent (implemented by `SipInstance`)."""

    dn: str
    host: str
    port: int
    codecs: tuple[str, ...]
    limits: CallLimits  # its calls' deadlines: session timers, idle limit

    @property
    def clock(self) -> TimeSource: ...
    @property
    def transactions(self) -> TransactionLayer: ...
    @property
    def media_factory(self) -> MediaFactory | None: ...
    @property
    def contact(self) -> str: ...
    def new_via(self) -> str: ...
    def new_tag(self) -> str: ...
    def send_message(self, message: Message, addr: Address, data: bytes | None = None
                     ) -> None: ...
    def register_dialog(self, session: Session) -> None: ...
    def unregister_dialog(self, session: Session) -> None: ...
    @property
    def transfers(self) -> TransferHandler: ...


class FinalResponse:
    """A client transaction's user that only wants the outcome: the final response, or
    CallFailed(408) when none came (BYE, OPTIONS)."""

    __slots__ = ("outcome", "method")

    def __init__(self, outcome: Outcome, method: str) -> None:
        self.outcome = outcome
        self.method = method

    def receive_response(self, response: Response) -> None:
        if response.status >= 200:
            self.outcome.fire(response)

    def timed_out(self) -> None:
        self.outcome.fire(CallFailed(408, f"no response to {self.method}"))


ServerTransaction = ServerInviteTransaction | ServerNonInviteTransaction


_NO_ROUTES: tuple[str, ...] = ()


class CallRecord:
    """What a call keeps: its dialog state (RFC 3261 §12) and the parts of a call made on
    first use. `Session` is what a call does with it.

    Thousands of calls may be up at once in one process, and every object a call keeps
    is walked by each full garbage collection: so calls have `__slots__`, and what most
    calls never use (the end's Outcome, the mid-call state) is made when first asked for.
    """

    __slots__ = ("ua", "call_id", "local_tag", "remote_tag", "local_uri", "remote_uri",
                 "local_cseq", "remote_cseq", "remote_target", "route_set", "peer", "state",
                 "remote_sdp", "local_sdp", "media", "media_closed", "sdp", "negotiated",
                 "end_reason", "_ended", "_hangup", "_ack_wait", "_our_reinvite", "_midcall",
                 "__weakref__", "__dict__")  # a dict only if something else is set on it

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
        # A tuple: most calls have no route set, and the empty tuple is shared.
        self.route_set: tuple[str, ...] = _NO_ROUTES
        self.peer: Address = ("127.0.0.1", 5060)
        self.state = EARLY
        self.remote_sdp: bytes | None = None
        self.local_sdp: bytes | None = None
        self.media: CallMedia | None = None  # opened when our SDP needs a port
        self.media_closed: CallMedia | None = None  # the media once closed, for reports
        self.sdp: MediaSession | None = None  # offer/answer state (RFC 3264)
        self.negotiated: NegotiatedMedia | None = None
        self.end_reason: str | None = None
        self._ended: Outcome | None = None  # made when somebody waits for the end
        self._hangup: Outcome | None = None
        self._ack_wait: AckWait | None = None  # our last 2xx to an INVITE, until its ACK
        self._our_reinvite: ReInvite | None = None  # our re-offer, until its ACK or failure
        self._midcall: MidCallState | None = None  # see `midcall`

    @property
    def midcall(self) -> MidCallState:
        """Hold state and transfers, for the layers above; made when first asked for (a
        flow's HELD node, a transfer), in the state it would have had from the start."""
        midcall = self._midcall
        if midcall is None:
            midcall = self._midcall = MidCallState()
            midcall.negotiated = self.negotiated
            if self.state is ENDED:
                midcall.close(self.end_reason or "ended")
        return midcall

    @property
    def dialog_id(self) -> tuple[str, str, str | None]:
        return (self.call_id, self.local_tag, self.remote_tag)

    @property
    def ended(self) -> bool:
        return self.state is ENDED

    @property
    def established(self) -> bool:
        return self.state is CONFIRMED

    def when_ended(self) -> Deferred[str]:
        """A new Deferred firing with a short reason once the dialog ends, from either side."""
        ended = self._ended
        if ended is None:
            if self.state is ENDED:
                return succeed(self.end_reason or "ended")
            ended = self._ended = Outcome()
        return ended.wait()


class Session(CallRecord):
    """Dialog state shared by both ends of a call (`CallRecord`), and how a call ends."""

    __slots__ = ()

    owns_call_id = False  # whether we made the Call-ID up: §14.1's glare timers differ

    def hangup(self) -> Deferred:
        """End an established call with BYE; fires with the BYE's final response."""
        if self._hangup is not None:
            return self._hangup.wait()
        if self.state is not CONFIRMED:
            return fail(CallFailed(481, f"call {self.call_id} is not established"))
        outcome = self._hangup = Outcome()
        send_answering_challenges(self, self.in_dialog_request("BYE"), self.destination(),
                                  FinalResponse(outcome, "BYE"))  # a PBX may challenge it
        self._end("local hangup")
        return outcome.wait()

    # -- re-INVITEs we send (§14.1) --------------------------------------------------------
    def hold(self) -> Deferred[NegotiatedMedia]:
        """Hold the peer (sendonly, or inactive if it holds us); see twsip.sip.reinvite."""
        return self.reoffer(MediaSession.make_hold_offer)

    def retrieve(self) -> Deferred[NegotiatedMedia]:
        """Take the peer off hold: re-INVITE offering sendrecv."""
        return self.reoffer(MediaSession.make_offer)

    def reoffer(self, make_offer: Callable[[MediaSession], bytes]) -> Deferred[NegotiatedMedia]:
        if self.state is not CONFIRMED:
            return fail(CallFailed(481, f"call {self.call_id} is not established"))
        if self._our_reinvite is not None or (self.sdp is not None and self.sdp.offer_pending):
            return fail(CallFailed(491, "another offer of ours is still in progress"))
        outcome = Outcome()
        self._our_reinvite = ReInvite(self, make_offer, outcome, CallFailed)
        self._our_reinvite.send()
        return outcome.wait()

    def reinvite_done(self, reinvite: ReInvite) -> None:
        if self._our_reinvite is reinvite:
            self._our_reinvite = None

    def refer(self, target: str) -> Deferred[str]:
        """Transfer the peer to `target` (REFER, RFC 3515); see twsip.sip.transfer."""
        return self.ua.transfers.refer(self, target)

    # -- requests inside the dialog (§12.2.1.1) -------------------------------------------
    def in_dialog_request(self, method: str, cseq: int | None = None) -> Request:
        """A request inside the dialog; a new CSeq number unless one is given (ACK)."""
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        to = NameAddr(self.remote_uri, params={"tag": self.remote_tag} if self.remote_tag else {})
        frm = NameAddr(self.local_uri, params={"tag": self.local_tag})
        uri = self.remote_target
        headers = request_headers(method, cseq, via=self.ua.new_via(), from_=str(frm),
                                  to=str(to), call_id=self.call_id)
        if self.route_set:
            if ";lr" in self.route_set[0]:
                headers["route"] = list(self.route_set)
            else:  # strict router (§12.2.1.1): it takes the Request-URI's place
                uri = self.route_set[0].strip("<>")
                headers["route"] = [*self.route_set[1:], f"<{self.remote_target}>"]
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

    def receive_request(self, request: Request, tx: ServerTransaction) -> None:
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
        elif request.method == "INFO":
            self._receive_info(request, tx)
        elif request.method in ("REFER", "NOTIFY"):
            self.ua.transfers.receive(self, request, tx)
        elif request.method == "UPDATE":  # RFC 3311; here a session refresh (RFC 4028)
            self.ua.limits.timers.update(self, request, tx)
        else:
            tx.respond(request.response(200))

    def _reinvite(self, request: Request, tx: ServerTransaction) -> None:
        """A new offer (hold, retrieve, a refresh) answered by RFC 3264: direction
        mirrored, 488 when nothing can be accepted, and the old session kept then; without
        an offer, our offer goes in the 2xx and the answer comes in the ACK."""
        refusal = overlap_refusal(request, self._our_reinvite, self.established,
                                  self._ack_wait is not None)
        if refusal is not None:  # 491 or 500 + Retry-After (§14.2)
            tx.respond(refusal)
            return
        session = self._start_sdp()
        try:
            if request.body:
                body, negotiated = session.receive_offer(request.body)
            else:
                body, negotiated = session.make_offer(), None
        except SdpError as exc:
            response = request.response(488)
            response.set("warning", warning_value(str(exc)[:120], 304))
            tx.respond(response)
            return
        except OfferAnswerStateError:  # our own re-offer is out: glare (§14.2)
            tx.respond(request.response(491))
            return
        response = request.response(200)
        response.set("contact", f"<{self.ua.contact}>")
        response.set("supported", "replaces")
        response.set("content-type", "application/sdp")
        response.body = self.local_sdp = body
        self.ua.limits.negotiate(self, request, response)  # a refresh (RFC 4028)
        tx.respond(response)
        self._wait_for_ack(response, request.cseq.number)
        if negotiated is not None:
            self._apply(negotiated)

    # -- the 2xx to an INVITE and its ACK (§13.3.1.4) -------------------------------------
    def _wait_for_ack(self, response: Response, cseq: int) -> None:
        if self._ack_wait is not None:
            self._ack_wait.stop()
        self._ack_wait = AckWait(self, response, cseq)

    def ack_received(self, ack: Request) -> None:
        """An ACK in this dialog: the one for our pending 2xx stops its retransmission;
        any other (a retransmission, a late one) changes nothing."""
        wait = self._ack_wait
        if wait is not None and ack.cseq.number == wait.cseq:
            wait.stop()
            self._ack_wait = None  # the 2xx goes with it
            self._acked(ack)

    def _acked(self, ack: Request) -> None:
        """The ACK for our last 2xx arrived: with a body, the answer to an offer we made in
        that 2xx (an INVITE without SDP)."""
        if ack.body and self.sdp is not None and self.sdp.offer_pending:
            self.remote_sdp = ack.body
            try:
                self._apply(self.sdp.receive_answer(ack.body))
            except SdpError as exc:
                # Too late to refuse: the call is up; it ends (§13.3.1.4's spirit).
                log.warn("call {call_id}: unusable SDP answer in the ACK ({why}): hanging up",
                         call_id=self.call_id, why=str(exc))
                self.hangup().addErrback(lambda _: None)

    def no_ack(self) -> None:
        """64*T1 without the ACK for our 2xx: the dialog is confirmed but ends with BYE."""
        self._ack_wait = None
        if self.state is CONFIRMED:
            self.hangup().addErrback(lambda _: None)

    # -- the end ---------------------------------------------------------------------------
    def _remote_bye(self) -> None:
        self._end("remote hangup")

    def _end(self, reason: str) -> None:
        if self.state is ENDED:
            return
        self.state = ENDED
        self.end_reason = reason
        self._stop_timers()
        self._close_media()
        self.ua.unregister_dialog(self)
        if self._our_reinvite is not None:
            self._our_reinvite.stop(f"the call ended ({reason})")
            self._our_reinvite = None
        if self._midcall is not None:  # else it is made closed, if ever
            self._midcall.close(reason)
        if self._ended is not None:  # else `when_ended` answers from `end_reason`
            self._ended.fire(reason)

    # -- media ------------------------------------------------------------------------------
    def _open_media(self) -> int:
        """The RTP port our SDP names: this call's own endpoint, or (an instance without
        media) the placeholder port where nothing listens."""
        factory = self.ua.media_factory
        if factory is None:  # a port away from the SIP ports, where nothing listens
            port = self.ua.port
            return port + 10000 if port < 55000 else port - 10000
        if self.media is None:
            self.media = factory.open(self.call_id)
            self.media.send_info = self.send_dtmf_info
        return self.media.port

    def _start_sdp(self) -> MediaSession:
        """The call's offer/answer state, with our RTP port in it."""
        if self.sdp is None:
            self.sdp = MediaSession(self.ua.codecs, self.ua.host, self._open_media())
        return self.sdp

    def _apply(self, negotiated: NegotiatedMedia) -> None:
        """An offer/answer completed: the RTP endpoint follows it (RFC 3264: the new
        session replaces the old one only now)."""
        self.negotiated = negotiated
        if self._midcall is not None:  # else it starts from `negotiated` when made
            self._midcall.media_changed(negotiated)
        media = self.media
        if media is None:
            return
        media.configure(remote=negotiated.remote, codec=negotiated.codec,
                        audio_pt=negotiated.payload_type,
                        event_pt=negotiated.telephone_event,
                        receive_event_pt=negotiated.local_telephone_event,
                        direction=negotiated.local_direction.value)

    def _close_media(self) -> None:
        media, self.media = self.media, None
        if media is not None:
            media.close()
            self.media_closed = media

    @property
    def any_media(self) -> CallMedia | None:
        """The call's media, open or (once the call ended) as it was at its close."""
        return self.media if self.media is not None else self.media_closed

    def send_dtmf_info(self, digit: str, duration_ms: int = 100) -> Deferred[Response]:
        """One digit as SIP INFO (``application/dtmf-relay``) in the dialog."""
        if self.state is not CONFIRMED:
            return fail(CallFailed(481, f"call {self.call_id} is not established"))
        request = self.in_dialog_request("INFO")
        request.set("content-type", "application/dtmf-relay")
        request.body = dtmf_info_body(digit, duration_ms)
        outcome = Outcome()
        ClientNonInviteTransaction(self.ua.transactions, request, self.destination(),
                                   FinalResponse(outcome, "INFO"))
        return outcome.wait()

    def _receive_info(self, request: Request, tx: ServerTransaction) -> None:
        """INFO in the dialog: a DTMF digit for the call's media; other packages 415."""
        content_type = request.content_type
        if request.body and content_type not in DTMF_INFO_TYPES:
            response = request.response(415)
            response.set("accept", ", ".join(DTMF_INFO_TYPES))
            tx.respond(response)
            return
        tx.respond(request.response(200))
        digit = parse_dtmf_info(content_type, request.body)
        if digit is not None and self.media is not None:
            self.media.info_digit(digit)

    def _stop_timers(self) -> None:
        self.ua.limits.ended(self)
        if self._ack_wait is not None:
            self._ack_wait.stop()
            self._ack_wait = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.call_id} {self.state.value}>"
