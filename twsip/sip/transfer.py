"""Call transfer: REFER (RFC 3515) and its implicit subscription (RFC 6665 ``Event:
refer``, message/sipfrag NOTIFYs), Referred-By (RFC 3892), the transfer patterns of RFC
5589, and Replaces in the Refer-To URI for an attended transfer (RFC 3891).

Three parties. The *transferor* sends REFER inside its call with the *transferee*, waits
for the NOTIFY whose sipfrag carries the final status of the transferee's new call, and
then ends its own leg with BYE (RFC 5589 §6-7). The *transferee* (caller or callee of the
referring call, alike) answers 202, reports ``100 Trying`` at once and the final status
later, calls the target (copying Referred-By, and Replaces when the Refer-To URI carries
one) and, once the new call is answered, hands the old call's place over to it (the flow's
callId then names the new call). The old call is ended by the transferor; if that BYE has
not come `TRANSFEREE_BYE_GRACE` seconds after the final NOTIFY, the transferee sends its
own, so a transferor that never hangs up leaves no call behind. The *target* of an
attended transfer honours Replaces (twsip.sip.replaces).

Local mode holds here too: a Refer-To that is not a loopback sip: URI is refused 403 and
never resolved, and a REFER outside any dialog is refused 403 by the UA core.
"""

from __future__ import annotations

from typing import Protocol
from urllib.parse import quote, unquote

from twisted.internet.defer import Deferred, fail
from twisted.logger import Logger
from twisted.python.failure import Failure

from twsip.interfaces import DelayedCall, cancel_call
from twsip.lexical import wire_number
from twsip.outcome import Outcome
from twsip.sip.message import Request, Response, SipParseError, parse_name_addr, parse_params
from twsip.sip.session import CallFailed, ServerTransaction, Session, UserAgent
from twsip.sip.transaction import NO_USER, ClientNonInviteTransaction
from twsip.sip.uac import ClientSession
from twsip.sip.uri import Address, loopback_address

__all__ = ["Transfers", "replaces_target", "parse_sipfrag", "TRANSFEREE_BYE_GRACE"]

log = Logger(namespace="twsip.dialog")

TRANSFEREE_BYE_GRACE = 2.0   # seconds the transferee leaves the transferor to BYE first
TRANSFER_CALL_TIMEOUT = 32.0  # the transferee's new call, unanswered, fails after this
SUBSCRIPTION_EXPIRES = 60


class TransferUA(UserAgent, Protocol):
    """What a transfer needs of its user agent beyond what a dialog does."""

    calls: set[Session]

    def new_call_id(self) -> str: ...


def replaces_target(consult: Session) -> str:
    """The Refer-To URI of an attended transfer: the consulted party's contact with the
    consult dialog in a Replaces header (RFC 3891 §3, tags as the target sees them: its
    own tag is the to-tag), escaped for a URI header (RFC 3261 §19.1.1)."""
    replaces = f"{consult.call_id};to-tag={consult.remote_tag};from-tag={consult.local_tag}"
    return f"{consult.remote_target}?Replaces={quote(replaces, safe='')}"


def parse_sipfrag(body: bytes) -> tuple[int, str] | None:
    """The status line of a message/sipfrag body (RFC 3420), or None."""
    line = body.decode("utf-8", "replace").strip().partition("\n")[0].strip()
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    status = wire_number(code)
    if version.upper() != "SIP/2.0" or status is None or not 100 <= status <= 699:
        return None
    return status, reason.strip()


class _ReferSent:
    """The transferor's side of one REFER: its transaction's user, then the subscription
    its NOTIFYs arrive in."""

    __slots__ = ("owner", "session", "key", "outcome", "accepted")

    def __init__(self, owner: Transfers, session: Session, key: tuple[object, int]) -> None:
        self.owner = owner
        self.session = session
        self.key = key
        self.outcome = Outcome()
        self.accepted = False

    def receive_response(self, response: Response) -> None:
        if response.status < 200:
            return
        if response.status < 300:
            self.accepted = True
            return
        self.finish(CallFailed(response.status, f"REFER rejected: {response.status} "
                                                f"{response.reason}"))

    def timed_out(self) -> None:
        self.finish(CallFailed(408, "no final response to the REFER"))

    def notify(self, status: int, reason: str, terminated: bool) -> None:
        if status < 200 and not terminated:
            return
        if 200 <= status < 300:
            self.session.midcall.transferred.fire(f"transferee reported {status} {reason}")
            self.finish(f"{status} {reason}")
            # RFC 5589 §6.1: the transfer is done; the transferor leaves the call.
            if self.session.established:
                self.session.hangup().addErrback(lambda _: None)
        else:
            self.finish(CallFailed(status, f"the transfer failed: {status} {reason}"))

    def finish(self, result: object) -> None:
        self.owner.sent.pop(self.key, None)
        self.outcome.fire(result)


