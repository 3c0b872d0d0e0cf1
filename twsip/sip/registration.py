"""An instance's binding at a registrar (RFC 3261 §10.2): REGISTER with digest
credentials, refreshes before the binding runs out, and ``Expires: 0`` at the end.

Kept out of `SipInstance` (which only has to route the responses, as for any client
transaction): a registration is a client of the instance's transaction layer like a call
is, and the instance needs to know nothing of it. Every REGISTER of one binding shares one
Call-ID and counts CSeq up (§10.2.4), so the registrar can tell a refresh from a stale
retransmission.
"""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.python.failure import Failure
from twisted.logger import Logger

from twsip.interfaces import DelayedCall, TimeSource, cancel_call
from twsip.lexical import wire_number
from twsip.outcome import Outcome
from twsip.sip.digest import ChallengeAnswerer, Credentials
from twsip.sip.message import Request, Response, SipParseError, request_headers
from twsip.sip.transaction import ClientNonInviteTransaction, TransactionLayer
from twsip.sip.uri import Address

__all__ = ["Registration", "RegistrationFailed"]

log = Logger(namespace="twsip.registration")

DEFAULT_EXPIRES = 300


class RegistrationFailed(Exception):
    """A registration that ended without a binding: the status says why (408 when no
    answer came, 401/403/407 for refused credentials, 503 when the request could not
    leave)."""

    def __init__(self, who: str, registrar: str, status: int, reason: str) -> None:
        super().__init__(f"{who} could not register to {registrar}: {status} {reason}")
        self.who = who
        self.registrar = registrar
        self.status = status
        self.reason = reason


class RegisteringUA(Protocol):
    """What a registration needs of its instance (a `SipInstance`)."""

    dn: str
    host: str
    port: int

    @property
    def clock(self) -> TimeSource: ...
    @property
    def transactions(self) -> TransactionLayer: ...
    @property
    def contact(self) -> str: ...
    def new_via(self) -> str: ...
    def new_tag(self) -> str: ...
    def new_call_id(self) -> str: ...


def refresh_delay(granted: int) -> float:
    """When to refresh a binding granted for `granted` s: half-way for short ones, 30 s
    ahead for long ones, so a slow registrar never sees the binding lapse."""
    return max(granted / 2, granted - 30.0)


class Registration:
    """One instance's binding of its Contact to ``sip:<dn>@<domain>`` at `registrar`.

    `register()` fires with the granted expiry once a 2xx came, or fails with
    `RegistrationFailed`; while bound, the binding is refreshed by itself. `unregister()`
    sends ``Expires: 0`` and never fails. `who` names the instance in failures.
    """

    def __init__(self, ua: RegisteringUA, registrar: Address, domain: str, *,
                 credentials: Credentials | None = None, expires: int = DEFAULT_EXPIRES,
                 who: str | None = None, timeout: float = 32.0) -> None:
        self.ua = ua
        self.registrar = registrar
        self.domain = domain
        self.aor = f"sip:{ua.dn}@{domain}"
        port = f":{registrar[1]}" if registrar[1] != 5060 else ""
        self.request_uri = f"sip:{domain}{port}"
        self.expires = expires
        self.who = who or f"DN {ua.dn}"
        self.timeout = timeout
        self.credentials = credentials
        self.answerer = ChallengeAnswerer(credentials) if credentials is not None else None
        self.call_id = ua.new_call_id()
        self.from_tag = ua.new_tag()
        self.cseq = 0
        self.granted = 0  # seconds the registrar granted; 0 when not bound
        self.last_status: int | None = None
        self._refresh: DelayedCall | None = None
        self._pending: _Attempt | None = None

    @property
    def registered(self) -> bool:
        return self.granted > 0

    @property
    def where(self) -> str:
        return f"{self.registrar[0]}:{self.registrar[1]}"

    # -- the API ---------------------------------------------------------------------------
    def register(self) -> Deferred[int]:
        """REGISTER now (first time or refresh); fires with the granted seconds."""
        return self._round(self.expires)

    def unregister(self, grace: float = 2.0) -> Deferred[None]:
        """Remove our binding (``Expires: 0``); waits up to `grace` s for the answer, and
        fires None whatever it was: a registrar that is gone keeps nothing of ours for
        longer than the binding's expiry anyway."""
        cancel_call(self._refresh)
        self._refresh = None
        if not self.registered and self._pending is None:
            return succeed(None)
        d = self._round(0)
        d.addTimeout(grace, self.ua.clock)  # type: ignore[arg-type]

        def done(result: object) -> None:
            self.granted = 0
            if self._pending is not None:
                self._pending.abandon()
            if not isinstance(result, int):
                log.info("{who}: no confirmation of the unregistration from {pbx}",
                         who=self.who, pbx=self.where)

        return d.addBoth(done)

    def stop(self) -> None:
        """Forget the binding without telling the registrar (the instance is going)."""
        cancel_call(self._refresh)
        self._refresh = None
        self.granted = 0

    # -- one round: a REGISTER and its challenges ----------------------------------------
    def _round(self, expires: int) -> Deferred[int]:
        if self._pending is not None:
            self._pending.abandon()
        if self.answerer is not None:
            self.answerer.new_round()
        request = self._request(expires)
        if self.answerer is not None:
            self.answerer.preempt(request)
        attempt = self._pending = _Attempt(self, expires)
        attempt.send(request)
        d = attempt.outcome.wait()
        if expires:
            d.addTimeout(self.timeout, self.ua.clock)  # type: ignore[arg-type]
            d.addErrback(self._timed_out, attempt)
        return d

    def _timed_out(self, failure: Failure, attempt: _Attempt) -> object:
        if failure.check(TimeoutError):
            attempt.abandon()
            return Failure(self._failure(408, f"no answer within {self.timeout:g} s"))
        return failure

    def _request(self, expires: int) -> Request:
        self.cseq += 1
        headers = request_headers("REGISTER", self.cseq, via=self.ua.new_via(),
                                  from_=f"<{self.aor}>;tag={self.from_tag}",
                                  to=f"<{self.aor}>", call_id=self.call_id)
        headers["contact"] = [f"<{self.ua.contact}>"]
        headers["expires"] = [str(expires)]
        return Request("REGISTER", self.request_uri, headers)

    def _failure(self, status: int, reason: str) -> RegistrationFailed:
        self.last_status = status
        return RegistrationFailed(self.who, self.where, status, reason)

    def _bound(self, response: Response, expires: int) -> int:
        """A 2xx: how long the registrar keeps our Contact (§10.2.4: its ``expires``
        parameter, else the Expires header, else what we asked)."""
        self.last_status = response.status
        granted = expires
        if expires:
            granted = _granted(response, self.ua.contact, expires)
        self.granted = granted
        cancel_call(self._refresh)
        self._refresh = None
        if granted > 0:
            self._refresh = self.ua.clock.callLater(refresh_delay(granted), self._refresh_now)
        return granted

    def _refresh_now(self) -> None:
        self._refresh = None
        d = self.register()

        def failed(failure: Failure) -> None:
            self.granted = 0
            log.warn("{who}: refreshing the registration at {pbx} failed: {why}",
                     who=self.who, pbx=self.where,
                     why=failure.getErrorMessage())

        d.addErrback(failed)


