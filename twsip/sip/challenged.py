"""Requests that a PBX challenges (RFC 3261 §22.2): a BYE, or the CANCEL of a call not
yet answered, answered 401 or 407 is sent again with credentials, as the INVITE that set
the call up was.

A proxy may authenticate any request it forwards, not only the INVITE (Kamailio,
Asterisk and FreeSWITCH can all be set to challenge BYE). Without this a hang-up through
such a PBX would end our side only, leaving the peer's call up until its own limits end it.
Kept apart from the session: the dialog only swaps the transaction user it hands its BYE.
"""

from __future__ import annotations

from typing import Any

from twsip.sip.digest import ChallengeAnswerer
from twsip.sip.message import Request, Response
from twsip.sip.transaction import ClientNonInviteTransaction, ClientTransactionUser
from twsip.sip.uri import Address

__all__ = ["ChallengedRequest", "answering_challenges", "send_answering_challenges"]


class ChallengedRequest:
    """The transaction user of one in-dialog request that may be challenged: a 401/407
    is answered with `answerer`'s credentials (once, and once more for ``stale=true``:
    the answerer's limits), in a new transaction with CSeq + 1; every other response, and
    a challenge it may not answer, goes to `inner` as it came."""

    __slots__ = ("session", "request", "addr", "answerer", "inner")

    def __init__(self, session: Any, request: Request, addr: Address,
                 answerer: ChallengeAnswerer, inner: ClientTransactionUser) -> None:
        self.session = session
        self.request = request
        self.addr = addr
        self.answerer = answerer
        self.inner = inner
        answerer.new_round()  # the INVITE's answers do not count against this request

    def receive_response(self, response: Response) -> None:
        if response.status in (401, 407):
            request = self.request
            if request.method == "CANCEL":
                retry = _cancel_again(self.answerer, request, response)
            else:
                retry = self.answerer.retry(request, response, self.session.ua.new_via())
                if retry is not None:
                    self.session.local_cseq = max(self.session.local_cseq,
                                                  retry.cseq.number)
            if retry is not None:
                self.request = retry
                ClientNonInviteTransaction(self.session.ua.transactions, retry, self.addr,
                                           self)
                return
        self.inner.receive_response(response)

    def timed_out(self) -> None:
        self.inner.timed_out()


def _cancel_again(answerer: ChallengeAnswerer, cancel: Request,
                  response: Response) -> Request | None:
    """The CANCEL signed for `response`'s challenge, with the INVITE's Via branch and
    CSeq number kept (unlike other retries): a proxy knows which INVITE a CANCEL stops
    only by them (§9.1, §9.2), so a CANCEL with a new branch would cancel nothing."""
    retry = answerer.retry(cancel, response, cancel.headers["via"][0])
    if retry is not None:
        retry.set("cseq", f"{cancel.cseq.number} CANCEL")
    return retry


def answering_challenges(session: Any, request: Request, addr: Address,
                         inner: ClientTransactionUser) -> ClientTransactionUser:
    """`inner`, wrapped to answer challenges when the session has credentials (a call
    placed through a PBX: its `challenges`)."""
    answerer = getattr(session, "challenges", None)
    if answerer is None:
        return inner
    return ChallengedRequest(session, request, addr, answerer, inner)


def send_answering_challenges(session: Any, request: Request, addr: Address,
                              inner: ClientTransactionUser) -> None:
    """Send `request` in a new client transaction whose user answers challenges."""
    ClientNonInviteTransaction(session.ua.transactions, request, addr,
                               answering_challenges(session, request, addr, inner))
