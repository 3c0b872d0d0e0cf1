"""Requests the UA core answers outside any dialog: CANCEL (RFC 3261 §9.2).

Kept out of `SipInstance` so that the class stays a readable size as the core learns new
requests (REFER, Replaces).
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
    """200 the CANCEL with the To tag of the INVITE it names and tell that INVITE's user,
    or 487 the INVITE ourselves when it has none; 481 when no INVITE matches (§9.2)."""
    invite_tx = transactions.invite_for_cancel(cancel)
    if invite_tx is None:
        tx.respond(cancel.response(481))
        return
    user = invite_tx.user
    tx.respond(cancel.response(200, to_tag=user.local_tag if user is not None else None))
    if user is not None:
        user.remote_cancel()
    elif not invite_tx.answered and invite_tx.request is not None:
        invite_tx.respond(invite_tx.request.response(487, to_tag=new_tag()))
