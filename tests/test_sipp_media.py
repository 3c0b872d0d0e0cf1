"""Media against a peer nobody here wrote: SIPp plays its own RTP recordings into a flow.

Debian's sip-tester ships pcaps of G.711 A-law speech and of RFC 2833/4733 digits; a SIPp
XML scenario plays them into the call with ``play_pcap_audio``, to the media address of our
SDP. The flow (INCOMING, Answer, DTMFReceived, Release) must see the digit and count the
audio in its RTP statistics.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor

from sipp_helper import SCENARIOS, requires_sipp, run_sipp, system_chosen_udp_port
from twsip.__main__ import EXIT_OK, run_cli

PCAPS = Path("/usr/share/sip-tester")


def _flow(digit: str) -> dict:
    return {"nodes": [
        {"id": "ivr", "type": "sipInstance",
         "data": {"label": "IVR", "dn": "200", "register": False, "codecs": ["PCMA"]}},
        {"id": "in", "type": "event", "data": {"event": "INCOMING", "timeout": 20000}},
        {"id": "answer", "type": "command", "data": {"command": "Answer"}},
        {"id": "digit", "type": "event",
         "data": {"event": "DTMFReceived", "expectedDigit": digit, "timeout": 15000}},
        {"id": "bye", "type": "command", "data": {"command": "Release"}}],
        "edges": [{"id": "a", "source": "ivr", "target": "in"},
                  {"id": "b", "source": "in", "target": "answer"},
                  {"id": "c", "source": "answer", "target": "digit"},
                  {"id": "d", "source": "digit", "target": "bye"}]}


@requires_sipp
@pytest_twisted.ensureDeferred
async def test_sipp_plays_audio_and_a_digit_into_a_flow(tmp_path: Path) -> None:
    assert (PCAPS / "dtmf_2833_1.pcap").exists() and (PCAPS / "g711a.pcap").exists()
    flow = tmp_path / "ivr.json"
    flow.write_text(json.dumps(_flow("1")))
    report = tmp_path / "report.json"
    port = await system_chosen_udp_port()
    out, err = io.StringIO(), io.StringIO()
    run = run_cli(["run", str(flow), "--base-port", str(port), "--max-retries", "0",
                   "--report", str(report)], reactor=reactor, stdout=out, stderr=err)
    sipp = await run_sipp(["-sf", str(SCENARIOS / "dtmf_into_flow.xml"), "-mi", "127.0.0.1",
                           f"127.0.0.1:{port}", "-m", "1", "-s", "200"],
                          tmp_path / "sipp", timeout=25)
    status = await run
    assert status == EXIT_OK, out.getvalue() + err.getvalue() + sipp.describe()
    assert sipp.exit_code == 0 and sipp.successful == 1, sipp.describe()
    data = json.loads(report.read_text())
    assert {n["id"]: n["state"] for n in data["nodes"]} == dict.fromkeys(
        ("in", "answer", "digit", "bye"), "completed")
    (media,) = data["media"]
    assert media["digits"] == ["1"]
    assert set(media["payload_types"]) == {8, 101}  # A-law audio and the events
    assert media["received_packets"] >= 20 and media["lost"] == 0
