"""The node types the engine runs: one table, and everything that follows from it.

A flow file may use any node of the builder's language (twsip.flow.model parses them
all); the engine runs the ones registered here. From this one table come the dispatch,
the up-front refusal of a flow with nodes the engine cannot run (`check_runnable`), and
the README's table of supported nodes (`supported_nodes_markdown`, kept in step by a test).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from twsip.flow.model import (
    KNOWN_COMMANDS,
    KNOWN_EVENTS,
    ExecutionGraph,
    ScenarioError,
    ScenarioNode,
)
from twsip.config import SipInstanceConfig
from twsip.flow.nodes import call_control, call_events, media, midcall
from twsip.flow.nodes.base import NodeHandler
from twsip.sip.uri import is_loopback

__all__ = [
    "HANDLERS",
    "check_pbx",
    "check_runnable",
    "handler_for",
    "supported_nodes_markdown",
    "unsupported_names",
    "unsupported_nodes",
]


def _table(*handlers: NodeHandler) -> Mapping[str, NodeHandler]:
    table: dict[str, NodeHandler] = {}
    for handler in handlers:
        known = KNOWN_COMMANDS if handler.kind == "command" else KNOWN_EVENTS
        if handler.name not in known:  # a handler for a node the parser would refuse
            raise ValueError(f"{handler.name!r} is not a {handler.kind} of the flow language")
        if handler.name in table:
            raise ValueError(f"two handlers for {handler.name!r}")
        table[handler.name] = handler
    return MappingProxyType(table)


HANDLERS: Mapping[str, NodeHandler] = _table(
    call_control.MAKE_CALL, call_control.ANSWER, call_control.RELEASE,
    call_events.INCOMING, call_events.RINGING, call_events.DISCONNECTED, call_events.TIMEOUT,
    media.PLAY_AUDIO, media.SEND_DTMF, media.DTMF_RECEIVED,
    midcall.HOLD, midcall.RETRIEVE, midcall.BLIND_TRANSFER, midcall.MUTE_TRANSFER,
    midcall.HELD, midcall.RETRIEVED, midcall.TRANSFERRED,
)


def handler_for(node: ScenarioNode) -> NodeHandler:
    return HANDLERS[node.name]


def unsupported_names() -> list[str]:
    """Nodes of the flow language that the engine cannot run yet, commands first."""
    return [name for name in (*KNOWN_COMMANDS, *KNOWN_EVENTS) if name not in HANDLERS]


def unsupported_nodes(graph: ExecutionGraph) -> list[ScenarioNode]:
    """The graph's nodes that the engine cannot run, in file order."""
    return [node for node in graph.nodes.values() if node.name not in HANDLERS]


def check_runnable(graph: ExecutionGraph) -> None:
    """Refuse, before anything starts, a flow the engine cannot run (ScenarioError).

    That is: nodes no handler runs (listed by name), nodes whose handler finds them
    unfit for this graph (a MakeCall whose target is neither a DN of the flow nor a
    loopback sip: URI), and instances whose PBX local mode cannot reach: `pbxHost` must be
    a loopback literal or ``localhost`` (mapped to 127.0.0.1 without a lookup), and the
    transport UDP or TCP (anything else would quietly run over another transport).
    """
    for config in graph.configs:
        if config.register and config.pbx_host:
            check_pbx(config)
    unsupported = unsupported_nodes(graph)
    if unsupported:
        listed = ", ".join(f"{n.id!r} ({n.label}: {n.name})" for n in unsupported)
        first = unsupported[0]
        raise ScenarioError(
            f"this flow uses nodes the engine cannot run: {listed}; remove them to run "
            f"the flow",
            first.id, f"data.{first.kind}", first.label)
    for node in graph.nodes.values():
        check = HANDLERS[node.name].check
        if check is not None:
            check(node, graph)


def check_pbx(config: SipInstanceConfig) -> None:
    """Refuse a PBX that local mode cannot register to, naming the node and the field."""
    host = config.pbx_host or ""
    if host.lower() != "localhost" and not is_loopback(host):
        raise ScenarioError(
            f"pbxHost {host!r} is not on this machine: local mode registers only to a PBX "
            f"on 127.0.0.0/8 (an IPv4 literal such as 127.0.0.1, or localhost), and never "
            f"looks a name up", config.id, "data.pbxHost", config.label)
    transport = (config.pbx_transport or "UDP").upper()
    if transport not in ("UDP", "TCP"):
        raise ScenarioError(f"pbxTransport {config.pbx_transport!r}: pbxTransport is UDP "
                            f"or TCP", config.id, "data.pbxTransport", config.label)


def supported_nodes_markdown() -> str:
    """The README's "Supported nodes" text: a table of the handlers and the refused rest.

    README.md holds it between ``<!-- supported-nodes -->`` and ``<!-- /supported-nodes -->``;
    a test fails when the two disagree, so paste this function's output there after
    changing a handler.
    """
    lines = [
        "| node | type | reads (`data`) | `timeout` ends it | what it does |",
        "| --- | --- | --- | --- | --- |",
    ]
    for handler in HANDLERS.values():
        reads = ", ".join(f"`{name}`" for name in handler.fields)
        bound = "yes" if handler.bounded is not None else "no"
        lines.append(f"| {handler.name} | {handler.kind} | {reads} | {bound} | "
                     f"{handler.description} |")
    refused = ", ".join(unsupported_names())
    lines += ["", f"Flows using any other node ({refused}) are refused before anything "
                  f"starts, with the nodes listed." if refused else
              "Every node type of the builder's flow language runs."]
    return "\n".join(lines)
