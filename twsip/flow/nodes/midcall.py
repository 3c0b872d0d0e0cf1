"""Mid-call: hold and retrieve by re-INVITE, blind and attended transfer by REFER, and the
events they cause (HELD, RETRIEVED, TRANSFERRED).

Every command works on either side of a call, caller or callee alike. The events read the
call's state rather than a message, so they complete at once when what they wait for has
already happened (a HELD that starts after the hold re-INVITE still sees it).

TRANSFERRED completes on every party of a transfer, for the call `callId` names:

* the transferee, when its new call to the target is answered; `callId` then names the
  new call (the flow's call registry moves the name), so a later Release or
  DISCONNECTED acts on the call the person is in;
* the transferor, when the transferee's final NOTIFY reports a 2xx (just before the
  transferor's BYE ends that call);
* the target of an attended transfer, when the Replaces INVITE takes over the consult
  call; `callId` then names the new dialog with the transferee.
"""

from __future__ import annotations

from twsip.flow.model import ExecutionGraph, ScenarioError, ScenarioNode
from twsip.flow.nodes.base import NodeContext, NodeFailed, NodeHandler, text_field
from twsip.manager import UnknownInstance
from twsip.sip.dialog import CallFailed, Session
from twsip.sip.midcall_state import CallEnded
from twsip.sip.sdp import NegotiatedMedia
from twsip.sip.transfer import replaces_target
from twsip.sip.uri import loopback_address

__all__ = ["BLIND_TRANSFER", "HELD", "HOLD", "MUTE_TRANSFER", "RETRIEVE", "RETRIEVED",
           "TRANSFERRED"]


def _established(ctx: NodeContext, node: ScenarioNode, name: str) -> Session:
    session = ctx.calls.sessions.get((node.instance_id, name))
    if session is None:
        raise NodeFailed(f"instance {ctx.dn(node)} has no call {name!r}")
    if not session.established:
        raise NodeFailed(f"{name} on {ctx.dn(node)} is not established "
                         f"({session.end_reason or 'not answered yet'})")
    return session


def _directions(negotiated: NegotiatedMedia) -> str:
    return (f"offered {negotiated.local_direction.value}, the peer answered "
            f"{negotiated.remote_direction.value}")


# -- Hold, Retrieve ----------------------------------------------------------------------

async def hold(ctx: NodeContext, node: ScenarioNode) -> str:
    session = _established(ctx, node, node.call_id)
    ctx.action(node, f"holding {node.call_id}: re-INVITE")
    try:
        negotiated = await session.hold()
    except CallFailed as exc:
        raise NodeFailed(f"hold failed: {exc.status} {exc.reason}") from None
    return f"held ({_directions(negotiated)}), ACK sent"


async def retrieve(ctx: NodeContext, node: ScenarioNode) -> str:
    session = _established(ctx, node, node.call_id)
    ctx.action(node, f"retrieving {node.call_id}: re-INVITE")
    try:
        negotiated = await session.retrieve()
    except CallFailed as exc:
        raise NodeFailed(f"retrieve failed: {exc.status} {exc.reason}") from None
    return f"retrieved ({_directions(negotiated)}), ACK sent"


# -- HELD, RETRIEVED ---------------------------------------------------------------------

async def held(ctx: NodeContext, node: ScenarioNode) -> str:
    session = await ctx.calls.wait(node)
    try:
        negotiated = await session.midcall.until(lambda n: n.held_by_peer)
    except CallEnded as exc:
        raise NodeFailed(f"{node.call_id} ended without being held ({exc.reason})") from None
    return f"held by the peer (its SDP says {negotiated.remote_direction.value})"


async def retrieved(ctx: NodeContext, node: ScenarioNode) -> str:
    session = await ctx.calls.wait(node)
    try:
        negotiated = await session.midcall.until(lambda n: not n.held_by_peer)
    except CallEnded as exc:
        raise NodeFailed(f"{node.call_id} ended while held ({exc.reason})") from None
    return f"not held by the peer (its SDP says {negotiated.remote_direction.value})"


# -- BlindTransfer -----------------------------------------------------------------------

def check_blind(node: ScenarioNode, graph: ExecutionGraph) -> None:
    """Local mode transfers to a DN of the flow or a loopback host, nothing else."""
    user, host = text_field(node, "targetUser"), text_field(node, "targetHost")
    if not user:
        raise ScenarioError("BlindTransfer needs targetUser", node.id, "data.targetUser",
                            node.label)
    if host:
        if loopback_address(f"sip:{user}@{host}") is None:
            raise ScenarioError(f"targetHost {host!r} is not on 127.0.0.0/8; local mode "
                                f"transfers only to loopback addresses", node.id,
                                "data.targetHost", node.label)
    elif graph.instance_by_dn(user) is None:
        raise ScenarioError(f"targetUser {user!r} is not a DN of this flow; give "
                            f"targetHost too", node.id, "data.targetUser", node.label)


