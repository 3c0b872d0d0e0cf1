"""``python -m twsip run`` for testers: several flows in one command, JUnit XML, pcap,
progress on a terminal, --version; bad input refused before anything starts."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from twsip.__main__ import EXIT_FAILED, EXIT_INVALID, EXIT_OK, main, run_cli
from twsip.cli.progress import Progress
from twsip.report.junit import SuiteEntry, junit_xml
from twsip.testing import FakeNetwork

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
BASIC = EXAMPLES / "basic-call.json"


def failing_flow(path: Path) -> Path:
    """100 calls 200, which refuses: the MakeCall fails, the rest never runs."""
    instances = [{"id": "A", "type": "sipInstance", "data": {"dn": "100", "register": False}},
                 {"id": "B", "type": "sipInstance", "data": {"dn": "200", "register": False}}]
    nodes = [
        {"id": "call", "type": "command",
         "data": {"command": "MakeCall", "sipInstanceId": "A", "targetUri": "200",
                  "label": "Call 200"}},
        {"id": "bye", "type": "command",
         "data": {"command": "Release", "sipInstanceId": "A", "label": "Hang up"}},
        {"id": "in", "type": "event", "data": {"event": "INCOMING", "sipInstanceId": "B"}},
        {"id": "busy", "type": "command", "data": {"command": "Release",
                                                   "sipInstanceId": "B"}}]
    edges = [{"id": f"{s}-{t}", "source": s, "target": t}
             for s, t in (("A", "call"), ("call", "bye"), ("B", "in"), ("in", "busy"))]
    path.write_text(json.dumps({"nodes": instances + nodes, "edges": edges}))
    return path


def run(network: FakeNetwork, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = network.run(run_cli(["run", *args], reactor=network, stdout=out, stderr=err))
    return code, out.getvalue(), err.getvalue()


# -- several flows ----------------------------------------------------------------------------

def test_a_suite_of_two_flows_writes_junit_reports_and_ladders(tmp_path: Path) -> None:
    bad = failing_flow(tmp_path / "refused.json")
    junit, reports, ladders = tmp_path / "suite.xml", tmp_path / "reports", tmp_path / "lad"
    code, out, err = run(FakeNetwork(), str(BASIC), str(bad), "-q", "--junit", str(junit),
                         "--report", str(reports), "--ladder", str(ladders))
    assert code == EXIT_FAILED, err
    tail = out.rsplit("\n\n", 1)[1].splitlines()
    assert tail[0].startswith(f"PASS    {BASIC}: completed in ")
    assert tail[1].startswith(f"FAIL    {bad}: failed in ")
    assert tail[2] == "Total: 2 flow(s): 1 passed, 1 failed, 0 invalid"
    assert sorted(os.listdir(reports)) == ["basic-call.json", "refused.json"]
    assert sorted(os.listdir(ladders)) == ["basic-call.html", "refused.html"]

    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    assert root.get("tests") == str(len(root.findall("testsuite/testcase")))
    assert (root.get("failures"), root.get("errors")) == ("1", "0")
    first, second = root.findall("testsuite")
    assert first.get("name") == str(BASIC) and first.get("failures") == "0"
    assert first.get("timestamp") and float(first.get("time")) >= 0
    cases = {c.get("name"): c for c in second.findall("testcase")}
    failure = cases["Call 200"].find("failure")
    assert cases["Call 200"].get("classname") == "DN 100"
    assert failure is not None and "486" in failure.get("message")
    assert "INVITE" in failure.text  # the ladder is in the body
    assert cases["Hang up"].find("skipped") is not None
    assert second.get("skipped") == str(len([c for c in cases.values()
                                             if c.find("skipped") is not None]))


def test_a_node_that_fails_into_its_failure_branch_is_not_a_junit_failure(
        tmp_path: Path) -> None:
    """examples/busy.json is drawn for a 486: its MakeCall fails and its failure branch
    runs; the flow completes, so CI must not turn red for it."""
    junit = tmp_path / "busy.xml"
    code, _, err = run(FakeNetwork(), str(BASIC.parent / "busy.json"), "-q",
                       "--junit", str(junit))
    assert code == EXIT_OK, err
    root = ET.parse(junit).getroot()
    assert (root.get("failures"), root.get("errors")) == ("0", "0")
    call = next(c for c in root.iter("testcase") if c.get("name") == "Call 200")
    assert call.find("failure") is None
    out = call.find("system-out")
    assert out is not None and "failure branch ran" in out.text and "486" in out.text


def test_folders_run_their_json_in_name_order_and_the_worst_status_wins(
        tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    shutil.copy(BASIC, suite / "b.json")
    shutil.copy(BASIC, suite / "a.json")
    (suite / "notes.txt").write_text("not a flow")
    (tmp_path / "broken.json").write_text("[]")
    code, out, err = run(FakeNetwork(), str(suite), str(tmp_path / "broken.json"), "-q")
    assert code == EXIT_INVALID
    assert "must hold a JSON object" in err
    order = [line.split()[1] for line in out.splitlines() if line.startswith("=== ")]
    assert order == [str(suite / "a.json"), str(suite / "b.json")]
    assert "Total: 3 flow(s): 2 passed, 0 failed, 1 invalid" in out


def test_a_single_flow_keeps_its_output_and_file_options(tmp_path: Path) -> None:
    report = tmp_path / "one.json"
    code, out, _ = run(FakeNetwork(), str(BASIC), "-q", "--report", str(report))
    assert code == EXIT_OK and "Total:" not in out and "===" not in out
    assert json.loads(report.read_text())["outcome"] == "completed"


@pytest.mark.parametrize("args, message", [
    (["--pcap", "/nonexistent/x.pcap"], "--pcap /nonexistent/x.pcap: cannot be written "
                                         "(no folder /nonexistent)"),
    (["--junit", "/nonexistent/x.xml"], "--junit /nonexistent/x.xml: cannot be written"),
    (["--record", "/nonexistent"], "--record /nonexistent: not a folder"),
])
def test_unwritable_outputs_are_refused_before_anything_starts(
        capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    assert main(["run", str(BASIC), *args]) == EXIT_INVALID
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_report_must_be_a_folder_for_several_flows(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path) -> None:
    existing = tmp_path / "r.json"
    existing.write_text("{}")
    assert main(["run", str(BASIC), str(BASIC), "--report", str(existing)]) == EXIT_INVALID
    assert "with several flows this is a folder" in capsys.readouterr().err


def test_an_empty_folder_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["run", str(tmp_path)]) == EXIT_INVALID
    assert "a folder without any *.json flow file" in capsys.readouterr().err


# -- JUnit on its own ---------------------------------------------------------------------------

def test_junit_of_an_invalid_flow_is_an_error_and_control_characters_are_kept_out() -> None:
    root = ET.fromstring(junit_xml([SuiteEntry("x.json", error="bad \x00 byte")]))
    error = root.find("testsuite/testcase/error")
    assert error is not None and error.get("message") == "bad \ufffd byte"
    assert (root.get("tests"), root.get("errors")) == ("1", "1")


# -- pcap, read back by dpkt ---------------------------------------------------------------------

def test_run_pcap_holds_each_message_once_with_timestamps(tmp_path: Path) -> None:
    dpkt = pytest.importorskip("dpkt")
    path = tmp_path / "run.pcap"
    code, out, _ = run(FakeNetwork(), str(BASIC), "-q", "--pcap", str(path))
    assert code == EXIT_OK and f"pcap written to {path}" in out
    with open(path, "rb") as f:
        packets = [(ts, dpkt.ethernet.Ethernet(buf).data) for ts, buf in dpkt.pcap.Reader(f)]
    lines = [ip.data.data.split(b"\r\n", 1)[0].decode() for _, ip in packets]
    assert [line.split(" ")[0] if not line.startswith("SIP") else line for line in lines] == [
        "INVITE", "SIP/2.0 100 Trying", "SIP/2.0 180 Ringing", "SIP/2.0 200 OK", "ACK",
        "BYE", "SIP/2.0 200 OK"]
    times = [ts for ts, _ in packets]
    assert times == sorted(times)
    invite = packets[0][1]
    assert (dpkt.utils.inet_to_str(invite.src), dpkt.utils.inet_to_str(invite.dst)) == (
        "127.0.0.1", "127.0.0.1")
    assert invite.data.sport != invite.data.dport


# -- progress and --version ---------------------------------------------------------------------

class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_and_only_for_long_runs() -> None:
    from twsip.flow.events import NodeStateChanged
    now = [0.0]
    tty, pipe = Terminal(), io.StringIO()
    shown = Progress(tty, "f.json", 4, lambda: now[0])
    hidden = Progress(pipe, "f.json", 4, lambda: now[0])
    done = NodeStateChanged(0, 0, "n1", "Call", "MakeCall", "command", "A", "100",
                            "completed")
    for progress in (shown, hidden):
        progress.event(done)
    assert tty.getvalue() == ""  # not long yet
    now[0] = 2.0
    for progress in (shown, hidden):
        progress.event(done)
        progress.clear()
    assert tty.getvalue() == "\r\x1b[Kf.json: 1/4 nodes done\r\x1b[K"
    assert pipe.getvalue() == ""


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import twsip
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"twsip {twsip.__version__}"


def test_python_m_twsip_version() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "twsip", "--version"], capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 0 and done.stdout.startswith("twsip ")
