"""Ladders (text and HTML) and the JSON report, from made-up results and from a real run."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from twsip.flow.engine import Engine
from twsip.flow.result import NodeRecord, ScenarioResult
from twsip.flow.events import InstanceInfo, SipMessage
from twsip.report.ladder import html_ladder, ladder_arrows, text_ladder
from twsip.manager import InstanceManager
from twsip.report.jsonreport import result_to_dict, summary_text
from twsip.flow.model import load_scenario
from twsip.testing import FakeNetwork

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
A = ("127.0.0.1", 5060)
B = ("127.0.0.1", 5062)
SIPP = ("127.0.0.1", 5099)


def message(t: float, direction: str, at: tuple, peer: tuple, summary: str,
            call_id: str = "c1@x", text: str | None = None) -> SipMessage:
    dn = {A: "100", B: "200"}[at]
    status = int(summary.split()[0]) if summary[0].isdigit() else None
    return SipMessage(
        time=1000 + t, elapsed=t, direction=direction, instance_id=f"i{dn}", dn=dn,
        local=at, peer=peer, peer_dn={A: "100", B: "200"}.get(peer), summary=summary,
        method="INVITE", status=status, call_id=call_id, cseq="1 INVITE",
        text=text or f"{summary} ...\r\nCall-ID: {call_id}\r\n\r\n")


def result(messages: list[SipMessage], **kw) -> ScenarioResult:
    instances = [InstanceInfo("i100", "Phone 100", "100", *A, "#3b82f6"),
                 InstanceInfo("i200", "Phone 200", "200", *B, kw.pop("color", "#14b8a6"))]
    nodes = {"n1": NodeRecord("n1", "Call 200", "MakeCall", "command", "i100", "100",
                              "completed", 0.0, 0.01, "answered (200 OK), ACK sent"),
             "n2": NodeRecord("n2", "Wait", "TIMEOUT", "event", "i200", "200")}
    return ScenarioResult("completed", "1 of 2 node(s) completed", None, None, 1000.0,
                          1000.5, instances, nodes, messages, [], kw.pop("calls", {}))


def a_call() -> list[SipMessage]:
    return [message(0.001, "out", A, B, "INVITE"), message(0.002, "in", B, A, "INVITE"),
            message(0.003, "out", B, A, "180 Ringing"),
            message(0.004, "in", A, B, "180 Ringing")]


# -- arrows ------------------------------------------------------------------------------

def test_a_message_between_instances_is_one_arrow_with_both_times() -> None:
    lanes, arrows = ladder_arrows(result(a_call()))
    assert [lane.name for lane in lanes] == ["100", "200"]
    assert [(a.source, a.target, a.label, a.elapsed, a.received) for a in arrows] == [
        (0, 1, "INVITE", 0.001, 0.002), (1, 0, "180 Ringing", 0.003, 0.004)]


def test_an_outside_peer_gets_a_lane_of_its_own() -> None:
    lanes, arrows = ladder_arrows(result([
        message(0.1, "in", A, SIPP, "INVITE"), message(0.2, "out", A, SIPP, "100 Trying")]))
    assert [(lane.name, lane.external) for lane in lanes] == [
        ("100", False), ("200", False), ("127.0.0.1:5099", True)]
    assert [(a.source, a.target, a.received) for a in arrows] == [(2, 0, 0.1), (0, 2, None)]


def test_a_message_lost_on_the_way_is_still_drawn() -> None:
    _, arrows = ladder_arrows(result([message(0.1, "out", A, B, "INVITE")]))
    assert [(a.label, a.received) for a in arrows] == [("INVITE", None)]


# -- text ----------------------------------------------------------------------------------

def test_text_ladder() -> None:
    text = text_ladder(result(a_call()))
    assert text == "\n".join([
        "                    100                   200",
        "              127.0.0.1:5060        127.0.0.1:5062",
        "                     |                     |",
        "   0.001             |------ INVITE ------>|",
        "   0.003             |<--- 180 Ringing ----|",
        "                     |                     |",
    ])


def test_text_ladder_names_calls_when_there_are_several() -> None:
    messages = a_call() + [message(0.3, "out", A, B, "INVITE", call_id="c2@x")]
    lines = text_ladder(result(messages, calls={"c1@x": "call-1"})).splitlines()
    assert lines[3].endswith("call-1") and lines[5].endswith("c2")


def test_text_ladder_message_to_itself_keeps_the_lanes_in_place() -> None:
    lines = text_ladder(result([message(0.1, "out", A, A, "OPTIONS")])).splitlines()
    assert "<- OPTIONS (to itself)" in lines[3]
    assert lines[3].index("|") == lines[2].index("|")


# -- HTML ----------------------------------------------------------------------------------

class StrictParser(HTMLParser):
    """Fails on an end tag that closes anything but the innermost open element."""

    VOID = {"meta", "br", "hr", "img", "input", "link"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.titles: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)
        self._in_title = tag == "title"
        if self._in_title:
            self.titles.append("")

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        pass  # <line .../>: opens and closes at once

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.titles[-1] += data


def parse_html(page: str) -> ET.Element:
    assert page.startswith("<!DOCTYPE html>\n")
    parser = StrictParser()
    parser.feed(page)
    parser.close()
    assert parser.stack == []
    return ET.fromstring(page.split("\n", 1)[1])  # well-formed as XML too


def lf(text: str) -> str:
    return text.replace("\r\n", "\n")


def msg_groups(root: ET.Element) -> list[ET.Element]:
    return [g for g in root.iter("g") if g.get("class") == "msg"]


def test_html_ladder_is_well_formed_and_carries_each_message() -> None:
    hostile = "INVITE sip:x SIP/2.0\r\nSubject: </pre><script>alert(1)</script> & \x01\r\n"
    messages = a_call() + [message(0.2, "out", A, B, "INVITE", "c2@x", text=hostile)]
    page = html_ladder(result(messages))
    root = parse_html(page)
    groups = msg_groups(root)
    assert [g.get("data-index") for g in groups] == ["0", "1", "2"]
    texts = [g.find("title").text for g in groups]
    # XML and HTML parsers read CRLF as LF; the JSON report keeps the exact text
    assert texts[:2] == [lf(messages[0].text), lf(messages[2].text)]
    assert texts[2] == lf(hostile.replace("\x01", "\ufffd"))
    pres = {p.get("id"): p.text for p in root.iter("pre")}
    assert [pres[f"text-{k}"] for k in range(3)] == texts
    assert "<script>alert" not in page
    assert len(root.findall(".//script")) == 1


def test_html_ladder_rejects_odd_colors() -> None:
    page = html_ladder(result(a_call(), color='red" onload="x'))
    parse_html(page)
    assert "onload" not in page


def test_html_ladder_and_report_of_a_real_run(network: FakeNetwork, tmp_path: Path) -> None:
    engine = Engine(InstanceManager(reactor=network), reactor=network)
    run = network.run(engine.run(load_scenario(EXAMPLES / "basic-call.json")))
    page = html_ladder(run)
    root = parse_html(page)
    groups = msg_groups(root)
    _, arrows = ladder_arrows(run)
    assert len(groups) == len(arrows) == 7
    titles = [g.find("title").text for g in groups]
    sent = [lf(m.text) for m in run.messages if m.direction == "out"]
    assert titles == sent  # every message of the run, in full
    for m in run.messages:  # and the received copies carry the same messages
        assert m.text.split("\r\n", 1)[0] in page
    lowered = page.lower()
    assert "http:" not in lowered and "https:" not in lowered  # nothing to fetch
    assert " src=" not in lowered and " href=" not in lowered

    report = result_to_dict(run, flow="basic-call.json")
    json.dumps(report)
    assert report["outcome"] == "completed" and report["flow"] == "basic-call.json"
    assert [n["state"] for n in report["nodes"]] == ["completed"] * 6
    assert all(n["started"] is not None and n["ended"] >= n["started"]
               for n in report["nodes"])
    assert len(report["messages"]) == 14 and len(report["ladder"]) == 7
    assert report["log"][0].strip().split("  ")[1].startswith("scenario started")

    summary = summary_text(run)
    assert summary.startswith("Result: COMPLETED in ")
    assert "nodes: 6 completed; SIP messages: 7 on the wire, 14 captured" in summary


# -- a three-party transfer ------------------------------------------------------------------

CHAR_WIDTH = 7.3  # px per character of the ladder's 12 px monospace labels (at most)


def _lane_xs(root: ET.Element) -> list[float]:
    return [float(g.find("line").get("x1")) for g in root.iter("g") if g.get("class") == "lane"]


def _label_span(text: ET.Element) -> tuple[float, float]:
    """The horizontal extent a label's characters take, from its x and anchor."""
    x, width = float(text.get("x")), len(text.text or "") * CHAR_WIDTH
    anchor = text.get("text-anchor")
    if anchor == "middle":
        return x - width / 2, x + width / 2
    return (x, x + width) if anchor == "start" else (x - width, x)


