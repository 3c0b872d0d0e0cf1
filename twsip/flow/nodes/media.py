"""Media: the nodes that play audio and send or wait for DTMF on an established call.

PlayAudio, SendDTMF and DTMFReceived. What can be judged from the file alone (a WAV that
cannot play, digits that are not DTMF) is refused before the run starts, naming the node and
the field, so an IVR test never fails half-way for a typo.
"""

from __future__ import annotations

import math
from typing import Any

from twsip.flow.model import ExecutionGraph, ScenarioError, ScenarioNode
from twsip.flow.nodes.base import NodeContext, NodeFailed, NodeHandler, text_field
from twsip.media.dtmf import DtmfError, validate_digits
from twsip.media.wav import WavError, probe_wav
from twsip.sip.call_media import CallMedia
from twsip.sip.dialog import Session

__all__ = ["DTMF_RECEIVED", "PLAY_AUDIO", "SEND_DTMF"]

DEFAULT_INTERVAL_MS = 100


def _interval_ms(node: ScenarioNode) -> int:
    """intervalMs as the parser accepted it (a positive number or numeric string)."""
    value: Any = node.data.get("intervalMs")
    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_INTERVAL_MS
    return math.ceil(float(value))


def _media(ctx: NodeContext, node: ScenarioNode, session: Session) -> CallMedia:
    if not session.established:
        raise NodeFailed(f"{node.call_id} on {ctx.dn(node)} is not established "
                         f"({session.end_reason or 'not answered yet'})")
    if session.media is None:
        raise NodeFailed(f"{node.call_id} on {ctx.dn(node)} has no RTP endpoint (this "
                         f"instance runs without media)")
    return session.media


# -- PlayAudio ---------------------------------------------------------------------------

def check_play(node: ScenarioNode, graph: ExecutionGraph) -> None:
    path = text_field(node, "filePath")
    if not path:
        raise ScenarioError("PlayAudio needs filePath, a WAV file", node.id, "data.filePath",
                            node.label)
    try:
        probe_wav(graph.resolve_path(path))
    except WavError as exc:
        raise ScenarioError(f"{exc.path}: {exc.reason}", node.id, "data.filePath",
                            node.label) from None


async def play_audio(ctx: NodeContext, node: ScenarioNode) -> str:
    media = _media(ctx, node, ctx.lookup(node))
    path = ctx.resolve_path(text_field(node, "filePath"))
    ctx.action(node, f"playing {path} on {node.call_id}")
    try:
        sent = await media.play_file(path)
    except WavError as exc:  # changed on disk since the check
        raise NodeFailed(f"{exc.path}: {exc.reason}") from None
    if not sent:
        raise NodeFailed(f"playing {path} stopped: {node.call_id} ended")
    return f"played {path}"


# -- SendDTMF ----------------------------------------------------------------------------

def check_digits(node: ScenarioNode, graph: ExecutionGraph) -> None:
    try:
        validate_digits(text_field(node, "digits"))
    except DtmfError as exc:
        raise ScenarioError(str(exc), node.id, "data.digits", node.label) from None


async def send_dtmf(ctx: NodeContext, node: ScenarioNode) -> str:
    media = _media(ctx, node, ctx.lookup(node))
    digits = validate_digits(text_field(node, "digits"))
    interval = _interval_ms(node)
    ctx.action(node, f"sending DTMF {digits} on {node.call_id}, {interval} ms apart")
    how = await media.send_dtmf(digits, interval)
    if how == "rtp":
        return f"sent {digits} as RFC 4733 events"
    if how == "info":
        return f"sent {digits} as SIP INFO (the peer's SDP has no telephone-event)"
    raise NodeFailed(f"sending {digits} stopped: {node.call_id} ended")


# -- DTMFReceived ------------------------------------------------------------------------

def check_expected(node: ScenarioNode, graph: ExecutionGraph) -> None:
    try:
        expected = validate_digits(text_field(node, "expectedDigit"), allow_empty=True)
    except DtmfError as exc:
        raise ScenarioError(str(exc), node.id, "data.expectedDigit", node.label) from None
    if len(expected) > 1:
        raise ScenarioError(f"expectedDigit is one digit (or empty for any), not "
                            f"{expected!r}", node.id, "data.expectedDigit", node.label)


async def dtmf_received(ctx: NodeContext, node: ScenarioNode) -> str:
    expected = validate_digits(text_field(node, "expectedDigit"), allow_empty=True)
    session = await ctx.calls.wait(node)
    media = _media(ctx, node, session)
    while True:
        digit = await media.next_digit()
        if not expected or digit == expected:
            return f"received {digit}"
        ctx.action(node, f"received {digit} on {node.call_id} while waiting for {expected}: "
                         f"skipped")


PLAY_AUDIO = NodeHandler(
    "PlayAudio", "command", "media", ("filePath", "callId", "timeout"),
    "Plays `filePath` (any PCM WAV, relative to the flow file) on the established call; "
    "completes when all of it is sent",
    play_audio, bounded="{call}: the file was still playing after {ms} ms",
    check=check_play)
SEND_DTMF = NodeHandler(
    "SendDTMF", "command", "media", ("digits", "intervalMs", "callId", "timeout"),
    "Sends `digits` (0-9 * # A-D) as RFC 4733 events, `intervalMs` apart (default 100); as "
    "SIP INFO when the peer's SDP has no telephone-event",
    send_dtmf, bounded="{call}: the digits were still being sent after {ms} ms",
    check=check_digits)
DTMF_RECEIVED = NodeHandler(
    "DTMFReceived", "event", "media", ("expectedDigit", "callId", "timeout"),
    "Waits for a digit (RFC 4733 or SIP INFO) on the call, `expectedDigit` or any when "
    "empty; other digits are logged and skipped; digits that came earlier count, in order",
    dtmf_received, bounded="no DTMF digit on {call} within {ms} ms",
    check=check_expected)
