"""Mid-call against a peer nobody here wrote (issue 10): SIPp holds and retrieves a flow's
call by re-INVITE, and SIPp is transferred by a flow's BlindTransfer.

The SIPp scenarios check our answers themselves (``ereg`` with ``check_it``: a 200 whose
SDP lacks the required direction, or a REFER without the required Refer-To, fails SIPp's
call and its exit code); the flow's report says whether HELD, RETRIEVED and BlindTransfer
completed on our side.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor

from sipp_helper import SCENARIOS, kill_leftovers, requires_sipp, run_sipp, \
    start_sipp_server, system_chosen_udp_port
from twsip.__main__ import EXIT_OK, run_cli

pytestmark = requires_sipp


def _edges(*ids: str) -> list[dict]:
    return [{"id": f"{a}->{b}", "source": a, "target": b} for a, b in zip(ids, ids[1:])]


def _held_flow() -> dict:
    return {"nodes": [
        {"id": "phone", "type": "sipInstance",
         "data": {"label": "Phone 200", "dn": "200", "register": False, "codecs": ["PCMU"]}},
        {"id": "in", "type": "event", "data": {"event": "INCOMING", "timeout": 20000}},
        {"id": "answer", "type": "command", "data": {"command": "Answer"}},
        {"id": "held", "type": "event", "data": {"event": "HELD", "timeout": 15000}},
        {"id": "retrieved", "type": "event", "data": {"event": "RETRIEVED", "timeout": 15000}},
        {"id": "gone", "type": "event", "data": {"event": "DISCONNECTED", "timeout": 15000}}],
        "edges": _edges("phone", "in", "answer", "held", "retrieved", "gone")}


def _transfer_flow(sipp_port: int) -> dict:
    return {"nodes": [
        {"id": "phone", "type": "sipInstance",
         "data": {"label": "Phone 100", "dn": "100", "register": False, "codecs": ["PCMU"]}},
        {"id": "call", "type": "command",
         "data": {"command": "MakeCall", "targetUri": f"sip:sipp@127.0.0.1:{sipp_port}",
                  "timeout": 15000}},
        {"id": "transfer", "type": "command",
         "data": {"command": "BlindTransfer", "targetUser": "300",
                  "targetHost": "127.0.0.1:5999", "timeout": 15000}}],
        "edges": _edges("phone", "call", "transfer")}


def _states(report: Path) -> dict[str, str]:
    return {n["id"]: n["state"] for n in json.loads(report.read_text())["nodes"]}


@pytest_twisted.ensureDeferred
async def test_sipp_holds_and_retrieves_a_flows_call(tmp_path: Path) -> None:
    flow = tmp_path / "held.json"
    flow.write_text(json.dumps(_held_flow()))
    report = tmp_path / "report.json"
    port = await system_chosen_udp_port()
    out, err = io.StringIO(), io.StringIO()
    run = run_cli(["run", str(flow), "--base-port", str(port), "--max-retries", "0",
                   "--report", str(report)], reactor=reactor, stdout=out, stderr=err)
    try:
        sipp = await run_sipp(["-sf", str(SCENARIOS / "hold_retrieve.xml"),
                               f"127.0.0.1:{port}", "-m", "1", "-s", "200"],
                              tmp_path / "sipp", timeout=25)
    finally:
        status = await run
    assert sipp.exit_code == 0 and sipp.successful == 1, sipp.describe()
    assert status == EXIT_OK, out.getvalue() + err.getvalue()
    assert _states(report) == dict.fromkeys(("in", "answer", "held", "retrieved", "gone"),
                                            "completed")
    trace = (tmp_path / "sipp" / "messages.log").read_text(errors="replace")
    assert trace.count("a=recvonly") >= 1  # what SIPp checked, visible in its own trace


@pytest_twisted.ensureDeferred
async def test_a_flows_blind_transfer_refers_sipp(tmp_path: Path) -> None:
    sipp, sipp_port = await start_sipp_server(
        ["-sf", str(SCENARIOS / "refer_answer.xml"), "-m", "1"], tmp_path / "sipp", timeout=25)
    try:
        flow = tmp_path / "transfer.json"
        flow.write_text(json.dumps(_transfer_flow(sipp_port)))
        report = tmp_path / "report.json"
        out, err = io.StringIO(), io.StringIO()
        status = await run_cli(["run", str(flow), "--base-port", "0", "--max-retries", "0",
                                "--report", str(report)], reactor=reactor, stdout=out,
                               stderr=err)
        result = await sipp.wait()
    finally:
        await kill_leftovers()
    assert result.exit_code == 0 and result.successful == 1, result.describe()
    assert status == EXIT_OK, out.getvalue() + err.getvalue()
    assert _states(report) == {"call": "completed", "transfer": "completed"}
    trace = (tmp_path / "sipp" / "messages.log").read_text(errors="replace")
    assert "Refer-To: <sip:300@127.0.0.1:5999>" in trace
    assert "Referred-By: <sip:100@" in trace