class _Attempt:
    """The client transaction user of one round's REGISTERs: follows challenges (one
    answer, one stale retry) and 423, and reports the round's end once."""

    def __init__(self, registration: Registration, expires: int) -> None:
        self.registration = registration
        self.expires = expires
        self.outcome = Outcome()
        self.request: Request | None = None
        self.tried_423 = False

    def send(self, request: Request) -> None:
        self.request = request
        reg = self.registration
        ClientNonInviteTransaction(reg.ua.transactions, request, reg.registrar, self)

    def abandon(self) -> None:
        self.request = None
        if self.registration._pending is self:
            self.registration._pending = None

    def _finish(self, result: object) -> None:
        self.abandon()
        self.outcome.fire(result)

    def receive_response(self, response: Response) -> None:
        request = self.request
        if request is None or response.status < 200:
            return
        reg = self.registration
        status = response.status
        if status < 300:
            self._finish(reg._bound(response, self.expires))
            return
        if status in (401, 407):
            retry = None
            if reg.answerer is not None:
                retry = reg.answerer.retry(request, response, reg.ua.new_via())
            if retry is not None:
                reg.cseq = retry.cseq.number
                self.send(retry)
                return
            why = ("credentials refused" if reg.answerer is not None
                   else "the registrar asks for credentials and none were given")
            self._finish(reg._failure(status, f"{response.reason} ({why})"))
            return
        if status == 423 and not self.tried_423:
            least = wire_number((response.get("min-expires") or "").strip())
            if least is not None and least > self.expires:
                self.tried_423 = True
                self.expires = least
                retry = reg._request(least)
                if reg.answerer is not None and reg.answerer.last is not None:
                    reg.answerer.sign(retry, reg.answerer.last)
                self.send(retry)
                return
        self._finish(reg._failure(status, response.reason))

    def timed_out(self) -> None:
        if self.request is not None:
            self._finish(self.registration._failure(408, "no answer (Timer F)"))


def _granted(response: Response, contact: str, asked: int) -> int:
    """The expiry the registrar gave our Contact in a 2xx."""
    try:
        for name_addr in response.contact:
            if name_addr.uri == contact:
                value = name_addr.params.get("expires")
                number = wire_number(value.strip()) if value else None
                if number is not None:
                    return number
    except SipParseError:
        pass
    number = wire_number((response.get("expires") or "").strip())
    return number if number is not None else asked
