"""A finished run as JSON (``--report``) and as a short summary for a person.

The JSON holds everything: the outcome, each instance, each node with its state and
timings, each SIP message captured at each instance (both ends of a message between two
instances, with its full text), the ladder's arrows (one per message on the wire), and the
run's event lines. Times are seconds since the run started.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from twsip.flow.events import event_to_dict, format_event
from twsip.flow.result import ScenarioResult
from twsip.report.ladder import ladder_arrows

__all__ = ["REPORT_VERSION", "result_to_dict", "summary_text", "write_report"]

REPORT_VERSION = 1


def result_to_dict(result: ScenarioResult, flow: str | None = None) -> dict[str, Any]:
    lanes, arrows = ladder_arrows(result)
    return {
        "report_version": REPORT_VERSION,
        "flow": flow,
        "outcome": result.outcome,
        "reason": result.reason,
        "failed_node": result.node_id,
        "failed_node_label": result.node_label,
        "duration": round(result.duration, 6),
        "instances": [asdict(i) for i in result.instances],
        "nodes": [{
            "id": r.id, "label": r.label, "type": r.kind, "name": r.name,
            "instance": r.instance_id, "dn": r.dn, "state": r.state,
            "started": _round(r.started), "ended": _round(r.ended),
            "duration": _round(r.duration), "detail": r.detail,
            "failure_branch_taken": r.branched,
        } for r in result.nodes.values()],
        "calls": result.calls,
        "media": [asdict(record) for record in result.media],
        "warnings": [{"node": w.node, "node_label": w.label, "field": w.field,
                      "reason": w.reason, "text": str(w)} for w in result.warnings],
        "messages": [{
            "time": round(m.elapsed, 6), "direction": m.direction, "instance": m.instance_id,
            "dn": m.dn, "local": f"{m.local[0]}:{m.local[1]}",
            "peer": f"{m.peer[0]}:{m.peer[1]}", "peer_dn": m.peer_dn, "summary": m.summary,
            "method": m.method, "status": m.status, "call_id": m.call_id, "cseq": m.cseq,
            "text": m.text,
        } for m in result.messages],
        "ladder": [{
            "time": round(a.elapsed, 6), "received": _round(a.received),
            "from": lanes[a.source].name, "to": lanes[a.target].name, "label": a.label,
            "call": a.call, "call_id": a.message.call_id,
        } for a in arrows],
        "log": [format_event(e) for e in result.events],
        "events": [_event(e) for e in result.events],
    }


def _event(event: Any) -> dict[str, Any]:
    data = event_to_dict(event)
    data.pop("text", None)  # the full texts are in "messages" already
    return data


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def write_report(result: ScenarioResult, path: str, flow: str | None = None) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result_to_dict(result, flow), f, indent=2)
        f.write("\n")


def summary_text(result: ScenarioResult) -> str:
    """A few lines: the outcome, then one line per node (state, timing, detail)."""
    _, arrows = ladder_arrows(result)
    states = [record.state for record in result.nodes.values()]
    order = ("completed", "failed", "cancelled", "running", "pending")
    counts = ", ".join(f"{states.count(state)} {state}" for state in order
                       if state in states) or "no nodes"
    head = f"Result: {result.outcome.upper()} in {result.duration:.3f} s"
    if result.node_id:
        head += f", at node {result.node_label} ({result.node_id})"
    lines = [head, f"  {result.reason}",
             f"  nodes: {counts}; SIP messages: {len(arrows)} on the wire, "
             f"{len(result.messages)} captured at the instances"]
    lines += [f"  warning: {warning}" for warning in result.warnings]
    width = max([len(r.label) for r in result.nodes.values()] + [4])
    for record in result.nodes.values():
        timing = ""
        if record.started is not None:
            end = f"{record.ended:.3f}" if record.ended is not None else "..."
            timing = f"{record.started:.3f}-{end} s"
        detail = f"  {record.detail}" if record.detail else ""
        lines.append(f"  [{record.dn}] {record.label:<{width}}  {record.state:<9}  "
                     f"{timing:<15}{detail}".rstrip())
    lines += [f"  {record.summary()}" for record in result.media]
    return "\n".join(lines)
