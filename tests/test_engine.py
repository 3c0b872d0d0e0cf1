"""The scenario engine, end to end: real instances and real SIP messages.

Most runs go over `twsip.testing.FakeNetwork`, which is the reactor for both the manager
(listenUDP) and the engine (the clock): no socket, no wall time, the same every time. A
few run over loopback UDP on the real reactor (base_port=0, ports the system picks), to
show the same flows work on real sockets.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import time

import pytest
import pytest_twisted
from twisted.internet import task
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import globalLogPublisher

from twsip.flow.demo import demo_graph
from twsip.flow.engine import Engine, EngineBusy
from twsip.flow.registry import check_runnable
from twsip.flow.events import (
    ActionLog,
    NodeStateChanged,
    ScenarioFinished,
    ScenarioStarted,
    SipMessage,
)
from twsip.report.ladder import ladder_arrows
from twsip.manager import InstanceCreationError, InstanceManager
from twsip.report.jsonreport import result_to_dict
from twsip.flow.model import ScenarioError, graph_for_instances, load_scenario, parse_scenario
from twsip.flow.result import CANCELLED, COMPLETED, FAILED, PENDING, STOPPED, ScenarioResult
from twsip.service import run_once_serving
from twsip.testing import FakeNetwork

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
BASIC_CALL = ROOT / "tests" / "data" / "flows" / "basic-call.json"

CALL = [("100", "200", "INVITE"), ("200", "100", "100 Trying"),
        ("200", "100", "180 Ringing")]
ANSWER = [("200", "100", "200 OK"), ("100", "200", "ACK")]


# -- flow builders -----------------------------------------------------------------------

def inst(nid: str, dn: str) -> dict:
    return {"id": nid, "type": "sipInstance", "data": {"dn": dn, "register": False}}


def cmd(nid: str, command: str, instance: str, **data: Any) -> dict:
    return {"id": nid, "type": "command",
            "data": {"command": command, "sipInstanceId": instance, **data}}


def evt(nid: str, event: str, instance: str, **data: Any) -> dict:
    return {"id": nid, "type": "event",
            "data": {"event": event, "sipInstanceId": instance, **data}}


def edge(source: str, target: str, failure: bool = False) -> dict:
    return {"id": f"{source}->{target}", "source": source, "target": target,
            "sourceHandle": "failure" if failure else "source"}


def flow(*nodes: dict, edges: list[dict]) -> str:
    return json.dumps({"nodes": [inst("A", "100"), inst("B", "200"), *nodes],
                       "edges": edges})


def wire(result: ScenarioResult) -> list[tuple[str, str, str]]:
    lanes, arrows = ladder_arrows(result)
    return [(lanes[a.source].name, lanes[a.target].name, a.label) for a in arrows]


def states(result: ScenarioResult) -> dict[str, str]:
    return {nid: record.state for nid, record in result.nodes.items()}


def run(network: FakeNetwork, graph_or_text: Any, **engine_kw: Any) -> ScenarioResult:
    """Run a flow on instances of `network`, to the end (no wall time passes)."""
    graph = parse_scenario(graph_or_text) if isinstance(graph_or_text, str) else graph_or_text
    engine = Engine(InstanceManager(reactor=network), reactor=network, **engine_kw)
    result = network.run(engine.run(graph))
    assert not engine.instance_manager.instances  # cleaned up
    return result


async def run_on_loopback(graph: Any) -> ScenarioResult:
    """Run a flow over real UDP sockets on the reactor pytest-twisted runs."""
    engine = Engine(InstanceManager(base_port=0))
    result = await engine.run(graph)
    assert not engine.instance_manager.instances
    return result


def assert_both_ends_seen(result: ScenarioResult) -> None:
    """Each message between two instances was captured when sent and when received."""
    _, arrows = ladder_arrows(result)
    assert all(a.received is not None for a in arrows), [
        a.label for a in arrows if a.received is None]
    assert len(result.messages) == 2 * len(arrows)


# -- the examples ------------------------------------------------------------------------

EXPECTED = {
    "basic-call": (
        CALL + ANSWER + [("200", "100", "BYE"), ("100", "200", "200 OK")],
        {"call": COMPLETED, "hung-up": COMPLETED, "incoming": COMPLETED,
         "answer": COMPLETED, "talk": COMPLETED, "hangup": COMPLETED}),
    "busy": (
        CALL + [("200", "100", "486 Busy Here"), ("100", "200", "ACK")],
        {"call": FAILED, "hung-up": PENDING, "busy": COMPLETED, "incoming": COMPLETED,
         "reject": COMPLETED}),
    "cancel-before-answer": (
        CALL + [("100", "200", "CANCEL"), ("200", "100", "200 OK"),
                ("200", "100", "487 Request Terminated"), ("100", "200", "ACK")],
        {"call": COMPLETED, "ringing": COMPLETED, "wait": COMPLETED, "cancel": COMPLETED,
         "incoming": COMPLETED, "cancelled": COMPLETED}),
    "no-answer": (
        CALL + [("200", "100", "480 Temporarily Unavailable"), ("100", "200", "ACK")],
        {"call": FAILED, "hung-up": PENDING, "no-answer": COMPLETED,
         "incoming": COMPLETED}),
    "dtmf": (
        CALL + ANSWER + [("200", "100", "BYE"), ("100", "200", "200 OK")],
        {"call": COMPLETED, "send": COMPLETED, "gone": COMPLETED, "in": COMPLETED,
         "answer": COMPLETED, "four": COMPLETED, "pound": COMPLETED, "bye": COMPLETED}),
    "ivr": (
        CALL + ANSWER + [("200", "100", "BYE"), ("100", "200", "200 OK")],
        {"call": COMPLETED, "listen": COMPLETED, "press": COMPLETED, "bye-heard": COMPLETED,
         "in": COMPLETED, "answer": COMPLETED, "prompt": COMPLETED, "digit": COMPLETED,
         "confirm": COMPLETED, "bye": COMPLETED, "no-digit": PENDING}),
    "fallback": (
        CALL + [("200", "100", "486 Busy Here"), ("100", "200", "ACK"),
                ("100", "300", "INVITE"), ("300", "100", "100 Trying"),
                ("300", "100", "180 Ringing"), ("300", "100", "200 OK"),
                ("100", "300", "ACK"), ("300", "100", "BYE"), ("100", "300", "200 OK")],
        {"call-200": FAILED, "200-hung-up": PENDING, "call-300": COMPLETED,
         "300-hung-up": COMPLETED, "200-incoming": COMPLETED, "200-busy": COMPLETED,
         "300-incoming": COMPLETED, "300-answer": COMPLETED, "300-talk": COMPLETED,
         "300-hangup": COMPLETED}),
    "hold-retrieve": (
        CALL + ANSWER + [
            ("100", "200", "INVITE"), ("200", "100", "200 OK"), ("100", "200", "ACK"),
            ("100", "200", "INVITE"), ("200", "100", "200 OK"), ("100", "200", "ACK"),
            ("100", "200", "BYE"), ("200", "100", "200 OK")],
        {"call": COMPLETED, "hold": COMPLETED, "on-hold": COMPLETED, "retrieve":
         COMPLETED, "hangup": COMPLETED, "incoming": COMPLETED, "answer": COMPLETED,
         "held": COMPLETED, "retrieved": COMPLETED, "hung-up": COMPLETED}),
    "blind-transfer": (
        CALL + ANSWER + [
            ("200", "100", "REFER"), ("100", "200", "202 Accepted"), ("100", "200", "NOTIFY"),
            ("100", "300", "INVITE"), ("200", "100", "200 OK"), ("300", "100", "100 Trying"),
            ("300", "100", "180 Ringing"), ("300", "100", "200 OK"), ("100", "300", "ACK"),
            ("100", "200", "NOTIFY"), ("200", "100", "200 OK"), ("200", "100", "BYE"),
            ("100", "200", "200 OK"), ("100", "300", "BYE"), ("300", "100", "200 OK")],
        {"call": COMPLETED, "transferred": COMPLETED, "talk": COMPLETED, "hangup":
         COMPLETED, "incoming": COMPLETED, "answer": COMPLETED, "transfer": COMPLETED,
         "c-incoming": COMPLETED, "c-answer": COMPLETED, "c-hung-up": COMPLETED}),
    "attended-transfer": (
        CALL + ANSWER + [
            ("100", "200", "INVITE"), ("200", "100", "200 OK"), ("100", "200", "ACK"),
            ("100", "300", "INVITE"), ("300", "100", "100 Trying"), ("300", "100", "180 Ringing"),
            ("300", "100", "200 OK"), ("100", "300", "ACK"), ("100", "200", "REFER"),
            ("200", "100", "202 Accepted"), ("200", "100", "NOTIFY"), ("200", "300", "INVITE"),
            ("100", "200", "200 OK"), ("300", "200", "100 Trying"), ("300", "200", "200 OK"),
            ("200", "300", "ACK"), ("200", "100", "NOTIFY"), ("300", "100", "BYE"),
            ("100", "200", "200 OK"), ("100", "200", "BYE"), ("100", "300", "200 OK"),
            ("200", "100", "200 OK"), ("200", "300", "BYE"), ("300", "200", "200 OK")],
        {"call": COMPLETED, "hold": COMPLETED, "consult": COMPLETED, "talk": COMPLETED,
         "transfer": COMPLETED, "incoming": COMPLETED, "answer": COMPLETED, "held":
         COMPLETED, "transferred": COMPLETED, "b-talk": COMPLETED, "hangup": COMPLETED,
         "c-incoming": COMPLETED, "c-answer": COMPLETED, "c-replaced": COMPLETED,
         "c-hung-up": COMPLETED}),

}


def test_every_example_has_expectations() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.json")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_end_to_end(network: FakeNetwork, name: str) -> None:
    expected_wire, expected_states = EXPECTED[name]
    result = run(network, load_scenario(EXAMPLES / f"{name}.json"))
    assert result.outcome == COMPLETED, result.reason
    assert wire(result) == expected_wire
    assert states(result) == expected_states
    assert_both_ends_seen(result)
    report = json.loads(json.dumps(result_to_dict(result)))  # JSON-clean
    assert report["outcome"] == COMPLETED
    assert [(m["from"], m["to"], m["label"]) for m in report["ladder"]] == expected_wire
    assert {n["id"]: n["state"] for n in report["nodes"]} == expected_states
    assert all(m["text"].splitlines()[0] and "Call-ID:" in m["text"]
               for m in report["messages"])


def test_example_details(network: FakeNetwork) -> None:
    busy = run(network, load_scenario(EXAMPLES / "busy.json"))
    assert "486 Busy Here" in busy.nodes["call"].detail
    cancel = run(network, load_scenario(EXAMPLES / "cancel-before-answer.json"))
    assert "cancelled before the answer" in cancel.nodes["call"].detail
    assert "cancelled by caller" in cancel.nodes["cancelled"].detail
    fallback = run(network, load_scenario(EXAMPLES / "fallback.json"))
    assert sorted(fallback.calls.values()) == ["call-1", "call-2"]


@pytest_twisted.ensureDeferred
async def test_shared_basic_call_flow_over_loopback_udp() -> None:
    result = await run_on_loopback(load_scenario(BASIC_CALL))
    assert result.outcome == COMPLETED, result.reason
    assert wire(result) == CALL + ANSWER + [("200", "100", "BYE"), ("100", "200", "200 OK")]
    assert set(states(result).values()) == {COMPLETED}
    assert_both_ends_seen(result)


# -- refusing a flow before anything starts ------------------------------------------------

def test_unrunnable_nodes_are_refused_before_anything_starts(network: FakeNetwork) -> None:
    text = flow(cmd("xfer", "BlindTransfer", "A", targetUser="300",
                    targetHost="192.0.2.1"),
                cmd("call", "MakeCall", "A", targetUri="200"),
                edges=[edge("A", "call"), edge("call", "xfer")])
    manager = InstanceManager(reactor=network)
    engine = Engine(manager, reactor=network)
    seen: list = []
    engine.subscribe(seen.append)
    with pytest.raises(ScenarioError) as info:
        network.run(engine.run(parse_scenario(text)))
    assert "not on 127.0.0.0/8" in str(info.value)
    assert (info.value.node, info.value.field) == ("xfer", "data.targetHost")
    assert not manager.instances and not seen and not engine.running


@pytest.mark.parametrize("target, words", [
    ("999", "neither a DN of this flow (100, 200) nor a sip: URI"),
    ("sip:200@192.0.2.1:5060", "not a sip: URI on 127.0.0.0/8"),
])
def test_make_call_target_checked_up_front(target: str, words: str) -> None:
    text = flow(cmd("call", "MakeCall", "A", targetUri=target), edges=[edge("A", "call")])
    with pytest.raises(ScenarioError) as info:
        check_runnable(parse_scenario(text))
    assert words in str(info.value)
    assert (info.value.node, info.value.field) == ("call", "data.targetUri")


def test_instance_creation_failure_leaves_nothing_bound(network: FakeNetwork) -> None:
    network.listenUDP(5062, DatagramProtocol())  # B's port is taken
    manager = InstanceManager(base_port=5060, max_retries=0, reactor=network)
    with pytest.raises(InstanceCreationError, match="tried 5062"):
        network.run(Engine(manager, reactor=network).run(parse_scenario(flow(edges=[]))))
    assert not manager.instances
    network.listenUDP(5060, DatagramProtocol())  # A's port was given back


# -- failure, cancellation, stop -----------------------------------------------------------

def test_failure_without_branch_fails_the_run_and_cancels_other_chains(
        network: FakeNetwork) -> None:
    text = flow(cmd("call", "MakeCall", "A", targetUri="200"),
                evt("incoming", "INCOMING", "B"), cmd("reject", "Release", "B"),
                evt("long", "TIMEOUT", "B", timeout=60000),
                edges=[edge("A", "call"), edge("B", "incoming"), edge("incoming", "reject"),
                       edge("B", "long")])
    result = run(network, text)
    assert result.outcome == FAILED
    assert (result.node_id, result.node_label) == ("call", "MakeCall")
    assert "486 Busy Here" in result.reason
    assert states(result) == {"call": FAILED, "incoming": COMPLETED, "reject": COMPLETED,
                              "long": CANCELLED}
    assert result.duration < 30
    finished = result.events[-1]
    assert isinstance(finished, ScenarioFinished) and finished.outcome == FAILED
    assert finished.node_id == "call"


def test_make_call_setup_timeout_cancels_and_follows_failure_branch(
        network: FakeNetwork) -> None:
    text = flow(cmd("call", "MakeCall", "A", targetUri="200", timeout=300),
                evt("gave-up", "TIMEOUT", "A", timeout=10),
                evt("incoming", "INCOMING", "B", timeout=20000),
                evt("gone", "DISCONNECTED", "B"),
                edges=[edge("A", "call"), edge("call", "gave-up", failure=True),
                       edge("B", "incoming"), edge("incoming", "gone")])
    result = run(network, text)
    assert result.outcome == COMPLETED, result.reason
    assert "408" in result.nodes["call"].detail
    assert wire(result) == CALL + [("100", "200", "CANCEL"), ("200", "100", "200 OK"),
                                   ("200", "100", "487 Request Terminated"),
                                   ("100", "200", "ACK")]
    assert "cancelled by caller" in result.nodes["gone"].detail


def test_stop_ends_the_run_as_stopped_and_cleans_up(network: FakeNetwork) -> None:
    text = flow(evt("wait", "TIMEOUT", "A", timeout=60000), edges=[edge("A", "wait")])
    engine = Engine(InstanceManager(reactor=network), reactor=network)
    d = engine.run(parse_scenario(text))
    network.advance(1)
    assert engine.running and not d.called
    with pytest.raises(EngineBusy):
        network.result(engine.run(parse_scenario(text)))
    stopping, again = engine.stop("enough"), engine.stop("twice")
    result = network.run(d)
    assert network.result(stopping) is result and network.result(again) is result
    assert (result.outcome, result.reason) == (STOPPED, "enough")
    assert states(result) == {"wait": CANCELLED}
    assert not engine.running and not engine.instance_manager.instances


def test_commands_on_a_missing_call_fail_with_a_reason(network: FakeNetwork) -> None:
    text = flow(cmd("answer", "Answer", "B"), cmd("release", "Release", "A", callId="c9"),
                edges=[edge("B", "answer"), edge("A", "release")])
    result = run(network, text)
    assert result.outcome == FAILED
    assert result.node_id == "release"
    assert result.reason.startswith("instance 100 has no call 'c9'")
    # the run failed before B's chain started, so its node never ran
    assert states(result) == {"answer": PENDING, "release": FAILED}


def test_calls_left_live_are_hung_up_at_the_end(network: FakeNetwork) -> None:
    text = flow(cmd("call", "MakeCall", "A", targetUri="200"),
                evt("incoming", "INCOMING", "B"), cmd("answer", "Answer", "B"),
                edges=[edge("A", "call"), edge("B", "incoming"), edge("incoming", "answer")])
    result = run(network, text)
    assert result.outcome == COMPLETED
    end = wire(result)[len(CALL) + len(ANSWER):]
    assert end in ([("100", "200", "BYE"), ("200", "100", "200 OK")],
                   [("200", "100", "BYE"), ("100", "200", "200 OK")])
    assert any(isinstance(e, ActionLog) and "end of the run: hanging up" in e.text
               for e in result.events)


def test_a_node_runs_once_even_when_two_chains_reach_it(network: FakeNetwork) -> None:
    text = flow(evt("t1", "TIMEOUT", "A", timeout=1), evt("t2", "TIMEOUT", "A", timeout=30),
                evt("shared", "TIMEOUT", "A", timeout=1),
                edges=[edge("A", "t1"), edge("A", "t2"), edge("t1", "shared"),
                       edge("t2", "shared")])
    result = run(network, text)
    assert result.outcome == COMPLETED
    assert states(result) == {"t1": COMPLETED, "t2": COMPLETED, "shared": COMPLETED}
    assert sum(isinstance(e, NodeStateChanged) and e.node_id == "shared"
               and e.state == "running" for e in result.events) == 1
    assert any(isinstance(e, ActionLog) and "has run already" in e.text
               for e in result.events)


# -- the engine's clock ----------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_node_timeouts_run_on_the_engine_clock() -> None:
    clock = task.Clock()
    text = flow(evt("incoming", "INCOMING", "B", timeout=1000),
                evt("after", "TIMEOUT", "B", timeout=500),
                edges=[edge("B", "incoming"), edge("incoming", "after", failure=True)])
    engine = Engine(InstanceManager(base_port=0), reactor=clock, settle=0)
    d = engine.run(parse_scenario(text))
    clock.advance(0.999)
    assert engine.running and not d.called
    clock.advance(0.001)
    assert not d.called  # INCOMING failed, its failure branch (TIMEOUT 500 ms) runs
    clock.advance(0.5)
    result = await d
    assert result.outcome == COMPLETED
    assert result.nodes["incoming"].state == FAILED
    assert result.nodes["incoming"].detail == "no incoming call for DN 200 within 1000 ms"
    assert (result.nodes["incoming"].started, result.nodes["incoming"].ended) == (0, 1.0)
    assert result.nodes["after"].state == COMPLETED
    assert result.duration == 1.5


def test_a_twenty_second_timeout_costs_no_wall_time(network: FakeNetwork) -> None:
    text = flow(evt("wait", "TIMEOUT", "A", timeout=20000), edges=[edge("A", "wait")])
    wall = time.monotonic()
    result = run(network, text)
    assert time.monotonic() - wall < 2
    assert result.outcome == COMPLETED
    assert result.nodes["wait"].duration == 20.0
    assert result.nodes["wait"].detail == "waited 20000 ms"


# -- events ------------------------------------------------------------------------------------

def test_event_stream_and_twisted_logger(network: FakeNetwork) -> None:
    logged: list[dict] = []

    def observer(event: dict) -> None:
        if event.get("log_namespace") == "twsip.scenario":
            logged.append(event)

    globalLogPublisher.addObserver(observer)
    engine = Engine(InstanceManager(reactor=network), reactor=network)
    seen: list = []
    unsubscribe = engine.subscribe(seen.append)
    try:
        result = network.run(engine.run(load_scenario(EXAMPLES / "basic-call.json")))
    finally:
        globalLogPublisher.removeObserver(observer)
        unsubscribe()
    assert seen == result.events
    assert isinstance(seen[0], ScenarioStarted) and isinstance(seen[-1], ScenarioFinished)
    assert [i.dn for i in seen[0].instances] == ["100", "200"]
    sip = [e for e in seen if isinstance(e, SipMessage)]
    assert sip == result.messages and len(sip) == 14
    invite = sip[0]
    assert (invite.direction, invite.dn, invite.summary, invite.peer_dn) == \
        ("out", "100", "INVITE", "200")
    assert invite.text.startswith("INVITE sip:200@127.0.0.1:") and invite.call_id in invite.text
    received = next(e for e in sip if e.direction == "in" and e.summary == "180 Ringing")
    assert (received.dn, received.status, received.method) == ("100", 180, "INVITE")
    changes = [(e.node_id, e.state) for e in seen if isinstance(e, NodeStateChanged)]
    assert changes.count(("call", "running")) == 1 and changes[-1][1] == COMPLETED
    assert any(isinstance(e, ActionLog) for e in seen)
    kinds = {e.get("scenario_event") for e in logged}
    assert {"scenario-started", "node-state", "action", "scenario-finished"} <= kinds
    assert sum(1 for e in logged if "arrow" in e) == 14  # a summary line per message
    assert any(e.get("text", "").startswith("INVITE") for e in logged)  # full text (debug)


# -- on instances that already serve (twistd) -------------------------------------------------

def test_run_on_serving_instances_keeps_them_and_restores_auto_answer(
        network: FakeNetwork) -> None:
    manager = InstanceManager(reactor=network)
    manager.create_instances(graph_for_instances(2).configs)
    manager.start_serving(auto_answer=True)
    try:
        result = network.run(run_once_serving(manager, demo_graph(talk_ms=100)))
        assert result.outcome == COMPLETED, result.reason
        assert wire(result) == CALL + ANSWER + [("100", "200", "BYE"),
                                                ("200", "100", "200 OK")]
        assert sorted(m.config.dn for m in manager.instances.values()) == ["100", "200"]
        # 200 answers calls by itself again
        caller = manager.by_dn("100").ua
        session = network.run(caller.invite(manager.resolve_target("200"), timeout=5))
        network.run(session.hangup())
    finally:
        network.run(manager.cleanup())


def test_run_on_serving_needs_the_flow_dns(network: FakeNetwork) -> None:
    manager = InstanceManager(reactor=network)
    manager.create_instances(graph_for_instances(1).configs)
    manager.start_serving(auto_answer=True)
    logged: list[dict] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        with pytest.raises(ScenarioError) as info:
            network.run(Engine(manager).run_on_serving(demo_graph()))
        assert "DN 200, which is not running (running DNs: 100)" in str(info.value)
        # run_once_serving logs the refusal instead of failing
        assert network.run(run_once_serving(manager, demo_graph())) is None
        errors = [e for e in logged if e.get("log_namespace") == "twsip.service"]
        assert "DN 200, which is not running" in errors[-1]["error"]
        assert sorted(m.config.dn for m in manager.instances.values()) == ["100"]
    finally:
        globalLogPublisher.removeObserver(logged.append)
        network.run(manager.cleanup())
