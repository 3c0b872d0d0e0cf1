"""A call this user agent places (the UAC side of RFC 3261 §13.2), and its cancelling (§9.1)."""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from twsip.outcome import Outcome
from twsip.sip.digest import ChallengeAnswerer
from twsip.sip.sdp import SdpError
from twsip.sip.message import Request, Response, parse, request_headers
from twsip.sip.session import (
    ALLOWED_METHODS,
    CONFIRMED,
    EARLY,
    ENDED,
    CallFailed,
    Session,
    UserAgent,
)
from twsip.sip.challenged import send_answering_challenges
from twsip.sip.midcall_state import MidCallState
from twsip.sip.retained import rebuild_request, rebuild_response, retain
from twsip.sip.transaction import (
    NO_USER,
    ClientInviteTransaction,
    build_cancel,
)
from twsip.sip.uri import Address

__all__ = ["ClientSession"]


log = Logger(namespace="twsip.dialog")


class ClientSession(Session):
    """A call this user agent places; the user of its INVITE client transaction.

    `headers` go into the INVITE as they are (a transferee's Referred-By and Replaces).

    Once the call is up, the INVITE and the responses to it are kept as their bytes
    (`twsip.sip.retained`): `invite`, `provisional` and `final_response` then parse them
    again when asked, a new copy each time."""

    __slots__ = ("challenges", "_provisional", "_final_response", "_answered", "_ringing",
                 "_cancel_pending", "_cancelled", "_ack", "_invite", "_tx", "_setup_limit")

    owns_call_id = True

    def __init__(self, ua: UserAgent, target: str, addr: Address, call_id: str,
                 timeout: float | None = None, from_uri: str | None = None,
                 headers: dict[str, list[str]] | None = None) -> None:
        super().__init__(ua, call_id, ua.new_tag())
        # Set for a call through a PBX that may challenge the INVITE (401/407, §22).
        self.challenges: ChallengeAnswerer | None = None
        self.local_uri = from_uri or f"sip:{ua.dn}@{ua.host}:{ua.port}"
        self.remote_uri = target
        self.remote_target = target
        self.peer = addr
        # Parsed while early; a tuple of bytes once up (not even walked by the collector).
        self._provisional: list[Response] | tuple[bytes, ...] = []
        self._final_response: Response | bytes | None = None
        # None once fired with this session: `when_answered` then succeeds at once.
        self._answered: Outcome | None = Outcome()
        self._ringing: Outcome | None = None  # made when somebody waits for ringing
        self._cancel_pending = False
        self._cancelled = False
        self._ack: bytes | None = None  # the ACK for our 2xx, sent again for each repeat
        self.local_cseq = 1
        self.local_sdp = self._start_sdp().make_offer()
        self._invite: Request | bytes = self._build_invite(headers or {})
        self._tx = ClientInviteTransaction(ua.transactions, self._invite, addr, self)
        # The set-up limit waits in the instance's shared deadlines, not a DelayedCall.
        self._setup_limit: float | None = None
        if timeout:
            self._setup_limit = timeout
            ua.limits.setup.set(self, timeout)

    # -- what the call keeps of its messages ----------------------------------------------
    @property
    def invite(self) -> Request:
        """Our (last) INVITE; once the call is up, a copy parsed from its bytes."""
        invite = self._invite
        if type(invite) is bytes:
            return rebuild_request(invite, sent=True)
        assert isinstance(invite, Request)
        return invite

    @invite.setter
    def invite(self, invite: Request) -> None:
        self._invite = invite

    @property
    def provisional(self) -> list[Response]:
        """The 1xx responses received, in order (copies parsed again once the call is up)."""
        kept = self._provisional
        if type(kept) is tuple:
            return [rebuild_response(data) for data in kept]
        return kept  # type: ignore[return-value]

    @property
    def final_response(self) -> Response | None:
        """The final response (a 2xx, or the refusal); a copy once the call is up."""
        final = self._final_response
        if type(final) is bytes:
            return rebuild_response(final)
        return final  # type: ignore[return-value]

    def _compact(self) -> None:
        """The call is up: its messages are kept as bytes (`twsip.sip.retained`)."""
        if type(self._invite) is not bytes:
            self._invite = retain(self._invite)  # type: ignore[arg-type]
        if type(self._provisional) is list:
            self._provisional = tuple(retain(r) for r in self._provisional)
        final = self._final_response
        if final is not None and type(final) is not bytes:
            self._final_response = retain(final)  # type: ignore[arg-type]

    def _build_invite(self, extra: dict[str, list[str]]) -> Request:
        headers = request_headers("INVITE", 1, via=self.ua.new_via(),
                                  from_=f"<{self.local_uri}>;tag={self.local_tag}",
                                  to=f"<{self.remote_uri}>", call_id=self.call_id)
        headers["contact"] = [f"<{self.ua.contact}>"]
        headers["allow"] = list(ALLOWED_METHODS)
        headers["supported"] = ["replaces"]
        headers.update(extra)
        headers["content-type"] = ["application/sdp"]
        return Request("INVITE", self.remote_target, headers, self.local_sdp or b"")

    def when_answered(self) -> Deferred[ClientSession]:
        """Fires with this session once a 2xx arrived and was ACKed; fails with CallFailed.

        Cancelling the returned Deferred before the final response cancels the call.
        """
        if self._answered is None:
            return succeed(self)
        return self._answered.wait(lambda _d: self.cancel())

    def when_ringing(self) -> Deferred[Response]:
        """Fires with the first 180/183 received; fails with CallFailed if none comes."""
        ringing = self._ringing
        if ringing is None:
            # Made on first use; a failure makes it at once, so what is settled without
            # it is a 180/183 received (still in `provisional`) or an answer without one.
            ringing = self._ringing = Outcome()
            first = next((r for r in self.provisional if r.status in (180, 183)), None)
            if first is not None:
                ringing.fire(first)
            elif self._ack is not None:
                ringing.fire(CallFailed(200, "answered without ringing"))
        return ringing.wait()

    def _ringing_outcome(self) -> Outcome:
        if self._ringing is None:
            self._ringing = Outcome()
        return self._ringing

    # -- what the INVITE transaction reports (ClientTransactionUser) ----------------------
    def receive_response(self, response: Response) -> None:
        status = response.status
        if status < 200:
            self._provisional.append(response)  # type: ignore[union-attr]  # early: a list
            tag = response.to.tag
            if tag and self.remote_tag is None and self.state is EARLY:
                self.remote_tag = tag
            if self._cancel_pending:
                self._send_cancel()
            if status in (180, 183) and self._ringing is not None:
                self._ringing.fire(response)  # else `when_ringing` finds it in provisional
        elif status < 300:
            self._on_2xx(response)
        elif status in (401, 407) and self._answer_challenge(response):
            return
        else:
            self._final_response = response
            self._fail(CallFailed(status, response.reason), f"rejected {status}")

    def timed_out(self) -> None:
        self._fail(CallFailed(408, "no final response to INVITE (Timer B)"), "timeout")

    def _answer_challenge(self, response: Response) -> bool:
        """The INVITE again with credentials (§22.2: same Call-ID and tags, CSeq + 1, a new
        transaction), when `challenges` may answer this one; False: the 401/407 is final."""
        if self.challenges is None or self.state is not EARLY or self._cancelled:
            return False
        retry = self.challenges.retry(self.invite, response, self.ua.new_via())
        if retry is None:
            return False
        if self._ringing is None and any(r.status in (180, 183) for r in self.provisional):
            self.when_ringing()  # it rang before the challenge: that stays the answer
        self.invite = retry
        self.local_cseq = retry.cseq.number
        self._provisional = []
        self._tx = ClientInviteTransaction(self.ua.transactions, retry, self._tx.addr, self)
        return True

    def _on_2xx(self, response: Response) -> None:
        tag = response.to.tag
        if self._ack is not None:
            if tag == self.remote_tag:  # re-ACK (§13.2.2.4): rare, so parsed again here
                self.ua.send_message(parse(self._ack), self.destination())
            return
        self._final_response = response
        self.remote_tag = tag
        self.remote_sdp = response.body or None
        unusable = self._take_answer(response.body)
        contacts = response.contact
        if contacts:
            self.remote_target = contacts[0].uri
        routes = response.headers.get("record-route")
        if routes:
            self.route_set = tuple(reversed(routes))
        self.peer = self._tx.addr
        ack = self.in_dialog_request("ACK", self.invite.cseq.number)
        self._ack = ack.to_bytes()
        self.ua.send_message(ack, self.destination(), self._ack)
        self._stop_setup_limit()
        self._compact()  # all the dialog needs is taken out of the messages now
        if self._cancelled or self.state is ENDED:
            # A 2xx that crossed our CANCEL: confirm it, then end it at once (§15).
            self.state = CONFIRMED
            self.ua.register_dialog(self)
            self._hangup = None
            self.hangup().addErrback(lambda _: None)
            return
        self.state = CONFIRMED
        self.ua.register_dialog(self)
        if unusable is not None:
            # ACKed, since the 2xx must be; then ended, since no media can flow (§13.2.1).
            self._answered_outcome().fire(CallFailed(488, f"unusable SDP answer: {unusable}"))
            self._ringing_outcome().fire(CallFailed(488, "unusable SDP answer"))
            self.hangup().addErrback(lambda _: None)
            return
        # Answered: the Outcome goes once fired (`when_answered` then succeeds at once),
        # so the session and it form no cycle and the call keeps two objects fewer.
        answered, self._answered = self._answered, None
        if answered is not None:
            answered.fire(self)
        if self._ringing is not None:
            self._ringing.fire(CallFailed(200, "answered without ringing"))

    def _take_answer(self, body: bytes) -> str | None:
        """The answer to our INVITE's offer; None when usable, else why not."""
        if self.sdp is None or not self.sdp.offer_pending:
            return None
        if not body:
            # §13.2.1 wants the answer in the 2xx; a peer that forgets it still gets its
            # call, only without media (RTP has nowhere to go).
            log.warn("call {call_id}: the 2xx has no SDP answer; the call has no media",
                     call_id=self.call_id)
            self.sdp.cancel_offer()
            return None
        try:
            self._apply(self.sdp.receive_answer(body))
        except SdpError as exc:
            return str(exc)
        return None

    def setup_timed_out(self) -> None:
        """The set-up limit (`timeout`) passed (called by `CallLimits.setup`)."""
        timeout, self._setup_limit = self._setup_limit, None
        if self.state is EARLY:
            self._request_cancel()
            self._fail(CallFailed(408, f"no answer within {timeout or 0:g} s"), "timeout")

    def _stop_setup_limit(self) -> None:
        if self._setup_limit is not None:
            self._setup_limit = None
            self.ua.limits.setup.discard(self)

    def _answered_outcome(self) -> Outcome:
        if self._answered is None:  # fired with this session already: fires nothing
            self._answered = Outcome()
            self._answered.fire(self, owner=True)
        return self._answered

    def _fail(self, failure: CallFailed, reason: str) -> None:
        self._stop_setup_limit()
        self._answered_outcome().fire(failure)
        self._ringing_outcome().fire(failure)
        self._end(reason)

    # -- cancelling (§9.1) ----------------------------------------------------------------
    def cancel(self) -> None:
        """Give up on a call not yet answered: CANCEL it; the call fails with 487."""
        if self.state is not EARLY:
            return
        self._request_cancel()
        self._fail(CallFailed(487, "Request Terminated (cancelled by caller)"), "cancelled")

    def _request_cancel(self) -> None:
        self._cancelled = True
        if self.provisional:
            self._send_cancel()
        else:
            self._cancel_pending = True  # a CANCEL may only follow a provisional response

    def _send_cancel(self) -> None:
        self._cancel_pending = False
        # Never once the call is up: a CANCEL only follows a provisional response
        # to an INVITE not answered yet, so `invite` is still the parsed request here.
        send_answering_challenges(self, build_cancel(self.invite), self._tx.addr, NO_USER)

    def hangup(self) -> Deferred:
        if self.state is EARLY:
            self.cancel()
            return succeed(None)
        return super().hangup()

    def _end(self, reason: str) -> None:
        if self.state is EARLY and reason in ("cancelled", "timeout"):
            # The INVITE transaction lives on to receive the 487 (or a crossing 2xx).
            if self._midcall is None:  # it stays open (a crossing 2xx ends it later)
                self._midcall = MidCallState()
            self.state = ENDED
            self.end_reason = reason
            self._close_media()
            self.ua.unregister_dialog(self)  # out of `calls` (a crossing 2xx puts it back)
            if self._ended is not None:
                self._ended.fire(reason)
            return
        super()._end(reason)
        tx = self._tx
        if self._ack is not None and tx.user is self:
            # All the INVITE transaction can still pass up (Timer M, 32 s) is a 2xx
            # retransmission, which gets the same ACK again: hand it just that, so that
            # the ended session is not kept alive for it.
            tx.replace_user(_ReAck(self.ua, self._ack, self.remote_tag,
                                   self.destination()))

    def _stop_timers(self) -> None:
        super()._stop_timers()
        self._stop_setup_limit()


class _ReAck:
    """A confirmed call's INVITE transaction user once the call has ended: ACK again each
    retransmitted 2xx from the dialog's peer (§13.2.2.4), as `ClientSession._on_2xx` does.
    It keeps the ACK's bytes only, and rebuilds the message in the rare case it is needed."""

    __slots__ = ("ua", "ack", "remote_tag", "destination")

    def __init__(self, ua: UserAgent, ack: bytes, remote_tag: str | None,
                 destination: Address) -> None:
        self.ua = ua
        self.ack = ack
        self.remote_tag = remote_tag
        self.destination = destination

    def receive_response(self, response: Response) -> None:
        if 200 <= response.status < 300 and response.to.tag == self.remote_tag:
            self.ua.send_message(parse(self.ack), self.destination)

    def timed_out(self) -> None:
        pass  # Accepted has no Timer B
