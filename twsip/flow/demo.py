"""The built-in demo flow: 100 calls 200, 200 answers, one second of talk, 100 hangs up.

It is flow JSON text, exactly what the scenario builder would save, so it goes through
`parse_scenario` like any file. ``twistd sipinstances`` runs it once at start-up (unless
``--no-demo``); ``python -m twsip demo`` runs it on its own.
"""

from __future__ import annotations

import json

from twsip.flow.model import ExecutionGraph, parse_scenario

__all__ = ["DEMO_FLOW", "demo_flow", "demo_graph"]


def demo_flow(caller: str = "100", callee: str = "200", talk_ms: int = 1000) -> str:
    """The demo as flow JSON, between any two DNs (a service may run other DNs)."""
    a, b = f"demo-{caller}", f"demo-{callee}"

    def node(nid: str, ntype: str, x: int, y: int, **data: object) -> dict:
        return {"id": nid, "type": ntype, "position": {"x": x, "y": y}, "data": data}

    def edge(source: str, target: str) -> dict:
        return {"id": f"{source}->{target}", "source": source, "target": target,
                "sourceHandle": "source", "targetHandle": "target", "type": "branch",
                "data": {"branchType": "success"}}

    nodes = [
        node(a, "sipInstance", 80, 40, label=f"Caller {caller}", dn=caller,
             register=False, color="#3b82f6", codecs=["PCMU", "PCMA"]),
        node(b, "sipInstance", 420, 40, label=f"Callee {callee}", dn=callee,
             register=False, color="#14b8a6", codecs=["PCMU", "PCMA"]),
        node("call", "command", 80, 200, label=f"Call {callee}", command="MakeCall",
             sipInstanceId=a, targetUri=callee, timeout=10000),
        node("talk-a", "event", 80, 340, label="Talk", event="TIMEOUT", sipInstanceId=a,
             timeout=talk_ms),
        node("hangup", "command", 80, 480, label="Hang up", command="Release",
             sipInstanceId=a),
        node("incoming", "event", 420, 200, label="Incoming call", event="INCOMING",
             sipInstanceId=b, number=callee),
        node("answer", "command", 420, 340, label="Answer", command="Answer",
             sipInstanceId=b),
        node("gone", "event", 420, 480, label="Caller hung up", event="DISCONNECTED",
             sipInstanceId=b, timeout=talk_ms + 10000),
    ]
    edges = [edge(a, "call"), edge("call", "talk-a"), edge("talk-a", "hangup"),
             edge(b, "incoming"), edge("incoming", "answer"), edge("answer", "gone")]
    return json.dumps({"nodes": nodes, "edges": edges}, indent=1)


DEMO_FLOW = demo_flow()


def demo_graph(caller: str = "100", callee: str = "200", talk_ms: int = 1000
               ) -> ExecutionGraph:
    return parse_scenario(demo_flow(caller, callee, talk_ms))
