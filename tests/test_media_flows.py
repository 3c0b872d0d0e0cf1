"""Media nodes in whole flows, in memory: PlayAudio heard at the far end, DTMF under loss,
DTMF by SIP INFO both ways, files refused before the start, and nothing left behind."""

from __future__ import annotations

import json
import math
import struct
import wave
from pathlib import Path
from typing import Any

import pytest

from twsip.flow.engine import Engine
from twsip.flow.model import ScenarioError, load_scenario, parse_scenario
from twsip.flow.registry import check_runnable
from twsip.flow.result import COMPLETED, ScenarioResult
from twsip.manager import InstanceManager
from twsip.sip.message import Request, Response, parse
from twsip.testing import Endpoint, FakeNetwork, Impairment

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def inst(nid: str, dn: str) -> dict[str, Any]:
    return {"id": nid, "type": "sipInstance", "data": {"dn": dn, "register": False}}


def node(nid: str, kind: str, name: str, owner: str, **data: Any) -> dict[str, Any]:
    return {"id": nid, "type": kind, "data": {kind: name, "sipInstanceId": owner, **data}}


def chain(*ids: str) -> list[dict[str, str]]:
    return [{"id": f"{a}-{b}", "source": a, "target": b} for a, b in zip(ids, ids[1:])]


def run(network: FakeNetwork, graph: Any, **manager_kw: Any) -> ScenarioResult:
    manager = InstanceManager(reactor=network, **manager_kw)
    return network.run(Engine(manager, reactor=network).run(graph))


def write_tone(path: Path, freq: float, seconds: float, rate: int = 44100,
               channels: int = 2) -> None:
    """A tone as a CD-style WAV, so PlayAudio has to convert rate and channels."""
    frames = bytearray()
    for n in range(int(rate * seconds)):
        sample = struct.pack("<h", int(12000 * math.sin(2 * math.pi * freq * n / rate)))
        frames += sample * channels
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(frames))


def dominant_frequency(samples: list[int], rate: int = 8000) -> float:
    crossings = sum(1 for a, b in zip(samples, samples[1:]) if a < 0 <= b)
    return crossings * rate / len(samples)


def play_flow(tmp_path: Path, seconds: float) -> Any:
    write_tone(tmp_path / "tone.wav", 440, seconds)
    doc = {"nodes": [
        inst("a", "100"), inst("b", "200"),
        node("call", "command", "MakeCall", "a", targetUri="200"),
        node("play", "command", "PlayAudio", "a", filePath="tone.wav"),
        node("bye", "command", "Release", "a"),
        node("in", "event", "INCOMING", "b"), node("answer", "command", "Answer", "b"),
        node("gone", "event", "DISCONNECTED", "b")],
        "edges": chain("a", "call", "play", "bye") + chain("b", "in", "answer", "gone")}
    (tmp_path / "play.json").write_text(json.dumps(doc))
    return load_scenario(tmp_path / "play.json")


def test_play_audio_is_heard_at_the_far_end(network: FakeNetwork, tmp_path: Path) -> None:
    graph = play_flow(tmp_path, 0.6)  # the WAV sits beside the flow file, named relatively
    record = tmp_path / "rec"
    record.mkdir()
    result = run(network, graph, record_dir=str(record))
    assert result.outcome == COMPLETED, result.reason
    (heard,) = record.glob("200-*.wav")
    with wave.open(str(heard)) as wav:
        assert (wav.getframerate(), wav.getnchannels()) == (8000, 1)
        data = wav.readframes(wav.getnframes())
    samples = list(struct.unpack(f"<{len(data) // 2}h", data))
    audible = [s for s in samples if abs(s) > 500]
    assert 0.55 <= len(samples) / 8000 <= 0.7  # 0.6 s sent, in 20 ms packets
    assert len(audible) > 0.5 * len(samples)
    assert abs(dominant_frequency(samples) - 440) < 10
    by_dn = {m.dn: m for m in result.media}
    assert by_dn["100"].sent_packets == 30 and by_dn["200"].received_packets == 30
    assert by_dn["200"].lost == 0 and by_dn["200"].payload_types == (0,)


def test_dtmf_with_20_percent_loss_each_way(network: FakeNetwork) -> None:
    network.impair_all(Impairment(drop=0.2, seed=7))
    result = run(network, load_scenario(EXAMPLES / "dtmf.json"))
    assert result.outcome == COMPLETED, result.reason
    by_dn = {m.dn: m for m in result.media}
    assert by_dn["200"].digits == ("4", "#")  # each once, in order, whatever was lost
    assert sum(i.dropped for i in network.impairments) > 0


@pytest.mark.parametrize("seed", range(5))
def test_dtmf_survives_losing_the_first_packets(network: FakeNetwork, seed: int) -> None:
    network.impair_all(Impairment(drop=0.35, seed=seed))
    result = run(network, load_scenario(EXAMPLES / "dtmf.json"))
    assert result.outcome == COMPLETED, result.reason


# -- SIP INFO: a peer whose SDP has no telephone-event --------------------------------------

