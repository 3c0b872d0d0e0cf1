"""How an instance's calls and transactions end when things go wrong or it stops, and
the one request it sends outside any call (OPTIONS).

Kept out of `SipInstance` so that the datagram path stays short to read. Both functions
share one rule: one call or transaction that cannot be ended properly is logged and let
go, and everything else still ends (a shutdown that raised half-way would leave the other
calls without their BYE and the timers running).
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from twisted.internet.defer import Deferred, DeferredList, DeferredQueue, fail, succeed
from twisted.logger import Logger

from twsip.interfaces import TimeSource
from twsip.outcome import Outcome
from twsip.sip.limits import CallLimits
from twsip.sip.message import Request, Response, request_headers
from twsip.sip.registry import DialogRegistry
from twsip.sip.session import CallFailed, FinalResponse
from twsip.sip.transaction import (
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    TransactionLayer,
    TransactionState,
)
from twsip.sip.uas import ServerSession
from twsip.sip.uri import loopback_address

__all__ = ["abandon", "end_calls", "send_options"]

log = Logger(namespace="twsip.instance")


class _Prober(Protocol):
    @property
    def uri(self) -> str: ...
    @property
    def transactions(self) -> TransactionLayer: ...

    def new_via(self) -> str: ...
    def new_tag(self) -> str: ...
    def new_call_id(self) -> str: ...


def send_options(ua: _Prober, target: str) -> Deferred[Response]:
    """Send OPTIONS to `target` (SipInstance.options); fires with the final response."""
    addr = loopback_address(target)
    if addr is None:
        return fail(CallFailed(503, f"not a loopback sip: URI: {target!r}"))
    headers = request_headers("OPTIONS", 1, via=ua.new_via(),
                              from_=f"<{ua.uri}>;tag={ua.new_tag()}",
                              to=f"<{target}>", call_id=ua.new_call_id())
    headers["accept"] = ["application/sdp"]
    outcome = Outcome()
    ClientNonInviteTransaction(ua.transactions, Request("OPTIONS", target, headers), addr,
                               FinalResponse(outcome, "OPTIONS"))
    return outcome.wait()


class _Instance(Protocol):
    dn: str
    clock: TimeSource
    registry: DialogRegistry
    transactions: TransactionLayer
    limits: CallLimits
    incoming: DeferredQueue[ServerSession]


def abandon(tx: ServerInviteTransaction | ServerNonInviteTransaction,
            request: Request) -> None:
    """After an internal error: answer the request 500 if it has no final answer yet, so
    the transaction completes and its timers run out, and end the call it started."""
    try:
        if tx.state in (TransactionState.PROCEEDING, TransactionState.TRYING):
            response = Response(500, "Server Internal Error",
                                {key: list(request.headers[key])
                                 for key in ("via", "from", "to", "call-id", "cseq")
                                 if key in request.headers})
            tx.respond(response)
        user = getattr(tx, "user", None)
        if isinstance(user, ServerSession) and not user.ended:
            user._end("internal error")
    except Exception:
        log.failure("could not answer 500 after an internal error; transaction ended")
        tx.terminate()


def end_calls(instance: _Instance, grace: float) -> Deferred[None]:
    """End every call of `instance` (BYE, CANCEL or 480), wait up to `grace` s for the
    BYEs' answers, then drop whatever is left and cancel every timer. Never fails."""
    byes: list[Deferred[Any]] = []
    for session in list(instance.registry.calls):
        try:
            if isinstance(session, ServerSession) and not session.answered:
                session.reject(480, "Temporarily Unavailable (shutting down)")
            else:  # BYE, or CANCEL for an outgoing call not answered yet
                byes.append(session.hangup().addErrback(lambda _: None))
        except Exception:
            log.failure("{dn}: could not end call {call_id} at cleanup", dn=instance.dn,
                        call_id=getattr(session, "call_id", "?"))
    incoming = instance.incoming
    while incoming.pending:
        incoming.pending.pop()
    for waiting in list(incoming.waiting):
        waiting.cancel()
    done: Deferred[Any] = succeed(None)
    if byes:
        done = DeferredList(byes).addTimeout(grace, cast(Any, instance.clock))
    done.addErrback(lambda _: None)

    def finish(_: object) -> None:
        for session in list(instance.registry.calls):
            try:
                session._end("cleanup")
            except Exception:
                log.failure("{dn}: error ending call {call_id} at cleanup", dn=instance.dn,
                            call_id=getattr(session, "call_id", "?"))
        instance.registry.clear()
        instance.transactions.close()
        instance.limits.close()

    done.addCallback(finish)
    done.addErrback(lambda f: log.failure("{dn}: cleanup", f, dn=instance.dn))
    return done
