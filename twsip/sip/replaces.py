"""The target's side of an attended transfer: an INVITE with Replaces (RFC 3891).

The new INVITE names one of our confirmed dialogs (Call-ID, our tag as to-tag, the peer's
as from-tag). It takes that call's place without ringing and without reaching the
application's queue: it is answered at once, the replaced dialog is ended with BYE once the
new one is ACKed, and whoever named the old call (a flow's callId) now names the new one
(`MidCallState.hand_over`). An INVITE naming no dialog of ours, or one not yet confirmed, is
refused 481 (§3: the early-dialog cases of Replaces are not served), a malformed header 400.
"""

from __future__ import annotations

from typing import Protocol

from twisted.logger import Logger

from twsip.sip.message import Request, SipParseError, parse_params
from twsip.sip.session import Session, UserAgent
from twsip.sip.transaction import ServerInviteTransaction
from twsip.sip.uas import ServerSession
from twsip.sip.uri import Address

__all__ = ["parse_replaces", "take_over"]

log = Logger(namespace="twsip.dialog")


class _ReplacingUA(UserAgent, Protocol):
    dialogs: dict[tuple[str, str, str | None], Session]

    def new_tag(self) -> str: ...


def parse_replaces(value: str) -> tuple[str, str, str]:
    """(Call-ID, to-tag, from-tag) of a Replaces value; SipParseError(400) if malformed."""
    call_id, semi, params = value.strip().partition(";")
    parsed = parse_params(semi + params)
    to_tag, from_tag = parsed.get("to-tag"), parsed.get("from-tag")
    if not call_id.strip() or not to_tag or not from_tag:
        raise SipParseError(400, "Replaces needs a Call-ID, to-tag and from-tag")
    return call_id.strip(), to_tag, from_tag


def take_over(ua: _ReplacingUA, invite: Request, tx: ServerInviteTransaction,
              addr: Address) -> None:
    """Answer `invite` (which carries Replaces) in place of the call it names, or refuse it."""
    try:
        call_id, to_tag, from_tag = parse_replaces(invite.get("replaces") or "")
    except SipParseError as exc:
        tx.respond(invite.response(400, f"Bad Request ({exc.reason})", to_tag=ua.new_tag()))
        return
    old = ua.dialogs.get((call_id, to_tag, from_tag))
    if old is None or not old.established:
        tx.respond(invite.response(481, to_tag=ua.new_tag()))
        return
    new = ServerSession(ua, invite, tx, addr)
    old.midcall.hand_over(old, new, f"replaced by the call from {new.remote_uri}")
    log.debug("call {old} replaced by {new}", old=old.call_id, new=new.call_id)

    def acked(_: object) -> None:
        if old.established:
            old.hangup().addErrback(lambda _: None)

    new.answer().addCallbacks(acked, lambda _: None)
