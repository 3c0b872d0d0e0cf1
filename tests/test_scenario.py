"""Tests for twsip.flow.model: flow JSON -> ExecutionGraph, and every error it owes a user."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twsip.flow.model import (
    KNOWN_CODECS,
    KNOWN_COMMANDS,
    KNOWN_EVENTS,
    ExecutionGraph,
    ScenarioError,
    SipInstanceConfig,
    graph_for_instances,
    load_scenario,
    parse_scenario,
)
from twsip.flow.registry import unsupported_names, unsupported_nodes

BASIC_CALL = Path(__file__).resolve().parent / "data" / "flows" / "basic-call.json"
A, B = "inst-a", "inst-b"


# -- flow builders ---------------------------------------------------------------------

def inst(nid: str, dn: str, **data: Any) -> dict:
    data.setdefault("register", False)
    return {"id": nid, "type": "sipInstance", "position": {"x": 0, "y": 0},
            "data": {"label": dn, "dn": dn, **data}}


def cmd(nid: str, command: str, **data: Any) -> dict:
    return {"id": nid, "type": "command", "data": {"command": command, **data}}


def evt(nid: str, event: str, **data: Any) -> dict:
    return {"id": nid, "type": "event", "data": {"event": event, **data}}


def edge(source: str, target: str, handle: str = "source", branch: str | None = None) -> dict:
    e: dict = {"id": f"{source}->{target}", "source": source, "target": target,
               "sourceHandle": handle}
    if branch is not None:
        e["data"] = {"branchType": branch}
    return e


def flow(nodes: list, edges: list = ()) -> str:
    return json.dumps({"nodes": nodes, "edges": list(edges)})


def two_phones(*nodes: dict, edges: list = ()) -> str:
    """Instances A (DN 100) and B (DN 200) plus the given flow nodes."""
    return flow([inst(A, "100"), inst(B, "200"), *nodes], edges)


def error_of(text: str | bytes, node: str | None, field: str | None) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text)
    err = info.value
    assert (err.node, err.field) == (node, field), str(err)
    if node is not None:
        assert repr(node) in str(err)
    if field is not None:
        assert field in str(err)
    return err


# -- the example file ------------------------------------------------------------------

@pytest.fixture
def basic_call() -> ExecutionGraph:
    return load_scenario(BASIC_CALL)


def n(k: int) -> str:
    return f"7f1c2a90-0001-4d2e-9a51-00000000000{k}"


def test_basic_call_instances(basic_call: ExecutionGraph) -> None:
    a, b = basic_call.instances
    assert a.config == SipInstanceConfig(id=n(1), label="100", dn="100", register=False,
                                         color="#3b82f6", codecs=("PCMU", "PCMA"))
    assert b.config == SipInstanceConfig(id=n(2), label="200", dn="200", register=False,
                                         color="#14b8a6", codecs=("PCMA",))
    assert a.start_nodes == (n(3),)
    assert b.start_nodes == (n(5),)
    assert basic_call.instance_by_dn("200") is b.config
    assert basic_call.instance_by_dn("300") is None


def test_basic_call_nodes(basic_call: ExecutionGraph) -> None:
    nodes = basic_call.nodes
    assert list(nodes) == [n(k) for k in range(3, 9)]
    make = nodes[n(3)]
    assert (make.kind, make.name, make.instance_id, make.label) == (
        "command", "MakeCall", n(1), "MakeCall")
    assert (make.target_uri, make.timeout_ms, make.call_id) == ("200", 15000, "call-1")
    assert (make.success, make.failure) == (n(4), None)
    assert (nodes[n(4)].name, nodes[n(4)].timeout_ms, nodes[n(4)].success) == (
        "DISCONNECTED", 20000, None)
    incoming = nodes[n(5)]
    assert (incoming.name, incoming.number, incoming.instance_id) == ("INCOMING", "200", n(2))
    assert [nodes[n(k)].success for k in (5, 6, 7, 8)] == [n(6), n(7), n(8), None]
    assert nodes[n(7)].label == "Talk" and nodes[n(7)].timeout_ms == 1000
    assert all(node.failure is None for node in nodes.values())
    assert unsupported_nodes(basic_call) == []


def test_basic_call_bytes_and_text_agree(basic_call: ExecutionGraph) -> None:
    raw = BASIC_CALL.read_bytes()
    from_file = dataclasses.replace(basic_call, base_dir=None)  # the file's folder aside
    assert parse_scenario(raw) == parse_scenario(raw.decode()) == from_file
    assert parse_scenario(b"\xef\xbb\xbf" + raw) == from_file  # a BOM from a Windows editor
    assert basic_call.base_dir == str(BASIC_CALL.parent)


# -- defaults and branches -------------------------------------------------------------

def test_defaults() -> None:
    text = flow([{"id": A, "type": "sipInstance", "data": {"dn": "100", "pbxHost": "pbx.example"}},
                 inst(B, "200"),
                 cmd("c1", "Answer", sipInstanceId=A),
                 evt("e1", "INCOMING", sipInstanceId=B)])
    graph = parse_scenario(text)
    config = graph.instances[0].config
    assert (config.label, config.register, config.codecs, config.mode, config.color) == (
        "100", True, KNOWN_CODECS, "DN", None)
    assert config.pbx_host == "pbx.example" and config.pbx_port is None
    answer, incoming = graph.nodes["c1"], graph.nodes["e1"]
    assert (answer.call_id, answer.timeout_ms, answer.label, answer.target_uri) == (
        "call-1", 10000, "Answer", None)
    assert (incoming.call_id, incoming.timeout_ms, incoming.label) == (
        "call-1", 10000, "INCOMING")
    assert incoming.number == "200"  # missing number: the DN of its own instance
    assert (answer.success, answer.failure) == (None, None)
    assert graph.instances[0].start_nodes == ()


def test_null_and_blank_fields_mean_absent() -> None:
    graph = parse_scenario(two_phones(
        cmd("c", "Answer", sipInstanceId=A, callId="", timeout=None, label=" "),
        evt("e", "INCOMING", sipInstanceId=B, number="", timeout="")))
    assert (graph.nodes["c"].call_id, graph.nodes["c"].timeout_ms) == ("call-1", 10000)
    assert graph.nodes["c"].label == "Answer"
    assert (graph.nodes["e"].number, graph.nodes["e"].timeout_ms) == ("200", 10000)


def test_instance_fields() -> None:
    graph = parse_scenario(flow([inst(A, "100", register=True, pbxHost="10.0.0.1",
                                      pbxPort="5080", pbxTransport="TCP", label="Alice",
                                      registerIntervalSeconds=300, codecs=["pcma"],
                                      mode="DN", color="#fff")]))
    assert graph.instances[0].config == SipInstanceConfig(
        id=A, label="Alice", dn="100", register=True, color="#fff", codecs=("PCMA",),
        pbx_host="10.0.0.1", pbx_port=5080, pbx_transport="TCP", register_interval_seconds=300)


@pytest.mark.parametrize("timeout, expected", [
    (15000, 15000), ("15000", 15000), (" 2500 ", 2500), (1500.5, 1501), ("1e3", 1000)])
def test_timeout_number_or_numeric_string(timeout: Any, expected: int) -> None:
    graph = parse_scenario(two_phones(evt("t", "TIMEOUT", sipInstanceId=A, timeout=timeout)))
    assert graph.nodes["t"].timeout_ms == expected
    assert graph.nodes["t"].data["timeout"] == timeout  # raw data kept as written


def test_less_common_fields_stay_in_data() -> None:
    graph = parse_scenario(two_phones(
        cmd("d", "SendDTMF", sipInstanceId=A, digits="123#", intervalMs=80, callId="call-2")))
    node = graph.nodes["d"]
    assert node.data["digits"] == "123#" and node.data["intervalMs"] == 80
    assert node.call_id == "call-2"
    with pytest.raises(TypeError):
        node.data["digits"] = "9"  # type: ignore[index]
    with pytest.raises(TypeError):
        graph.nodes["x"] = node  # type: ignore[index]


def test_start_nodes_in_edge_order_and_positions_ignored() -> None:
    graph = parse_scenario(two_phones(
        evt("e1", "TIMEOUT", sipInstanceId=A), evt("e2", "TIMEOUT", sipInstanceId=A),
        edges=[edge(A, "e2"), edge(A, "e1"), edge(A, "e2")]))
    assert graph.instances[0].start_nodes == ("e2", "e1")
    assert graph.instances[1].start_nodes == ()


def test_failure_branch_by_source_handle() -> None:
    graph = parse_scenario(two_phones(
        cmd("call", "MakeCall", sipInstanceId=A, targetUri="200"),
        evt("ok", "DISCONNECTED", sipInstanceId=A), cmd("bad", "Release", sipInstanceId=A),
        edges=[edge("call", "bad", handle="failure"), edge("call", "ok")]))
    assert (graph.nodes["call"].success, graph.nodes["call"].failure) == ("ok", "bad")


def test_failure_branch_by_branch_type() -> None:
    graph = parse_scenario(two_phones(
        cmd("call", "MakeCall", sipInstanceId=A, targetUri="200"),
        evt("ok", "DISCONNECTED", sipInstanceId=A), cmd("bad", "Release", sipInstanceId=A),
        edges=[edge("call", "ok", branch="success"),
               edge("call", "bad", handle="source", branch="failure")]))
    assert (graph.nodes["call"].success, graph.nodes["call"].failure) == ("ok", "bad")


def test_edge_without_handle_or_data_is_success() -> None:
    graph = parse_scenario(two_phones(
        cmd("a", "Answer", sipInstanceId=B), cmd("r", "Release", sipInstanceId=B),
        edges=[{"source": "a", "target": "r"}]))
    assert (graph.nodes["a"].success, graph.nodes["a"].failure) == ("r", None)


# -- instance inheritance --------------------------------------------------------------

def test_start_node_inherits_its_instance() -> None:
    graph = parse_scenario(two_phones(evt("in", "INCOMING"), edges=[edge(B, "in")]))
    assert graph.nodes["in"].instance_id == B
    assert graph.nodes["in"].number == "200"


def test_inheritance_follows_success_and_failure_chains() -> None:
    graph = parse_scenario(two_phones(
        cmd("call", "MakeCall", targetUri="200"), evt("ring", "RINGING"),
        cmd("give-up", "Release"), evt("gone", "DISCONNECTED"),
        edges=[edge(A, "call"), edge("call", "ring"), edge("call", "give-up", handle="failure"),
               edge("ring", "gone", branch="failure")]))
    assert {nid: node.instance_id for nid, node in graph.nodes.items()} == {
        "call": A, "ring": A, "give-up": A, "gone": A}


def test_own_sip_instance_id_wins_and_is_passed_on() -> None:
    graph = parse_scenario(two_phones(
        cmd("call", "MakeCall", targetUri="200"), evt("in", "INCOMING", sipInstanceId=B),
        cmd("answer", "Answer"),
        edges=[edge(A, "call"), edge("call", "in"), edge("in", "answer")]))
    assert [graph.nodes[k].instance_id for k in ("call", "in", "answer")] == [A, B, B]


def test_inheritance_from_a_node_that_names_its_instance() -> None:
    graph = parse_scenario(two_phones(
        evt("in", "INCOMING", sipInstanceId=B), cmd("answer", "Answer"),
        edges=[edge("in", "answer")]))
    assert graph.nodes["answer"].instance_id == B


def test_node_reached_from_two_instances_needs_its_own_id() -> None:
    err = error_of(two_phones(
        evt("wait-a", "TIMEOUT"), evt("wait-b", "TIMEOUT"), cmd("end", "Release"),
        edges=[edge(A, "wait-a"), edge(B, "wait-b"), edge("wait-a", "end"),
               edge("wait-b", "end")]), "end", "data.sipInstanceId")
    assert "several instances" in str(err)


# -- one test per error ----------------------------------------------------------------

def test_error_unknown_node_type() -> None:
    err = error_of(two_phones({"id": "x", "type": "gateway", "data": {"label": "GW"}}),
                   "x", "type")
    assert "(GW)" in str(err) and "'gateway'" in str(err)


def test_error_unknown_command() -> None:
    err = error_of(two_phones(cmd("c", "Dance", sipInstanceId=A)), "c", "data.command")
    assert "'Dance'" in str(err) and "MakeCall" in str(err)


def test_error_missing_command() -> None:
    error_of(two_phones({"id": "c", "type": "command", "data": {"sipInstanceId": A}}),
             "c", "data.command")


def test_error_unknown_event() -> None:
    err = error_of(two_phones(evt("e", "ANSWERED", sipInstanceId=A)), "e", "data.event")
    assert "'ANSWERED'" in str(err) and "INCOMING" in str(err)


def test_node_with_no_instance_is_left_out_with_a_warning() -> None:
    graph = parse_scenario(two_phones(cmd("lost", "Release", label="Hang up")))
    assert "lost" not in graph.nodes
    (warning,) = graph.warnings
    assert (warning.node, warning.field) == ("lost", "data.sipInstanceId")
    assert "(Hang up)" in str(warning) and "no instance runs it" in str(warning)


def test_error_unknown_instance() -> None:
    err = error_of(two_phones(cmd("c", "Answer", sipInstanceId="ghost")),
                   "c", "data.sipInstanceId")
    assert "'ghost'" in str(err)


def test_error_sip_instance_id_naming_a_command_node() -> None:
    error_of(two_phones(cmd("c", "Answer", sipInstanceId=A), cmd("d", "Answer", sipInstanceId="c")),
             "d", "data.sipInstanceId")


def test_error_duplicate_dn() -> None:
    err = error_of(flow([inst(A, "100"), inst(B, "100", label="Bob")]), B, "data.dn")
    assert "(Bob)" in str(err) and repr(A) in str(err) and "'100'" in str(err)


@pytest.mark.parametrize("target", [None, "", "  "], ids=["missing", "empty", "blank"])
def test_error_make_call_without_target(target: str | None) -> None:
    node = cmd("abc", "MakeCall", sipInstanceId=A, label="MakeCall")
    if target is not None:
        node["data"]["targetUri"] = target
    err = error_of(two_phones(node), "abc", "data.targetUri")
    assert str(err) == ("node 'abc' (MakeCall): data.targetUri: "
                        "MakeCall needs a target (a DN or a sip: URI)")


def test_error_incoming_number_matches_no_dn() -> None:
    err = error_of(two_phones(evt("in", "INCOMING", sipInstanceId=B, number="300")),
                   "in", "data.number")
    assert "'300'" in str(err) and "100, 200" in str(err)


def test_incoming_number_of_another_instance_is_fine() -> None:
    graph = parse_scenario(two_phones(evt("in", "INCOMING", sipInstanceId=A, number="200")))
    assert graph.nodes["in"].number == "200"


def test_error_cycle() -> None:
    err = error_of(two_phones(
        cmd("call", "MakeCall", targetUri="200"), evt("ring", "RINGING"),
        evt("gone", "DISCONNECTED"),
        edges=[edge(A, "call"), edge("call", "ring"), edge("ring", "gone"),
               edge("gone", "ring", branch="failure")]), "ring", "edges[2]")
    assert "cycle ('ring' -> 'gone' -> 'ring')" in str(err)


def test_error_self_loop() -> None:
    err = error_of(two_phones(evt("t", "TIMEOUT", sipInstanceId=A),
                              edges=[edge("t", "t", handle="failure")]), "t", "edges[0]")
    assert "cycle" in str(err)


@pytest.mark.parametrize("register", ["default", True])
def test_register_without_pbx_host_runs_unregistered_with_a_warning(register: Any) -> None:
    node = inst(A, "100", label="Alice")
    if register == "default":
        del node["data"]["register"]
    else:
        node["data"]["register"] = register
    graph = parse_scenario(flow([node]))
    assert graph.instances[0].config.register is False
    (warning,) = graph.warnings
    assert (warning.node, warning.field) == (A, "data.register")
    assert "(Alice)" in str(warning) and "nothing to register to" in str(warning)
    assert ("(the default)" in str(warning)) == (register == "default")


def test_unknown_codec_is_left_out_with_a_warning() -> None:
    graph = parse_scenario(flow([inst(A, "100", codecs=["G729", "pcma", "PCMU"])]))
    assert graph.instances[0].config.codecs == ("PCMA", "PCMU")
    (warning,) = graph.warnings
    assert (warning.node, warning.field) == (A, "data.codecs")
    assert "'G729'" in str(warning) and "PCMU, PCMA" in str(warning)


def test_error_no_supported_codec_left() -> None:
    err = error_of(flow([inst(A, "100", codecs=["G729", "opus"])]), A, "data.codecs")
    assert "'G729'" in str(err) and "PCMU, PCMA" in str(err)


def test_empty_codec_list_means_the_default() -> None:
    graph = parse_scenario(flow([inst(A, "100", codecs=[])]))
    assert graph.instances[0].config.codecs == ("PCMU", "PCMA") and graph.warnings == ()


def test_error_invalid_json() -> None:
    err = error_of('{"nodes": [\n  {"id": "a",,}\n]}', None, None)
    assert (err.line, err.column) == (2, 14)
    assert "line 2, column 14" in str(err)


@pytest.mark.parametrize("text", ['{"nodes": [' + "1" * 5000 + "]}", "[" * 100000],
                         ids=["huge-integer", "deep-nesting"])
def test_error_json_python_cannot_hold(text: str) -> None:
    assert str(error_of(text, None, None)).startswith("invalid JSON")


def test_error_not_utf8() -> None:
    error_of(b'{"nodes": ["\xff"]}', None, None)


@pytest.mark.parametrize("node, nid, field", [
    (evt("t", "TIMEOUT", sipInstanceId=A, timeout=0), "t", "data.timeout"),
    (evt("t", "TIMEOUT", sipInstanceId=A, timeout=-5), "t", "data.timeout"),
    (evt("t", "TIMEOUT", sipInstanceId=A, timeout="soon"), "t", "data.timeout"),
    (evt("t", "TIMEOUT", sipInstanceId=A, timeout=True), "t", "data.timeout"),
    (evt("t", "TIMEOUT", sipInstanceId=A, timeout="NaN"), "t", "data.timeout"),
    (evt("t", "TIMEOUT", sipInstanceId=A, timeout=[1000]), "t", "data.timeout"),
    (cmd("d", "SendDTMF", sipInstanceId=A, intervalMs=0), "d", "data.intervalMs"),
    (cmd("c", "Answer", sipInstanceId=A, callId=1), "c", "data.callId"),
    (cmd("c", "Answer", sipInstanceId=7), "c", "data.sipInstanceId"),
    (cmd("c", "Answer", sipInstanceId=A, label={"x": 1}), "c", "data.label"),
    (inst("i", "300", codecs="PCMU"), "i", "data.codecs"),
    (inst("i", "300", codecs=["PCMU", 8]), "i", "data.codecs"),
    (inst("i", ""), "i", "data.dn"),
    (inst("i", True), "i", "data.dn"),
    (inst("i", -3), "i", "data.dn"),
    (cmd("d", "SendDTMF", sipInstanceId=A, digits=1.5), "d", "data.digits"),
    (cmd("c", "MakeCall", sipInstanceId=A, targetUri=True), "c", "data.targetUri"),
    (inst("i", "300", register="no"), "i", "data.register"),
    (inst("i", "300", color=3), "i", "data.color"),
    (inst("i", "300", pbxHost=["pbx"]), "i", "data.pbxHost"),
    (inst("i", "300", pbxPort=70000), "i", "data.pbxPort"),
    (inst("i", "300", pbxPort=True), "i", "data.pbxPort"),
    (inst("i", "300", pbxPort="50x"), "i", "data.pbxPort"),
    (inst("i", "300", registerIntervalSeconds=0), "i", "data.registerIntervalSeconds"),
    ({"id": "d", "type": "command", "data": ["MakeCall"]}, "d", "data"),
])
def test_error_wrong_types(node: dict, nid: str, field: str) -> None:
    error_of(two_phones(node), nid, field)


@pytest.mark.parametrize("end", ["source", "target"])
def test_error_edge_names_missing_node(end: str) -> None:
    e = edge("t", "t")
    e[end] = "ghost"
    err = error_of(two_phones(evt("t", "TIMEOUT", sipInstanceId=A), edges=[e]),
                   "ghost", f"edges[0].{end}")
    assert "not in the file" in str(err)


def test_error_edge_without_target() -> None:
    error_of(two_phones(edges=[{"id": "e1", "source": A}]), None, "edges[0].target")


def test_error_edge_into_sip_instance() -> None:
    error_of(two_phones(cmd("c", "Answer", sipInstanceId=A), edges=[edge("c", B)]),
             B, "edges[0].target")


def test_error_second_success_branch() -> None:
    err = error_of(two_phones(
        cmd("a", "Answer", sipInstanceId=B), cmd("r1", "Release", sipInstanceId=B),
        cmd("r2", "Release", sipInstanceId=B, label="Second"),
        edges=[edge("a", "r1"), edge("a", "r2", branch="success")]), "a", "edges[1]")
    assert "second success branch" in str(err) and "'r1'" in str(err)


def test_error_second_failure_branch() -> None:
    err = error_of(two_phones(
        cmd("a", "Answer", sipInstanceId=B), cmd("r1", "Release", sipInstanceId=B),
        cmd("r2", "Release", sipInstanceId=B),
        edges=[edge("a", "r1", handle="failure"), edge("a", "r2", branch="failure")]),
        "a", "edges[1]")
    assert "second failure branch" in str(err)


def test_error_duplicate_node_id() -> None:
    error_of(two_phones(cmd("c", "Answer", sipInstanceId=A), cmd("c", "Answer", sipInstanceId=A)),
             "c", "id")


@pytest.mark.parametrize("doc, field", [
    ([], None), ("flow", None), ({"edges": []}, "nodes"), ({"nodes": {}}, "nodes"),
    ({"nodes": [], "edges": {}}, "edges"), ({"nodes": [7]}, "nodes[0]"),
    ({"nodes": [{"type": "event"}]}, "nodes[0].id"), ({"nodes": [], "edges": [1]}, "edges[0]"),
])
def test_error_file_shape(doc: Any, field: str | None) -> None:
    error_of(json.dumps(doc), None, field)


def test_error_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ScenarioError) as info:
        load_scenario(missing)
    assert str(missing) in str(info.value)
    assert (info.value.node, info.value.field) == (None, None)


# -- the error type --------------------------------------------------------------------

def test_scenario_error_is_a_value_error_and_pickles() -> None:
    err = ScenarioError("MakeCall needs a target", "abc", "data.targetUri", "Call Bob")
    assert isinstance(err, ValueError)
    assert str(err) == "node 'abc' (Call Bob): data.targetUri: MakeCall needs a target"
    back = pickle.loads(pickle.dumps(err))
    assert (back.node, back.field, str(back)) == ("abc", "data.targetUri", str(err))
    assert str(ScenarioError("bad", field="nodes")) == "nodes: bad"
    assert str(ScenarioError("bad")) == "bad"


# -- unsupported nodes -----------------------------------------------------------------

def test_unsupported_nodes_parse_and_are_listed() -> None:
    nodes = [cmd(f"c-{name}", name, sipInstanceId=A, targetUri="200")
             for name in KNOWN_COMMANDS]
    nodes += [evt(f"e-{name}", name, sipInstanceId=B) for name in KNOWN_EVENTS]
    graph = parse_scenario(two_phones(*nodes))
    listed = [node.name for node in unsupported_nodes(graph)]
    assert listed == unsupported_names() == []  # every node of the language runs


# -- graph_for_instances ---------------------------------------------------------------

def test_graph_for_instances() -> None:
    graph = graph_for_instances(3)
    assert [chain.config.dn for chain in graph.instances] == ["100", "200", "300"]
    assert all(not chain.config.register and chain.start_nodes == ()
               for chain in graph.instances)
    assert len({chain.config.id for chain in graph.instances}) == 3
    assert dict(graph.nodes) == {} and unsupported_nodes(graph) == []
    assert graph.instance_by_dn("200") is graph.instances[1].config


def test_graph_for_instances_first_dn() -> None:
    graph = graph_for_instances(2, first_dn=1000)
    assert [chain.config.dn for chain in graph.instances] == ["1000", "1100"]


@pytest.mark.parametrize("count", [0, -1, True, 2.0])
def test_graph_for_instances_rejects_bad_counts(count: Any) -> None:
    with pytest.raises(ValueError):
        graph_for_instances(count)


# -- robustness ------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_json_gives_a_graph_or_a_scenario_error(doc: Any) -> None:
    try:
        parse_scenario(json.dumps(doc))
    except ScenarioError:
        pass


FIELDS = ["label", "dn", "register", "codecs", "pbxHost", "pbxPort", "command", "event",
          "sipInstanceId", "callId", "targetUri", "timeout", "number", "digits", "intervalMs",
          "branchType"]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 4), st.sampled_from(FIELDS), json_values)
def test_any_field_value_gives_a_graph_or_a_scenario_error(which: int, key: str,
                                                           value: Any) -> None:
    nodes = [inst(A, "100"), inst(B, "200"),
             cmd("call", "MakeCall", targetUri="200"), evt("in", "INCOMING"),
             cmd("answer", "Answer")]
    edges = [edge(A, "call"), edge(B, "in"), edge("in", "answer", branch="success")]
    nodes[which]["data"][key] = value
    try:
        graph = parse_scenario(flow(nodes, edges))
    except ScenarioError as err:
        assert err.node is None or err.node in {node["id"] for node in nodes}
    else:
        assert set(graph.nodes) == {"call", "in", "answer"}