class _Referred:
    """The transferee's side of one REFER: the new call, and the NOTIFYs about it."""

    __slots__ = ("ua", "old", "event", "target", "addr", "headers", "new", "_grace")

    def __init__(self, ua: TransferUA, old: Session, event: str, target: str, addr: Address,
                 headers: dict[str, list[str]]) -> None:
        self.ua = ua
        self.old = old
        self.event = event
        self.target = target
        self.addr = addr
        self.headers = headers
        self.new: ClientSession | None = None
        self._grace: DelayedCall | None = None

    def start(self) -> None:
        self.notify(100, "Trying", final=False)
        ua = self.ua
        new = self.new = ClientSession(ua, self.target, self.addr, ua.new_call_id(),
                                       TRANSFER_CALL_TIMEOUT, headers=self.headers)
        ua.calls.add(new)  # until it ends: its end unregisters it (registry.remove)
        new.when_answered().addCallbacks(self._answered, self._failed)

    def _answered(self, new: ClientSession) -> None:
        self.notify(200, "OK", final=True)
        old = self.old
        old.midcall.hand_over(old, new, f"transferred to {self.target}")
        if old.established:
            self._grace = self.ua.clock.callLater(TRANSFEREE_BYE_GRACE, self._end_old)
            old.when_ended().addCallback(lambda _: cancel_call(self._grace))

    def _failed(self, failure: Failure) -> None:
        exc = failure.value
        status, reason = ((exc.status, exc.reason) if isinstance(exc, CallFailed)
                          else (500, "Server Internal Error"))
        self.notify(status, reason, final=True)

    def _end_old(self) -> None:
        self._grace = None
        if self.old.established:
            self.old.hangup().addErrback(lambda _: None)

    def notify(self, status: int, reason: str, final: bool) -> None:
        """One NOTIFY of the implicit subscription (RFC 3515 §2.4.4-2.4.5)."""
        old = self.old
        if not old.established:
            return  # the transferor left already: nobody to tell
        request = old.in_dialog_request("NOTIFY")
        request.set("event", self.event)
        request.set("subscription-state", "terminated;reason=noresource" if final
                    else f"active;expires={SUBSCRIPTION_EXPIRES}")
        request.set("content-type", "message/sipfrag;version=2.0")
        request.body = f"SIP/2.0 {status} {reason}\r\n".encode("utf-8", "replace")
        ClientNonInviteTransaction(self.ua.transactions, request, old.destination(), NO_USER)


class Transfers:
    """REFER and NOTIFY for the dialogs of one user agent (`SipInstance.transfers`)."""

    def __init__(self, ua: TransferUA) -> None:
        self.ua = ua
        self.sent: dict[tuple[object, int], _ReferSent] = {}

    # -- the transferor ---------------------------------------------------------------------
    def refer(self, session: Session, target: str) -> Deferred[str]:
        """REFER the peer of `session` to `target`; fires with the final status line the
        transferee reported (2xx), after which this side ends the call with BYE. Fails
        with CallFailed on a rejected REFER, a failed new call, or the call's end."""
        if not session.established:
            return fail(CallFailed(481, f"call {session.call_id} is not established"))
        if loopback_address(target.partition("?")[0]) is None:
            return fail(CallFailed(403, f"local mode transfers only to loopback sip: URIs, "
                                        f"not {target!r}"))
        request = session.in_dialog_request("REFER")
        request.set("refer-to", f"<{target}>")
        request.set("referred-by", f"<{session.local_uri}>")
        key = (session.dialog_id, request.cseq.number)
        sent = self.sent[key] = _ReferSent(self, session, key)
        session.when_ended().addCallback(
            lambda reason: sent.finish(CallFailed(481, f"the call ended before the "
                                                       f"transfer completed ({reason})")))
        ClientNonInviteTransaction(self.ua.transactions, request, session.destination(), sent)
        return sent.outcome.wait()

    # -- requests inside a dialog -----------------------------------------------------------
    def receive(self, session: Session, request: Request, tx: ServerTransaction) -> None:
        if request.method == "REFER":
            self._refer(session, request, tx)
        else:
            self._notify(session, request, tx)

    def _notify(self, session: Session, request: Request, tx: ServerTransaction) -> None:
        package, _, params = (request.get("event") or "").partition(";")
        if package.strip().lower() != "refer":
            tx.respond(request.response(489, "Bad Event"))
            return
        try:
            event_id = wire_number(str(parse_params(";" + params).get("id") or ""))
        except SipParseError:
            event_id = None
        sent = self.sent.get((session.dialog_id, event_id)) if event_id is not None else \
            next((s for k, s in self.sent.items() if k[0] == session.dialog_id), None)
        if sent is None:  # RFC 6665 §4.1.3: no such subscription
            tx.respond(request.response(481, "Subscription Does Not Exist"))
            return
        frag = parse_sipfrag(request.body)
        if frag is None:
            tx.respond(request.response(400, "Bad Request (no message/sipfrag status line)"))
            return
        tx.respond(request.response(200))
        state = (request.get("subscription-state") or "").strip().lower()
        sent.notify(frag[0], frag[1], state.startswith("terminated"))

    # -- the transferee ---------------------------------------------------------------------
    def _refer(self, session: Session, request: Request, tx: ServerTransaction) -> None:
        values = request.get_all("refer-to")
        try:
            if len(values) != 1:
                raise SipParseError(400, "a REFER needs exactly one Refer-To")
            uri = parse_name_addr(values[0]).uri
        except SipParseError as exc:
            tx.respond(request.response(400, f"Bad Request ({exc.reason})"))
            return
        target, _, header_part = uri.partition("?")
        addr = loopback_address(target)
        if addr is None or not session.established:
            response = request.response(403)
            response.set("warning", '399 twsip "local mode: Refer-To must be a loopback sip:'
                                    ' URI, in an established call"')
            tx.respond(response)
            return
        headers: dict[str, list[str]] = {}
        for pair in header_part.split("&") if header_part else ():
            name, _, value = pair.partition("=")
            if name.strip().lower() == "replaces" and value:
                headers["replaces"] = [unquote(value)]
        referred_by = request.get("referred-by")
        if referred_by:
            headers["referred-by"] = [referred_by]
        response = request.response(202)
        response.set("contact", f"<{self.ua.contact}>")
        tx.respond(response)
        event = f"refer;id={request.cseq.number}"
        _Referred(self.ua, session, event, target, addr, headers).start()