class InfoPeer(Endpoint):
    """A raw SIP phone without telephone-event: ACKs the 200, answers INFO and BYE with 200,
    keeps the digits INFO carried, and can send INFO digits itself once the call is up."""

    def __init__(self, network: FakeNetwork) -> None:
        super().__init__()
        self.network = network
        self.infos: list[str] = []
        self.dialog: tuple[Request, Response] | None = None
        self.cseq = 1

    def invite(self, target: tuple[str, int]) -> None:
        host, port = self.address
        sdp = (f"v=0\r\no=raw 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
               f"m=audio {port + 1000} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n").encode()
        self.request = Request("INVITE", f"sip:200@{target[0]}:{target[1]}", {
            "via": [f"SIP/2.0/UDP {host}:{port};branch=z9hG4bKinfo1"],
            "max-forwards": ["70"], "from": [f"<sip:raw@{host}:{port}>;tag=raw"],
            "to": [f"<sip:200@{target[0]}:{target[1]}>"], "call-id": ["info@raw"],
            "cseq": ["1 INVITE"], "contact": [f"<sip:raw@{host}:{port}>"],
            "content-type": ["application/sdp"]}, sdp)
        self.target = target
        self.send(self.request.to_bytes(), target)

    def in_dialog(self, method: str, branch: str, cseq: int, body: bytes = b"",
                  content_type: str | None = None) -> Request:
        assert self.dialog is not None
        invite, ok = self.dialog
        headers = {"via": [f"SIP/2.0/UDP {self.address[0]}:{self.address[1]};branch={branch}"],
                   "max-forwards": ["70"], "from": [invite.get("from")], "to": [ok.get("to")],
                   "call-id": [invite.call_id], "cseq": [f"{cseq} {method}"]}
        if content_type:
            headers["content-type"] = [content_type]
        return Request(method, ok.contact[0].uri, headers, body)

    def send_info(self, digit: str) -> None:
        self.cseq += 1
        info = self.in_dialog("INFO", f"z9hG4bKi{self.cseq}", self.cseq,
                              f"Signal={digit}\r\nDuration=160\r\n".encode(),
                              "application/dtmf-relay")
        self.send(info.to_bytes(), self.target)

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:  # noqa: N802
        message = parse(data)
        if isinstance(message, Response):
            if message.status == 200 and message.cseq.method == "INVITE":
                self.dialog = (self.request, message)
                ack = self.in_dialog("ACK", "z9hG4bKinfoack", 1)
                self.send(ack.to_bytes(), addr)
            return
        if message.method in ("INFO", "BYE"):
            if message.method == "INFO":
                self.infos.append(message.body.decode())
            self.send(message.response(200).to_bytes(), addr)


def _answering(*more: dict[str, Any]) -> str:
    names = [n["id"] for n in more]
    return json.dumps({"nodes": [inst("b", "200"),
                                 node("in", "event", "INCOMING", "b"),
                                 node("answer", "command", "Answer", "b"), *more],
                       "edges": chain("b", "in", "answer", *names)})


def test_send_dtmf_falls_back_to_sip_info(network: FakeNetwork) -> None:
    graph = parse_scenario(_answering(
        node("keys", "command", "SendDTMF", "b", digits="7*", intervalMs=50),
        node("bye", "command", "Release", "b")))
    manager = InstanceManager(reactor=network)
    done = Engine(manager, reactor=network).run(graph)
    network.pump()
    peer = InfoPeer(network)
    network.attach(peer)
    peer.invite(manager.by_dn("200").ua.address)
    result = network.run(done)
    assert result.outcome == COMPLETED, result.reason
    assert [body.splitlines()[0] for body in peer.infos] == ["Signal=7", "Signal=*"]
    assert "as SIP INFO" in result.nodes["keys"].detail


def test_dtmf_received_from_sip_info(network: FakeNetwork) -> None:
    graph = parse_scenario(_answering(
        node("any", "event", "DTMFReceived", "b"),
        node("five", "event", "DTMFReceived", "b", expectedDigit="5"),
        node("bye", "command", "Release", "b")))
    manager = InstanceManager(reactor=network)
    done = Engine(manager, reactor=network).run(graph)
    network.pump()
    peer = InfoPeer(network)
    network.attach(peer)
    peer.invite(manager.by_dn("200").ua.address)
    network.advance(0.1)
    for digit in "3945":  # 3 is taken by "any"; 9 and 4 are skipped; 5 completes
        peer.send_info(digit)
    result = network.run(done)
    assert result.outcome == COMPLETED, result.reason
    assert result.nodes["any"].detail == "received 3"
    assert result.nodes["five"].detail == "received 5"
    skipped = [e.text for e in result.events if "skipped" in getattr(e, "text", "")]
    assert len(skipped) == 2 and "received 9" in skipped[0]
    assert result.media[0].digits == ("3", "9", "4", "5")


# -- refused before the start ----------------------------------------------------------------

@pytest.mark.parametrize("content, reason", [
    (None, "does not exist"), (b"RIFF junk", "not a WAV"), (b"", "not a WAV")])
def test_a_file_that_cannot_play_is_refused_naming_node_and_path(
        tmp_path: Path, content: bytes | None, reason: str) -> None:
    if content is not None:
        (tmp_path / "prompt.wav").write_bytes(content)
    doc = {"nodes": [inst("a", "100"), node("p", "command", "PlayAudio", "a",
                                            filePath="prompt.wav", label="Menu")],
           "edges": chain("a", "p")}
    (tmp_path / "f.json").write_text(json.dumps(doc))
    with pytest.raises(ScenarioError) as err:
        check_runnable(load_scenario(tmp_path / "f.json"))
    assert (err.value.node, err.value.field) == ("p", "data.filePath")
    assert str(tmp_path / "prompt.wav") in str(err.value)


@pytest.mark.parametrize("field, value", [("digits", "12x"), ("digits", ""),
                                          ("digits", "１"), ("expectedDigit", "12"),
                                          ("expectedDigit", "e")])
def test_bad_digits_are_refused_up_front(field: str, value: str) -> None:
    name, kind = ("SendDTMF", "command") if field == "digits" else ("DTMFReceived", "event")
    doc = {"nodes": [inst("a", "100"), node("d", kind, name, "a", **{field: value})],
           "edges": chain("a", "d")}
    with pytest.raises(ScenarioError) as err:
        check_runnable(parse_scenario(json.dumps(doc)))
    assert (err.value.node, err.value.field) == ("d", f"data.{field}")
