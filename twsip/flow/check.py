"""What a flow would do, told before anything binds a port: ``python -m twsip check``.

A person who exported a flow from the builder wants to know, without running it, whether
twsip takes it, which phones it would start where, what each chain does, and what it
takes the liberty of doing differently (the flow's warnings). The same warnings are
printed before ``run`` starts, so nothing here may differ from what a run would do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from twsip.flow.model import ExecutionGraph, FlowWarning, ScenarioNode
from twsip.sip.uri import Address, is_loopback, parse_uri

__all__ = ["FlowPlan", "plan_flow", "predicted_addresses", "target_warnings"]


def predicted_addresses(graph: ExecutionGraph, base_port: int,
                        host: str = "127.0.0.1") -> dict[str, Address]:
    """DN -> the address each instance gets when its ports are free (base, +2, ...).

    A base port of 0 lets the system pick: nothing can be predicted then, so the result
    is empty.
    """
    if base_port == 0:
        return {}
    return {config.dn: (host, base_port + 2 * k) for k, config in enumerate(graph.configs)}


def target_warnings(graph: ExecutionGraph,
                    addresses: Mapping[str, Address]) -> list[FlowWarning]:
    """MakeCall targets written for another layout of ports.

    The builder's examples call ``sip:200@127.0.0.1:5062``: right when twsip runs on its
    default ports, wrong with another ``--base-port``. A loopback URI whose user part is a
    DN of the flow but whose address is not that DN's instance still goes where it says
    (the user may mean it), with a warning naming where the DN really is.
    """
    warnings = []
    for node in graph.nodes.values():
        if node.name != "MakeCall" or not node.target_uri:
            continue
        try:
            uri = parse_uri(node.target_uri)
        except ValueError:
            continue
        real = addresses.get(uri.user or "")
        if real is None or not is_loopback(uri.host):
            continue
        written = (uri.host, uri.port or 5060)
        if written != real:
            warnings.append(FlowWarning(
                f"targetUri {node.target_uri} names DN {uri.user}, which is at "
                f"{real[0]}:{real[1]}, not {written[0]}:{written[1]}; the call goes where "
                f"the URI says (write the DN alone, {uri.user}, to reach the instance)",
                node.id, "data.targetUri", node.label))
    return warnings


@dataclass(frozen=True)
class FlowPlan:
    """A flow as ``check`` describes it."""

    graph: ExecutionGraph
    addresses: dict[str, Address]
    warnings: tuple[FlowWarning, ...]

    def lines(self) -> list[str]:
        """The plan for a person: instances, chains, node count, then every warning."""
        lines = ["  instances:"]
        for config in self.graph.configs:
            address = self.addresses.get(config.dn)
            where = f"127.0.0.1:{address[1]}" if address else "a port the system picks"
            label = f" ({config.label})" if config.label != config.dn else ""
            lines.append(f"    DN {config.dn}{label} at {where}, codecs "
                         f"{', '.join(config.codecs)}")
        lines.append("  chains:")
        for chain in self.graph.instances:
            for start in chain.start_nodes:
                lines.append(f"    {chain.config.dn}: {self._chain_text(start)}")
        if not any(chain.start_nodes for chain in self.graph.instances):
            lines.append("    (none: the instances only answer calls)")
        lines.append(f"  nodes: {len(self.graph.nodes)}")
        lines += [f"  warning: {warning}" for warning in self.warnings]
        return lines

    def _chain_text(self, start: str) -> str:
        """The success path from `start`, with each failure branch in brackets."""
        parts: list[str] = []
        seen: set[str] = set()
        nid: str | None = start
        while nid is not None and nid not in seen:
            seen.add(nid)
            node = self.graph.nodes[nid]
            parts.append(_node_text(node) + (
                f" [on failure: {_node_text(self.graph.nodes[node.failure])}]"
                if node.failure is not None else ""))
            nid = node.success
        return " -> ".join(parts)


def _node_text(node: ScenarioNode) -> str:
    return node.name if node.label == node.name else f"{node.label} ({node.name})"


def plan_flow(graph: ExecutionGraph, base_port: int) -> FlowPlan:
    """What `graph` would do with instances from `base_port` on, and all its warnings."""
    addresses = predicted_addresses(graph, base_port)
    warnings = (*graph.warnings, *target_warnings(graph, addresses))
    return FlowPlan(graph, addresses, warnings)
