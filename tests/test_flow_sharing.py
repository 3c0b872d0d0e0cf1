"""A flow running on instances that serve already shares them with every other caller.

Only the flow's own calls go to its INCOMING nodes: calls from the flow's instances, and,
on an instance no MakeCall of the flow calls, outside calls while an INCOMING node waits.
Everybody else is auto-answered throughout, however many call during the run.
"""

from __future__ import annotations

import json

from twsip.config import SipInstanceConfig
from twsip.flow.demo import demo_graph
from twsip.flow.engine import Engine
from twsip.flow.model import parse_scenario
from twsip.manager import InstanceManager
from twsip.sip.dialog import CallFailed
from twsip.testing import FakeNetwork


def serving(net: FakeNetwork, *dns: str) -> InstanceManager:
    manager = InstanceManager(base_port=5060, reactor=net)
    manager.create_instances([SipInstanceConfig(id=f"i{dn}", label=dn, dn=dn) for dn in dns])
    manager.start_serving(auto_answer=True)
    return manager


def test_outside_callers_are_answered_while_the_demo_runs_and_it_completes() -> None:
    net = FakeNetwork(keep_log=False)
    manager = serving(net, "100", "200")
    outsider = net.add_instance("900")  # not one of the flow's instances
    engine = Engine(manager, reactor=net)
    run = engine.run_on_serving(demo_graph("100", "200", talk_ms=2000))
    # 300 calls to the flow's callee during its run: more than the queue of 64 holds.
    outcomes: list[object] = []
    for _ in range(300):
        outsider.invite(manager.resolve_target("200"), timeout=10).addBoth(outcomes.append)
    net.advance(0.5)
    assert len(outcomes) == 300
    assert not [o for o in outcomes if not hasattr(o, "established")], outcomes[:3]
    result = net.run(run)
    assert result.ok, result.reason
    assert [m.summary for m in result.messages if m.direction == "out"][:1] == ["INVITE"]
    # The record is the flow's story: none of the 300 other calls is in its ladder.
    assert {m.peer for m in result.messages} <= {manager.by_dn("100").ua.address,
                                                  manager.by_dn("200").ua.address}
    assert len(result.messages) < 40
    # The flow's call was the flow's: its callee's INCOMING node took it, answered it.
    assert result.nodes["incoming"].state == "completed"
    for session in outcomes:
        net.run(session.hangup())  # type: ignore[union-attr]
    # After the run the flow's caller is auto-answered like anyone else.
    session = net.run(manager.by_dn("100").ua.invite(manager.resolve_target("200"), timeout=5))
    net.run(session.hangup())
    assert manager.by_dn("200").ua.claim is None
    net.run(manager.cleanup())
    net.run(outsider.cleanup())
    net.settle()
    assert net.clock.getDelayedCalls() == []


def test_the_flows_own_caller_goes_to_its_incoming_node_even_after_outsiders() -> None:
    net = FakeNetwork(keep_log=False)
    manager = serving(net, "100", "200")
    outsider = net.add_instance("900")
    engine = Engine(manager, reactor=net)
    # An outsider calls first, while 200's INCOMING node already waits: still not the
    # flow's (MakeCall 200 is in the flow, so the flow's call comes from 100).
    early = outsider.invite(manager.resolve_target("200"), timeout=10)
    run = engine.run_on_serving(demo_graph("100", "200", talk_ms=500))
    net.advance(0.1)
    outside_call = net.result(early)
    result = net.run(run)
    assert result.ok, result.reason
    assert outside_call.established  # answered by 200 itself, untouched by the flow
    net.run(outside_call.hangup())
    net.run(manager.cleanup())
    net.run(outsider.cleanup())
    net.settle()
    assert net.clock.getDelayedCalls() == []


def only_incoming_flow(dn: str) -> str:
    """One instance waiting for a call from outside: INCOMING, Answer, DISCONNECTED."""
    def node(nid: str, ntype: str, **data: object) -> dict:
        return {"id": nid, "type": ntype, "position": {"x": 0, "y": 0}, "data": data}

    def edge(a: str, b: str) -> dict:
        return {"id": f"{a}-{b}", "source": a, "target": b, "sourceHandle": "source",
                "targetHandle": "target", "data": {"branchType": "success"}}

    nodes = [node("p", "sipInstance", label="phone", dn=dn, register=False),
             node("in", "event", label="in", event="INCOMING", sipInstanceId="p", number=dn,
                  timeout=5000),
             node("ok", "command", label="ok", command="Answer", sipInstanceId="p"),
             node("bye", "event", label="bye", event="DISCONNECTED", sipInstanceId="p",
                  timeout=5000)]
    return json.dumps({"nodes": nodes, "edges": [edge("p", "in"), edge("in", "ok"),
                                                 edge("ok", "bye")]})


def test_a_flow_waiting_for_an_outside_caller_gets_one_and_the_rest_are_answered() -> None:
    net = FakeNetwork(keep_log=False)
    manager = serving(net, "300")
    outsider = net.add_instance("900")
    target = manager.resolve_target("300")
    run = Engine(manager, reactor=net).run_on_serving(parse_scenario(only_incoming_flow("300")))
    net.advance(0.01)
    first = outsider.dial(target, timeout=10)  # the INCOMING node waits: the flow's call
    net.advance(0.2)
    others = [outsider.invite(target, timeout=10) for _ in range(5)]  # nobody waits now
    net.advance(0.5)
    answered = [net.result(d) for d in others]
    assert all(session.established for session in answered)
    assert first.established  # answered by the flow's Answer node
    net.run(first.hangup())
    result = net.run(run)
    assert result.ok, result.reason
    for session in answered:
        net.run(session.hangup())
    net.run(manager.cleanup())
    net.run(outsider.cleanup())
    net.settle()
    assert net.clock.getDelayedCalls() == []


def test_an_instance_that_does_not_auto_answer_keeps_queueing_everything() -> None:
    net = FakeNetwork(keep_log=False)
    manager = InstanceManager(base_port=5060, reactor=net)
    manager.create_instances([SipInstanceConfig(id="a", label="a", dn="100"),
                              SipInstanceConfig(id="b", label="b", dn="200")])
    manager.start_serving(auto_answer=False)
    outsider = net.add_instance("900")
    run = Engine(manager, reactor=net).run_on_serving(demo_graph("100", "200", talk_ms=300))
    pending = outsider.invite(manager.resolve_target("100"), timeout=2)
    result = net.run(run)
    assert result.ok, result.reason
    try:
        net.run(pending)
    except CallFailed as exc:  # 100 answers nobody by itself: the call waits, then 408
        assert exc.status == 408
    net.run(manager.cleanup())
    net.run(outsider.cleanup())
    net.settle()
    assert net.clock.getDelayedCalls() == []
