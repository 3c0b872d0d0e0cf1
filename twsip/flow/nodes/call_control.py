"""Call control: the commands that create, answer and end calls (MakeCall, Answer, Release)."""

from __future__ import annotations

from twsip.flow.model import ExecutionGraph, ScenarioError, ScenarioNode
from twsip.flow.nodes.base import NodeContext, NodeFailed, NodeHandler
from twsip.manager import UnknownInstance
from twsip.sip.dialog import CallFailed, ClientSession, ServerSession
from twsip.sip.uri import loopback_address

__all__ = ["ANSWER", "MAKE_CALL", "RELEASE"]


async def make_call(ctx: NodeContext, node: ScenarioNode) -> str:
    ctx.check_free(node)
    assert node.target_uri is not None
    try:
        target = ctx.manager.resolve_target(node.target_uri, caller=ctx.ua(node))
    except UnknownInstance as exc:
        raise NodeFailed(str(exc)) from None
    ctx.action(node, f"calling {node.target_uri} at {target} ({node.call_id})")
    try:
        session = ctx.manager.dial(ctx.ua(node), target, node.timeout_ms / 1000)
    except CallFailed as exc:
        raise NodeFailed(f"cannot call {node.target_uri}: {exc.reason}") from None
    ctx.calls.bind(node, session)
    try:
        await session.when_answered()
    except CallFailed as exc:
        if ctx.calls.was_released(session):
            return "cancelled before the answer by Release, as the flow asked"
        raise NodeFailed(f"call to {node.target_uri} failed: {exc.status} "
                         f"{exc.reason}") from None
    final = session.final_response
    status = f"{final.status} {final.reason}" if final is not None else "2xx"
    return f"answered ({status}), ACK sent"


def check_target(node: ScenarioNode, graph: ExecutionGraph) -> None:
    """Local mode calls a DN of the flow or a loopback sip: URI, nothing else."""
    target = node.target_uri
    if target is None:
        return
    dns = [chain.config.dn for chain in graph.instances]
    if target.lower().startswith(("sip:", "sips:")):
        if loopback_address(target) is None:
            raise ScenarioError(
                f"target {target!r} is not a sip: URI on 127.0.0.0/8; local mode calls "
                f"only loopback addresses", node.id, "data.targetUri", node.label)
    elif target not in dns and not _registers(node, graph):
        raise ScenarioError(
            f"target {target!r} is neither a DN of this flow ({', '.join(dns)}) nor a "
            f"sip: URI", node.id, "data.targetUri", node.label)


def _registers(node: ScenarioNode, graph: ExecutionGraph) -> bool:
    """Whether the calling instance registers to a PBX, which then routes any DN."""
    for chain in graph.instances:
        config = chain.config
        if config.id == node.instance_id:
            return config.register and bool(config.pbx_host)
    return False


async def answer(ctx: NodeContext, node: ScenarioNode) -> str:
    session = ctx.lookup(node)
    if not isinstance(session, ServerSession):
        raise NodeFailed(f"{node.call_id} on {ctx.dn(node)} is an outgoing call; "
                         f"Answer needs an incoming one")
    if session.ended:
        raise NodeFailed(f"{node.call_id} has ended already ({session.end_reason})")
    if session.answered:
        raise NodeFailed(f"{node.call_id} is answered already")
    ctx.calls.stop_ringing(session)
    ctx.action(node, f"answering {node.call_id}: 200 OK")
    try:
        await session.answer()
    except CallFailed as exc:
        raise NodeFailed(f"answer failed: {exc.status} {exc.reason}") from None
    return "answered, ACK received"


async def release(ctx: NodeContext, node: ScenarioNode) -> str:
    session = ctx.lookup(node)
    call = node.call_id
    if session.ended:
        raise NodeFailed(f"{call} has ended already ({session.end_reason})")
    if isinstance(session, ServerSession) and not session.answered:
        ctx.calls.stop_ringing(session)
        session.reject(486, "Busy Here")
        ctx.action(node, f"rejecting {call} (not answered): 486 Busy Here")
        return "rejected 486 Busy Here"
    if isinstance(session, ClientSession) and not session.established:
        ctx.calls.mark_released(session)
        session.cancel()
        ctx.action(node, f"cancelling {call} (not answered): CANCEL")
        return "CANCEL sent"
    ctx.action(node, f"hanging up {call}: BYE")
    try:
        response = await session.hangup()
    except CallFailed as exc:
        raise NodeFailed(f"BYE failed: {exc.status} {exc.reason}") from None
    status = getattr(response, "status", None)
    if status is not None and not 200 <= status < 300:
        raise NodeFailed(f"BYE answered {status} {response.reason}")
    return f"hung up (BYE answered {status} {getattr(response, 'reason', '')})".strip()


MAKE_CALL = NodeHandler(
    "MakeCall", "command", "call control", ("targetUri", "callId", "timeout"),
    "Calls `targetUri` (a DN of the flow or a loopback `sip:` URI); completes on the "
    "answer, fails on a 3xx-6xx or when `timeout` passes first (CANCEL, 408)",
    make_call,
    describe=lambda node: (f"calling {node.target_uri} ({node.call_id}), setup timeout "
                           f"{node.timeout_ms} ms"),
    check=check_target)
ANSWER = NodeHandler(
    "Answer", "command", "call control", ("callId", "timeout"),
    "Answers the incoming call `callId` (200 with SDP); completes on the ACK",
    answer, bounded="no ACK for the 200 OK on {call} within {ms} ms")
RELEASE = NodeHandler(
    "Release", "command", "call control", ("callId", "timeout"),
    "Ends `callId`: BYE when answered, CANCEL when calling out, 486 Busy Here when ringing in",
    release, bounded="no final response to the BYE on {call} within {ms} ms")
