"""A call this user agent receives (the UAS side of RFC 3261 §13.3)."""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger

from twsip.outcome import Outcome
from twsip.sip.sdp import SdpError
from twsip.sip.message import Request, Response
from twsip.sip.retained import rebuild_request, retain
from twsip.sip.session import (
    ALLOWED_METHODS,
    CONFIRMED,
    EARLY,
    CallFailed,
    Session,
    UserAgent,
)
from twsip.sip.transaction import ServerInviteTransaction
from twsip.sip.uri import Address

__all__ = ["ServerSession"]

log = Logger(namespace="twsip.dialog")


class ServerSession(Session):
    """A call this user agent receives, created by the UA core per new INVITE; the user of
    that INVITE's server transaction.

    Once answered, the INVITE is kept as its bytes (`twsip.sip.retained`): `invite` then
    parses them again when asked, a new copy each time."""

    __slots__ = ("_invite", "tx", "answered", "_answered", "_ringing_sent")

    def __init__(self, ua: UserAgent, invite: Request, tx: ServerInviteTransaction,
                 addr: Address) -> None:
        super().__init__(ua, invite.call_id, ua.new_tag())
        self._invite: Request | bytes = invite
        self.tx = tx
        tx.replace_user(self)
        frm = invite.from_
        self.remote_tag = frm.tag
        self.remote_uri = frm.uri
        self.local_uri = invite.to.uri
        self.remote_cseq = invite.cseq.number
        self.peer = addr
        contacts = invite.contact
        self.remote_target = contacts[0].uri if contacts else frm.uri
        routes = invite.headers.get("record-route")
        if routes:
            self.route_set = tuple(routes)
        self.remote_sdp = invite.body or None
        self.answered = False
        self._answered: Outcome | None = None
        self._ringing_sent = False
        ua.register_dialog(self)

    @property
    def invite(self) -> Request:
        """The INVITE that started the call; once answered, a copy parsed from its bytes."""
        invite = self._invite
        if type(invite) is bytes:
            return rebuild_request(invite)
        assert isinstance(invite, Request)
        return invite

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
        if self.state is not EARLY or self.tx.answered:
            return
        self.tx.respond(self._response(status))
        self._ringing_sent = True

    def answer(self) -> Deferred[ServerSession]:
        """Send 200 with an SDP answer; fires when the ACK arrives, fails with 408 without."""
        if self._answered is not None:
            return self._answered.wait()
        if self.answered:
            return succeed(self)  # answered and ACKed: its Outcome is gone (see _acked)
        if self.state is not EARLY or self.tx.answered:
            return fail(CallFailed(481, f"call {self.call_id} can no longer be answered"))
        response = self._response(200)
        negotiated = None
        try:
            session = self._start_sdp()
            if self.remote_sdp:
                self.local_sdp, negotiated = session.receive_offer(self.remote_sdp)
            else:  # offer in the 2xx, answer in the ACK (§13.2.1)
                self.local_sdp = session.make_offer()
        except SdpError as exc:
            self.reject(488, "Not Acceptable Here")
            return fail(CallFailed(488, str(exc)))
        response.set("allow", list(ALLOWED_METHODS))
        response.set("supported", "replaces")
        response.set("content-type", "application/sdp")
        response.body = self.local_sdp
        self.answered = True
        self.state = CONFIRMED
        answered = self._answered = Outcome()
        invite = self._invite
        assert isinstance(invite, Request)  # kept parsed until now
        self.ua.limits.negotiate(self, invite, response)  # RFC 4028, if offered
        self.tx.respond(response)
        if self.state is CONFIRMED:  # not if the 200 could not be sent (transport_error)
            self._wait_for_ack(response, invite.cseq.number)
            if negotiated is not None:
                self._apply(negotiated)
            # Answered: what the dialog needs of the INVITE has been taken out of it.
            self._invite = retain(invite)
        return answered.wait()

    def _acked(self, ack: Request) -> None:
        super()._acked(ack)  # the answer to an offer in our 2xx, if it was one
        # The Outcome goes once fired with this session (`answer` then succeeds at once):
        # no session <-> Outcome cycle, and two objects fewer for every call that is up.
        answered, self._answered = self._answered, None
        if answered is not None:
            if answered.done:  # failed already (the call ended): that stays the answer
                self._answered = answered
            answered.fire(self)

    def no_ack(self) -> None:
        super().no_ack()
        if self._answered is not None:
            self._answered.fire(CallFailed(408, "no ACK for the 2xx"))

    def reject(self, status: int = 486, reason: str | None = None) -> None:
        """Refuse the call with a final 3xx-6xx status."""
        if not 300 <= status <= 699:
            raise ValueError(f"reject needs a status from 300 to 699, not {status}")
        if self.state is not EARLY or self.tx.answered:
            return
        self.tx.respond(self._response(status, reason))
        self._end(f"rejected {status}")

    def hangup(self) -> Deferred:
        """BYE when answered; before that, decline the call (603)."""
        if self.state is EARLY and not self.answered:
            self.reject(603)
            return succeed(None)
        return super().hangup()

    # -- what the INVITE transaction reports (InviteServerUser) ----------------------------
    def remote_cancel(self) -> None:
        """The caller CANCELled before our final response (§9.2): 487 the INVITE."""
        if self.state is EARLY and not self.tx.answered:
            self.tx.respond(self._response(487))
            self._end("cancelled by caller")

    def timed_out(self) -> None:
        log.debug("no ACK for the error response to {call_id}", call_id=self.call_id)

    def transport_error(self, status: int, reason: str) -> None:
        """Our response could not be sent; the transaction answered for us: call over."""
        self._end(f"failed {status}: {reason}")
        if self._answered is not None:
            self._answered.fire(CallFailed(status, reason))

    def _remote_bye(self) -> None:
        if not self.tx.answered:
            self.tx.respond(self._response(487))
        super()._remote_bye()
        if self._answered is not None:
            self._answered.fire(CallFailed(487, "caller hung up before the ACK"))

    def _end(self, reason: str) -> None:
        super()._end(reason)
        tx = self.tx
        if tx.user is self:
            tx.call_ended(self.local_tag)