@pytest.mark.parametrize("flow", ["attended-transfer", "blind-transfer"])
def test_transfer_ladder_three_lanes_each_message_once_no_label_across_a_lane(
        network: FakeNetwork, flow: str) -> None:
    engine = Engine(InstanceManager(reactor=network), reactor=network)
    run = network.run(engine.run(load_scenario(EXAMPLES / f"{flow}.json")))
    assert run.outcome == "completed", run.reason
    lanes, arrows = ladder_arrows(run)
    assert len(lanes) == 3 and not any(lane.external for lane in lanes)
    sent = [m for m in run.messages if m.direction == "out"]
    received = [m for m in run.messages if m.direction == "in"]
    assert len(arrows) == len(sent) == len(received)  # nothing lost in memory
    on_wire = [dg for dg in network.log if dg.data[:1].isalpha()]  # SIP, not RTP
    assert len(arrows) == len(on_wire)  # every datagram the network carried is drawn
    assert [a.message for a in arrows] == sent  # each drawn once, at its sending
    assert all(a.received is not None and a.received >= a.elapsed for a in arrows)
    labels = {a.label for a in arrows}
    assert {"REFER", "202 Accepted", "NOTIFY", "BYE"} <= labels
    # The transferee's new INVITE (with Replaces in an attended transfer) names the
    # transferor in Referred-By and is drawn between two other lanes than the REFER.
    referred = [a for a in arrows if a.label == "INVITE" and "Referred-By:" in a.message.text]
    refer = next(a for a in arrows if a.label == "REFER")
    assert len(referred) == 1 and referred[0].source == refer.target
    assert referred[0].target not in (refer.source, refer.target)
    assert ("Replaces:" in referred[0].message.text) == (flow == "attended-transfer")

    root = parse_html(html_ladder(run))
    xs = _lane_xs(root)
    assert len(xs) == 3
    groups = msg_groups(root)
    assert len(groups) == len(arrows)
    for group in groups:
        label = next(t for t in group.iter("text") if t.get("class") == "label")
        lo, hi = _label_span(label)
        crossed = [x for x in xs if lo - 2 < x < hi + 2]
        assert crossed == [], (label.text, lo, hi, xs)


def test_a_long_label_is_cut_to_its_gap_and_kept_whole_in_the_tooltip() -> None:
    reason = "500 Server Internal Error " + "x" * 120
    run = result([message(0.001, "out", A, B, "INVITE"), message(0.002, "in", B, A, "INVITE"),
                  message(0.003, "out", B, A, reason), message(0.004, "in", A, B, reason)])
    root = parse_html(html_ladder(run))
    xs = _lane_xs(root)
    group = msg_groups(root)[1]
    label = next(t for t in group.iter("text") if t.get("class") == "label")
    assert label.text.endswith("\u2026") and label.text[:-1] in reason
    lo, hi = _label_span(label)
    assert xs[0] < lo and hi < xs[1]
    assert reason in group.find("title").text