async def blind_transfer(ctx: NodeContext, node: ScenarioNode) -> str:
    session = _established(ctx, node, node.call_id)
    user, host = text_field(node, "targetUser"), text_field(node, "targetHost")
    try:
        target = f"sip:{user}@{host}" if host else ctx.manager.resolve_target(user)
    except UnknownInstance as exc:
        raise NodeFailed(str(exc)) from None
    ctx.action(node, f"transferring {node.call_id} to {target}: REFER")
    try:
        status = await session.refer(target)
    except CallFailed as exc:
        raise NodeFailed(f"blind transfer failed: {exc.status} {exc.reason}") from None
    await session.when_ended()
    return f"transferred to {target} (NOTIFY: {status}), own leg ended with BYE"


# -- MuteTransfer (attended) -------------------------------------------------------------

def check_mute(node: ScenarioNode, graph: ExecutionGraph) -> None:
    primary, consult = text_field(node, "primaryCallId"), text_field(node, "consultCallId")
    for field, value in (("primaryCallId", primary), ("consultCallId", consult)):
        if not value:
            raise ScenarioError(f"MuteTransfer needs {field}", node.id, f"data.{field}",
                                node.label)
    if primary == consult:
        raise ScenarioError("primaryCallId and consultCallId name the same call", node.id,
                            "data.consultCallId", node.label)


async def mute_transfer(ctx: NodeContext, node: ScenarioNode) -> str:
    primary_name, consult_name = text_field(node, "primaryCallId"), text_field(node, "consultCallId")
    primary = _established(ctx, node, primary_name)
    consult = _established(ctx, node, consult_name)
    target = replaces_target(consult)
    ctx.action(node, f"attended transfer of {primary_name} to the party of {consult_name}: "
                     f"REFER with Replaces")
    try:
        status = await primary.refer(target)
    except CallFailed as exc:
        raise NodeFailed(f"attended transfer failed: {exc.status} {exc.reason}") from None
    await primary.when_ended()
    consult_end = await consult.when_ended()
    return (f"transferred (NOTIFY: {status}); {primary_name} ended with BYE, "
            f"{consult_name} ended by the target ({consult_end})")


# -- TRANSFERRED -------------------------------------------------------------------------

async def transferred(ctx: NodeContext, node: ScenarioNode) -> str:
    session = await ctx.calls.wait(node)
    try:
        note: str = await session.midcall.transferred.wait()
    except CallEnded as exc:
        raise NodeFailed(f"{node.call_id} ended without a transfer ({exc.reason})") from None
    return note


HOLD = NodeHandler(
    "Hold", "command", "mid-call", ("callId", "timeout"),
    "Holds the peer: re-INVITE offering `sendonly` (`inactive` if the peer holds this side "
    "already); completes on the 2xx and ACK, fails on any other answer (the call stays as "
    "it was)", hold, bounded="{call}: the hold re-INVITE had no answer within {ms} ms")
RETRIEVE = NodeHandler(
    "Retrieve", "command", "mid-call", ("callId", "timeout"),
    "Takes the peer off hold: re-INVITE offering `sendrecv`; completes on the 2xx and ACK",
    retrieve, bounded="{call}: the retrieve re-INVITE had no answer within {ms} ms")
HELD = NodeHandler(
    "HELD", "event", "mid-call", ("callId", "timeout"),
    "Waits until the peer's SDP holds this side (`sendonly`, `inactive` or 0.0.0.0); at "
    "once if it does already", held, bounded="{call} was not held within {ms} ms")
RETRIEVED = NodeHandler(
    "RETRIEVED", "event", "mid-call", ("callId", "timeout"),
    "Waits until the peer's SDP no longer holds this side; at once if it does not",
    retrieved, bounded="{call} was still held after {ms} ms")
BLIND_TRANSFER = NodeHandler(
    "BlindTransfer", "command", "mid-call", ("targetUser", "targetHost", "callId", "timeout"),
    "REFERs the peer to `sip:targetUser@targetHost` (a DN of the flow when `targetHost` is "
    "empty); completes when the transferee's NOTIFY reports a 2xx and this side's BYE has "
    "ended the call; fails on a rejected REFER or a failed NOTIFY",
    blind_transfer, bounded="{call}: the transfer did not complete within {ms} ms",
    check=check_blind)
MUTE_TRANSFER = NodeHandler(
    "MuteTransfer", "command", "mid-call", ("primaryCallId", "consultCallId", "timeout"),
    "Attended transfer: REFERs the peer of `primaryCallId` to the peer of `consultCallId` "
    "with Replaces; completes when the NOTIFY reports a 2xx, this side has ended the "
    "primary call and the target has ended the consult call",
    mute_transfer, bounded="the attended transfer did not complete within {ms} ms",
    describe=lambda node: (f"transferring {text_field(node, 'primaryCallId')} to the party of "
                           f"{text_field(node, 'consultCallId')}"),
    check=check_mute)
TRANSFERRED = NodeHandler(
    "TRANSFERRED", "event", "mid-call", ("callId", "timeout"),
    "Waits until `callId` took part in a completed transfer: on the transferee when its new "
    "call is answered (`callId` then names the new call), on the transferor when the final "
    "NOTIFY reports a 2xx, on an attended transfer's target when Replaces took the call over",
    transferred, bounded="{call} was not transferred within {ms} ms")
