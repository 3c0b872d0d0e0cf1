"""Flows as the visual builder saves them: taken as they come, warned about, checked.

The files in tests/data/builder are shaped like the builder's exports: its v1.0 (instances
with only label/dn/register), v1.1 (legacy fields, empty PBX fields, sipInstanceId left
to inference), today's default settings (register true by default, no PBX, the builder's
own ports in targetUri) and one flow with every node type.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from twsip.__main__ import EXIT_INVALID, EXIT_OK, main, run_cli
from twsip.flow.check import plan_flow, predicted_addresses, target_warnings
from twsip.flow.model import ScenarioError, load_scenario, parse_scenario
from twsip.testing import FakeNetwork

BUILDER = Path(__file__).resolve().parent / "data" / "builder"
RUNNABLE = ("default-settings.json", "v1.0-basic-call.json", "v1.1-basic-call.json")


def flow(nodes: list[dict[str, Any]], edges: list[dict[str, Any]] | None = None) -> str:
    return json.dumps({"nodes": nodes, "edges": edges or []})


def inst(nid: str, dn: str, **data: Any) -> dict[str, Any]:
    return {"id": nid, "type": "sipInstance", "data": {"label": dn, "dn": dn, **data}}


def cmd(nid: str, command: str, **data: Any) -> dict[str, Any]:
    return {"id": nid, "type": "command", "data": {"command": command, **data}}


def evt(nid: str, event: str, **data: Any) -> dict[str, Any]:
    return {"id": nid, "type": "event", "data": {"event": event, **data}}


def edge(source: str, target: str, **more: Any) -> dict[str, Any]:
    return {"id": f"{source}-{target}", "source": source, "target": target, **more}


# -- every file of the folder parses ------------------------------------------------------

@pytest.mark.parametrize("name", sorted(p.name for p in BUILDER.glob("*.json")))
def test_builder_file_parses(name: str) -> None:
    graph = load_scenario(BUILDER / name)
    assert graph.instances and graph.nodes


def test_v1_0_instances_with_only_label_dn_register() -> None:
    graph = load_scenario(BUILDER / "v1.0-basic-call.json")
    assert [c.codecs for c in graph.configs] == [("PCMU", "PCMA")] * 2
    assert [c.register for c in graph.configs] == [False, False]
    assert [w.field for w in graph.warnings] == ["data.register", "data.register"]


def test_v1_1_legacy_fields_and_inferred_instances() -> None:
    graph = load_scenario(BUILDER / "v1.1-basic-call.json")
    alice, bob = graph.configs
    assert (alice.mode, alice.pbx_host, alice.pbx_port) == ("DN", None, 5060)
    assert bob.codecs == ("PCMA",) and bob.pbx_port == 5060  # "5060" and 5060 alike
    owners = {nid: node.instance_id for nid, node in graph.nodes.items()}
    assert owners == {"n1": "i1", "n2": "i1", "n3": "i1", "n4": "i1",
                      "n5": "i2", "n6": "i2", "n7": "i2"}
    assert graph.nodes["n5"].number == "200"  # INCOMING's empty number: its own DN


def test_every_node_type_parses_with_inferred_instances() -> None:
    graph = load_scenario(BUILDER / "every-node-type.json")
    names = {node.name for node in graph.nodes.values()}
    assert len(names) == 17
    assert {n.instance_id for n in graph.nodes.values() if n.id.startswith("c")} == {"i1"}
    assert {n.instance_id for n in graph.nodes.values() if n.id.startswith("v")} == {"i2"}


# -- the cases of the issue, one by one ----------------------------------------------------

def test_register_true_without_pbx_host_is_one_warning_per_instance() -> None:
    graph = parse_scenario(flow([inst("a", "100"), inst("b", "200", register=True),
                                 inst("c", "300", register=False)]))
    assert [(w.node, w.field) for w in graph.warnings] == [("a", "data.register"),
                                                           ("b", "data.register")]
    assert "(the default)" in str(graph.warnings[0])
    assert "(the default)" not in str(graph.warnings[1])


def test_codecs_case_insensitive_unknown_skipped_in_order() -> None:
    graph = parse_scenario(flow([inst("a", "100", register=False,
                                      codecs=["g722", "pcma", "telephone-event", "Pcmu"])]))
    assert graph.configs[0].codecs == ("PCMA", "PCMU")
    assert [str(w) for w in graph.warnings] == [
        "node 'a' (100): data.codecs: codec 'g722' is not supported (twsip has PCMU, "
        "PCMA): left out"]


def test_no_supported_codec_left_is_refused() -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(flow([inst("a", "100", register=False, codecs=["G729"])]))
    assert (err.value.node, err.value.field) == ("a", "data.codecs")


def test_missing_instance_id_inferred_from_a_predecessor() -> None:
    graph = parse_scenario(flow(
        [inst("a", "100", register=False), cmd("m", "MakeCall", targetUri="100"),
         evt("t", "TIMEOUT", timeout=1)], [edge("a", "m"), edge("m", "t")]))
    assert graph.nodes["t"].instance_id == "a"


def test_node_reached_from_two_instances_is_refused_naming_both() -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(flow(
            [inst("a", "100", label="Alice", register=False),
             inst("b", "200", label="Bob", register=False), evt("t", "TIMEOUT")],
            [edge("a", "t"), edge("b", "t")]))
    assert (err.value.node, err.value.field) == ("t", "data.sipInstanceId")
    assert "'a' (Alice)" in str(err.value) and "'b' (Bob)" in str(err.value)


@pytest.mark.parametrize("extra", [
    {"position": None}, {"selected": True, "dragging": False, "width": 200},
])
def test_node_shape_extras_are_ignored(extra: dict[str, Any]) -> None:
    node = {**inst("a", "100", register=False), **extra}
    assert parse_scenario(flow([node])).configs[0].dn == "100"


@pytest.mark.parametrize("handle, data, branch", [
    (None, None, "success"), ("success", None, "success"), ("source", None, "success"),
    ("failure", None, "failure"), ("source", {"branchType": "failure"}, "failure"),
    (None, {"branchType": "success"}, "success"),
])
def test_edge_shapes(handle: str | None, data: dict[str, Any] | None, branch: str) -> None:
    more: dict[str, Any] = {}
    if handle is not None:
        more["sourceHandle"] = handle
    if data is not None:
        more["data"] = data
    graph = parse_scenario(flow(
        [inst("a", "100", register=False), evt("t", "TIMEOUT", sipInstanceId="a"),
         evt("u", "TIMEOUT", sipInstanceId="a")], [edge("a", "t"), edge("t", "u", **more)]))
    assert getattr(graph.nodes["t"], branch) == "u"


def test_numbers_typed_into_text_fields_are_taken_as_text() -> None:
    graph = parse_scenario(flow(
        [inst("a", 100, register=False), inst("b", 200, register=False),
         cmd("m", "MakeCall", sipInstanceId="a", targetUri=200),
         cmd("d", "SendDTMF", sipInstanceId="a", digits=123)], [edge("a", "m")]))
    assert [c.dn for c in graph.configs] == ["100", "200"]
    assert graph.nodes["m"].target_uri == "200" and graph.nodes["d"].data["digits"] == 123


# -- targetUri written for the builder's own ports ------------------------------------------

def _targets(uri: str) -> Any:
    return parse_scenario(flow(
        [inst("a", "100", register=False), inst("b", "200", register=False),
         cmd("m", "MakeCall", sipInstanceId="a", targetUri=uri)], [edge("a", "m")]))


def test_builder_port_target_is_silent_on_the_default_ports() -> None:
    graph = _targets("sip:200@127.0.0.1:5062")
    assert target_warnings(graph, predicted_addresses(graph, 5060)) == []


def test_builder_port_target_warns_with_another_base_port() -> None:
    graph = _targets("sip:200@127.0.0.1:5062")
    (warning,) = target_warnings(graph, predicted_addresses(graph, 6000))
    assert (warning.node, warning.field) == ("m", "data.targetUri")
    assert "DN 200, which is at 127.0.0.1:6002, not 127.0.0.1:5062" in str(warning)


@pytest.mark.parametrize("uri", ["sip:999@127.0.0.1:5062", "200", "sip:200@127.0.0.1:6002"])
def test_other_targets_are_not_warned_about(uri: str) -> None:
    graph = _targets(uri)
    assert target_warnings(graph, predicted_addresses(graph, 6000)) == []


def test_system_picked_ports_predict_nothing() -> None:
    graph = _targets("sip:200@127.0.0.1:5062")
    assert plan_flow(graph, 0).addresses == {} and plan_flow(graph, 0).warnings == ()


# -- python -m twsip check ------------------------------------------------------------------

def test_check_runnable_flows_exit_0_with_plan_and_warnings(
        capsys: pytest.CaptureFixture[str]) -> None:
    paths = [str(BUILDER / name) for name in RUNNABLE]
    assert main(["check", *paths, "--base-port", "7000"]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"{paths[0]}: runnable, 3 warning(s)" in out
    assert "DN 100 (Phone 1) at 127.0.0.1:7000, codecs PCMU, PCMA" in out
    assert "DN 200 (Phone 2) at 127.0.0.1:7002" in out
    assert "100: MakeCall -> TIMEOUT -> Release" in out
    assert "200: Incoming (INCOMING) -> Answer -> Gone (DISCONNECTED)" in out
    assert "targetUri sip:200@127.0.0.1:5062 names DN 200, which is at 127.0.0.1:7002" in out
    assert out.count("nothing to register to") == 6


def test_check_binds_nothing_and_sends_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    # The default ports are used by nothing in this test; check must not even try them.
    import socket

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        assert main(["check", str(BUILDER / "v1.0-basic-call.json"), "--base-port",
                     str(port)]) == EXIT_OK
    finally:
        probe.close()
    assert f"DN 100 at 127.0.0.1:{port}" in capsys.readouterr().out


def test_check_invalid_and_unsupported_exit_2_naming_node_and_field(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(flow([inst("a", "100", codecs=["G729"])]))
    status = main(["check", str(BUILDER / "v1.0-basic-call.json"), str(bad),
                   str(BUILDER / "every-node-type.json")])
    assert status == EXIT_INVALID
    out = capsys.readouterr().out
    assert "v1.0-basic-call.json: runnable" in out
    assert f"{bad}: INVALID: node 'a' (100): data.codecs:" in out
    # every node type runs now; this one fails on its missing WAV, named with the field
    assert "every-node-type.json: INVALID: node 'c2' (PlayAudio): data.filePath:" in out


@pytest_twisted.ensureDeferred
async def test_run_prints_the_warnings_before_it_starts(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_text(flow([inst("a", "100", codecs=["G729", "PCMU"])]))
    out, err = io.StringIO(), io.StringIO()
    status = await run_cli(["run", str(path), "--base-port", "0"], stdout=out, stderr=err)
    assert status == EXIT_OK
    lines = err.getvalue().splitlines()
    assert lines == [
        f"twsip: {path}: warning: node 'a' (100): data.codecs: codec 'G729' is not "
        f"supported (twsip has PCMU, PCMA): left out",
        f"twsip: {path}: warning: node 'a' (100): data.register: register is true (the "
        f"default) but there is no pbxHost, so there is nothing to register to: DN 100 runs "
        f"unregistered, reachable by its DN"]


# -- they run: in memory, on the ports the builder assumes ----------------------------------

@pytest.mark.parametrize("name", RUNNABLE)
def test_builder_flow_runs_unedited(network: FakeNetwork, name: str, tmp_path: Path) -> None:
    """`python -m twsip run flow.json` on the default base port: exit 0, warnings reported."""
    out, err = io.StringIO(), io.StringIO()
    report = tmp_path / "report.json"
    status = network.run(run_cli(["run", str(BUILDER / name), "--report", str(report)],
                                 reactor=network, stdout=out, stderr=err))
    assert status == EXIT_OK, out.getvalue() + err.getvalue()
    data = json.loads(report.read_text())
    assert data["outcome"] == "completed"
    assert {n["state"] for n in data["nodes"]} == {"completed"}
    assert [w["field"] for w in data["warnings"]] == ["data.register", "data.register"]
    assert "Result: COMPLETED" in out.getvalue()
    assert out.getvalue().count("warning: node") == 2  # in the summary; stderr had them first
    assert err.getvalue().count(": warning: node") == 2


def test_builder_ports_elsewhere_warn_at_run_time_with_the_real_address(
        network: FakeNetwork) -> None:
    from twsip.flow.engine import Engine
    from twsip.manager import InstanceManager

    graph = load_scenario(BUILDER / "default-settings.json")
    manager = InstanceManager(base_port=7000, reactor=network)
    result = network.run(Engine(manager, reactor=network).run(graph))
    texts = [str(w) for w in result.warnings]
    assert any("which is at 127.0.0.1:7002, not 127.0.0.1:5062" in t for t in texts)
    assert result.outcome == "failed"  # nobody listens on 5062: the call times out
    warned = [e for e in result.events if getattr(e, "kind", "") == "warning"]
    assert [e.text for e in warned] == texts


def test_register_to_a_pbx_off_this_machine_is_refused(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "pbx.json"
    path.write_text(flow([inst("a", "100", label="Alice", register=True,
                               pbxHost="pbx.example.com", pbxPort="5080")]))
    assert main(["check", str(path)]) == EXIT_INVALID
    out = capsys.readouterr().out
    assert "node 'a' (Alice): data.pbxHost: pbxHost 'pbx.example.com' is not on this " \
           "machine" in out
    path.write_text(flow([inst("a", "100", label="Alice", register=True,
                               pbxHost="localhost", pbxPort="5080")]))
    assert main(["check", str(path)]) == 0
