"""A CANCEL as the UA core answers it (RFC 3261 §9.2), kept out of `SipInstance`.

A CANCEL is hop-by-hop: it is answered on its own transaction, and only the INVITE it names
(same branch, method INVITE) learns of it. Kept apart so that the instance's datagram path
stays short to read and the class leaves room for what the UA core still has to learn.
"""

from __future__ import annotations

from typing import Callable

from twsip.sip.message import Request
from twsip.sip.transaction import (
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    TransactionLayer,
)

__all__ = ["receive_cancel"]


def receive_cancel(transactions: TransactionLayer, cancel: Request,
                   tx: ServerInviteTransaction | ServerNonInviteTransaction,
                   new_tag: Callable[[], str]) -> None:
    """200 the CANCEL with the INVITE's To tag and tell its call (487 it, when nothing
    answered it yet); 481 when no INVITE transaction matches."""
    invite_tx = transactions.invite_for_cancel(cancel)
    if invite_tx is None:
        tx.respond(cancel.response(481))
        return
    user = invite_tx.user
    tx.respond(cancel.response(
        200, to_tag=user.local_tag if user is not None else invite_tx.to_tag))
    if user is not None:
        user.remote_cancel()
    elif not invite_tx.answered and invite_tx.request is not None:
        invite_tx.respond(invite_tx.request.response(487, to_tag=new_tag()))
