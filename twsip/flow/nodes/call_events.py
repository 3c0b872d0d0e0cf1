"""Events and timers: nodes that wait for something to happen to a call, or for time.

INCOMING, RINGING, DISCONNECTED and TIMEOUT.
"""

from __future__ import annotations

from twisted.internet import task

from twsip.flow.model import ScenarioNode
from twsip.flow.nodes.base import NodeContext, NodeFailed, NodeHandler
from twsip.sip.dialog import CallFailed, ClientSession, ServerSession
from twsip.sip.uri import parse_uri

__all__ = ["DISCONNECTED", "INCOMING", "RINGING", "TIMEOUT"]


def _user(uri: str) -> str:
    try:
        return parse_uri(uri).user or uri
    except ValueError:
        return uri


async def incoming(ctx: NodeContext, node: ScenarioNode) -> str:
    ctx.check_free(node)
    assert node.number is not None
    queue = ctx.manager.by_dn(node.number).incoming
    while True:
        session: ServerSession = await queue.get()
        if not session.ended:
            break
        ctx.action(node, f"skipped call {session.call_id} from {_user(session.remote_uri)}: "
                         f"it ended while queued ({session.end_reason})")
    session.ringing()
    ctx.calls.bind(node, session)
    ctx.calls.ring(session, node.timeout_ms / 1000, _ring_expired, ctx, node, session)
    caller = _user(session.remote_uri)
    ctx.action(node, f"incoming call from {caller} ({node.call_id}, Call-ID "
                     f"{session.call_id}): 180 Ringing sent")
    return f"call from {caller}, ringing"


def _ring_expired(ctx: NodeContext, node: ScenarioNode, session: ServerSession) -> None:
    # Nobody answered or rejected the call: a real phone stops ringing too.
    if session.ended or session.answered:
        return
    session.reject(480, "Temporarily Unavailable")
    ctx.action(node, f"{node.call_id} rang {node.timeout_ms} ms with no Answer or "
                     f"Release: rejected 480 Temporarily Unavailable")


async def ringing(ctx: NodeContext, node: ScenarioNode) -> str:
    session = await ctx.calls.wait(node)
    if isinstance(session, ClientSession):
        try:
            response = await session.when_ringing()
        except CallFailed as exc:
            raise NodeFailed(f"no ringing on {node.call_id}: {exc.status} "
                             f"{exc.reason}") from None
        return f"{response.status} {response.reason} received"
    assert isinstance(session, ServerSession)
    if session.ringing_sent:
        return "180 Ringing sent (INCOMING rings every call)"
    if session.ended or session.answered:
        raise NodeFailed(f"{node.call_id} can no longer ring "
                         f"({session.end_reason or 'answered'})")
    session.ringing()
    ctx.action(node, f"180 Ringing sent on {node.call_id}")
    return "180 Ringing sent"


async def disconnected(ctx: NodeContext, node: ScenarioNode) -> str:
    session = await ctx.calls.wait(node)
    reason = await session.when_ended()
    far = reason in ("remote hangup", "cancelled by caller") or (
        isinstance(session, ClientSession) and reason.startswith("rejected"))
    if not far:
        raise NodeFailed(f"{node.call_id} ended from this side ({reason}), not by the "
                         f"far side")
    return f"ended by the far side ({reason})"


async def timeout(ctx: NodeContext, node: ScenarioNode) -> str:
    await task.deferLater(ctx.clock, node.timeout_ms / 1000, lambda: None)  # type: ignore[arg-type]
    return f"waited {node.timeout_ms} ms"


INCOMING = NodeHandler(
    "INCOMING", "event", "events and timers", ("number", "callId", "timeout"),
    "Takes the next call to DN `number` (its own by default) and sends 180 Ringing; the "
    "call is rejected 480 if no Answer or Release acts on it within `timeout`",
    incoming, bounded="no incoming call for DN {number} within {ms} ms",
    describe=lambda node: (f"waiting up to {node.timeout_ms} ms for a call to DN "
                           f"{node.number} ({node.call_id})"))
RINGING = NodeHandler(
    "RINGING", "event", "events and timers", ("callId", "timeout"),
    "Outgoing call: waits for a 180/183; incoming call: sends 180 Ringing unless sent already",
    ringing, bounded="no 180/183 on {call} within {ms} ms")
DISCONNECTED = NodeHandler(
    "DISCONNECTED", "event", "events and timers", ("callId", "timeout"),
    "Waits for the far side to end `callId` (BYE, CANCEL or a rejection)",
    disconnected, bounded="{call} was not ended by the far side within {ms} ms")
TIMEOUT = NodeHandler(
    "TIMEOUT", "event", "events and timers", ("timeout",),
    "Waits `timeout` ms on the engine's clock, then completes",
    timeout, describe=lambda node: f"waiting {node.timeout_ms} ms")
