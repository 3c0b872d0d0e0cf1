"""``python -m twsip run``: exit codes, output, --report and --ladder files.

Runs go through `run_cli` on a `twsip.testing.FakeNetwork` (the whole CLI in memory), or
on the reactor pytest-twisted already runs where a real socket matters (a taken port);
`main` is called in-process for the paths that end before the reactor starts; one real
subprocess checks ``python -m twsip`` as a user types it.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol

from twsip.__main__ import EXIT_FAILED, EXIT_INVALID, EXIT_OK, _parser, main, run_cli
from twsip.testing import FakeNetwork

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def write_flow(path: Path, nodes: list, edges: list) -> str:
    instances = [{"id": "A", "type": "sipInstance", "data": {"dn": "100", "register": False}},
                 {"id": "B", "type": "sipInstance", "data": {"dn": "200", "register": False}}]
    path.write_text(json.dumps({"nodes": instances + nodes, "edges": edges}))
    return str(path)


def edge(source: str, target: str) -> dict:
    return {"id": f"{source}-{target}", "source": source, "target": target}


# -- refused before the reactor runs: main() in-process ---------------------------------

def test_missing_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["run", str(tmp_path / "nope.json")]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert "cannot read scenario file" in err and "nope.json" in err


def test_invalid_json_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"nodes": [}')
    assert main(["run", str(bad)]) == EXIT_INVALID
    assert "invalid JSON at line 1, column 12" in capsys.readouterr().err


def test_invalid_flow_names_node_and_field(capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    path = write_flow(tmp_path / "f.json", [
        {"id": "call", "type": "command", "data": {"command": "MakeCall",
                                                   "sipInstanceId": "A"}}], [])
    assert main(["run", path]) == EXIT_INVALID
    captured = capsys.readouterr()
    assert "node 'call' (MakeCall): data.targetUri: MakeCall needs a target" in captured.err
    assert captured.out == ""


def test_a_transfer_to_no_dn_of_the_flow_exits_2_naming_node_and_field(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write_flow(tmp_path / "f.json", [
        {"id": "xfer", "type": "command",
         "data": {"command": "BlindTransfer", "sipInstanceId": "B", "targetUser": "300"}}],
        [edge("B", "xfer")])
    assert main(["run", path]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert "node 'xfer' (BlindTransfer): data.targetUser: targetUser '300' is not a DN" in err


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_INVALID
    assert main(["run", "x.json", "--base-port", "70000"]) == EXIT_INVALID
    assert "usage:" in capsys.readouterr().err


def test_default_base_port_is_the_products() -> None:
    args = _parser().parse_args(["run", "x.json"])
    assert (args.base_port, args.max_retries, args.report, args.ladder) == (5060, 10, None,
                                                                            None)


# -- runs: run_cli in memory, or on the test's reactor ----------------------------------

def test_run_writes_log_ladder_summary_report_and_html(network: FakeNetwork,
                                                       tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    report, ladder = tmp_path / "out.json", tmp_path / "out.html"
    code = network.run(run_cli(["run", str(EXAMPLES / "basic-call.json"),
                                "--report", str(report), "--ladder", str(ladder)],
                               reactor=network, stdout=out, stderr=err))
    assert (code, err.getvalue()) == (EXIT_OK, "")
    text = out.getvalue()
    assert "scenario started: 2 instance(s)" in text
    assert "[100] Call 200 (MakeCall): RUNNING" in text
    assert "[200] -> 180 Ringing to 100" in text
    assert "scenario COMPLETED" in text
    assert "|------ INVITE ------>|" in text  # the ladder (lanes as wide as 127.0.0.1:5060)
    assert "Result: COMPLETED in " in text
    data = json.loads(report.read_text())
    assert data["outcome"] == "completed"
    assert [m["label"] for m in data["ladder"]] == [
        "INVITE", "100 Trying", "180 Ringing", "200 OK", "ACK", "BYE", "200 OK"]
    assert data["flow"].endswith("basic-call.json")
    page = ladder.read_text()
    root = ET.fromstring(page.split("\n", 1)[1])
    assert len([g for g in root.iter("g") if g.get("class") == "msg"]) == 7


def test_failed_flow_exits_1(network: FakeNetwork, tmp_path: Path) -> None:
    path = write_flow(tmp_path / "f.json", [
        {"id": "call", "type": "command",
         "data": {"command": "MakeCall", "sipInstanceId": "A", "targetUri": "200"}},
        {"id": "in", "type": "event", "data": {"event": "INCOMING", "sipInstanceId": "B"}},
        {"id": "busy", "type": "command", "data": {"command": "Release",
                                                   "sipInstanceId": "B"}}],
        [edge("A", "call"), edge("B", "in"), edge("in", "busy")])
    out, err = io.StringIO(), io.StringIO()
    report = tmp_path / "r.json"
    code = network.run(run_cli(["run", path, "--quiet", "--report", str(report)],
                               reactor=network, stdout=out, stderr=err))
    assert code == EXIT_FAILED
    assert out.getvalue().lstrip().startswith("100")  # --quiet: straight to the ladder
    assert "Result: FAILED in" in out.getvalue()
    data = json.loads(report.read_text())
    assert (data["outcome"], data["failed_node"]) == ("failed", "call")
    assert "486 Busy Here" in data["reason"]


@pytest_twisted.ensureDeferred
async def test_no_free_port_exits_1(tmp_path: Path) -> None:
    held = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
    port = held.getHost().port
    try:
        err = io.StringIO()
        code = await run_cli(["run", str(EXAMPLES / "busy.json"), "--base-port", str(port),
                              "--max-retries", "0"], stdout=io.StringIO(), stderr=err)
        assert code == EXIT_FAILED
        assert f"no free UDP port on 127.0.0.1: tried {port}" in err.getvalue()
    finally:
        await held.stopListening()


def test_no_sip_leaves_messages_out_of_the_live_log(network: FakeNetwork) -> None:
    out = io.StringIO()
    code = network.run(run_cli(["run", str(EXAMPLES / "busy.json"), "--no-sip"],
                               reactor=network, stdout=out, stderr=io.StringIO()))
    assert code == EXIT_OK
    live = out.getvalue().split("\n\n", 1)[0]
    assert "RUNNING" in live and " -> " not in live and " <- " not in live


def test_unwritable_report_exits_1(network: FakeNetwork, tmp_path: Path) -> None:
    err = io.StringIO()
    code = network.run(run_cli(["run", str(EXAMPLES / "busy.json"), "-q",
                                "--report", str(tmp_path / "no" / "such" / "r.json")],
                               reactor=network, stdout=io.StringIO(), stderr=err))
    assert code == EXIT_FAILED
    assert "cannot write" in err.getvalue() and "r.json" in err.getvalue()


# -- a real `python -m twsip` -----------------------------------------------------------------

def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    return env


def test_python_m_twsip_run(tmp_path: Path) -> None:
    report, ladder = tmp_path / "r.json", tmp_path / "l.html"
    done = subprocess.run(
        [sys.executable, "-m", "twsip", "run", str(EXAMPLES / "basic-call.json"),
         "--base-port", "0", "--report", str(report), "--ladder", str(ladder)],
        capture_output=True, text=True, timeout=60, env=_env(), cwd=tmp_path)
    assert done.returncode == EXIT_OK, done.stderr
    assert "Result: COMPLETED" in done.stdout and "|<-------- BYE --------|" in done.stdout
    assert json.loads(report.read_text())["outcome"] == "completed"
    ET.fromstring(ladder.read_text().split("\n", 1)[1])


def test_python_m_twsip_invalid_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    done = subprocess.run([sys.executable, "-m", "twsip", "run", str(bad)],
                          capture_output=True, text=True, timeout=60, env=_env())
    assert done.returncode == EXIT_INVALID
    assert "must hold a JSON object" in done.stderr and done.stdout == ""
