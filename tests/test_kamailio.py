"""Against a real registrar and proxy: Kamailio on loopback (tests/kamailio/registrar.cfg).

Two instances register with digest (401 answered), one calls the other through the proxy
(407 answered, Record-Route honoured for ACK and BYE), and at the end Kamailio's location
has no binding left; a wrong password fails the run before any chain starts, exit 1, one
line naming the instance, the PBX and the status.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import pytest_twisted
from twisted.internet import reactor

from kamailio_helper import PASSWORD, KamailioProcess, requires_kamailio, start_kamailio
from twsip.__main__ import run_cli
from twsip.flow.engine import Engine
from twsip.flow.model import parse_scenario
from twsip.flow.result import ScenarioResult
from twsip.manager import InstanceManager
from twsip.sip.instance import SipInstance

pytestmark = requires_kamailio


@pytest_twisted.async_yield_fixture(params=["MD5", "SHA-256"])
async def kamailio(request: Any, tmp_path: Path) -> AsyncIterator[KamailioProcess]:
    process = await start_kamailio(tmp_path / "kamailio", algorithm=request.param)
    process.algorithm = request.param
    try:
        yield process
    finally:
        await process.stop()


def instance(nid: str, dn: str, port: int) -> dict:
    return {"id": nid, "type": "sipInstance",
            "data": {"dn": dn, "label": nid, "register": True, "pbxHost": "127.0.0.1",
                     "pbxPort": str(port), "registerIntervalSeconds": 60}}


def node(nid: str, kind: str, name: str, on: str, **data: Any) -> dict:
    return {"id": nid, "type": kind, "data": {kind: name, "sipInstanceId": on, **data}}


def edge(a: str, b: str) -> dict:
    return {"id": f"{a}-{b}", "source": a, "target": b, "sourceHandle": "source"}


def call_flow(port: int) -> str:
    """Alice calls DN 200 (through the PBX), Bob answers, Alice hangs up."""
    return json.dumps({
        "nodes": [instance("alice", "100", port), instance("bob", "200", port),
                  node("call", "command", "MakeCall", "alice", targetUri="200"),
                  node("bye", "command", "Release", "alice"),
                  node("in", "event", "INCOMING", "bob"),
                  node("answer", "command", "Answer", "bob"),
                  node("gone", "event", "DISCONNECTED", "bob")],
        "edges": [edge("alice", "call"), edge("call", "bye"), edge("bob", "in"),
                  edge("in", "answer"), edge("answer", "gone")]})


def sent(result: ScenarioResult, dn: str) -> list[str]:
    """What `dn` sent and received, in order: ">INVITE", "<407 Proxy Authentication..."."""
    return [("> " if m.direction == "out" else "< ") + m.summary
            for m in result.messages if m.dn == dn]


async def bound_at(port: int, dn: str) -> int:
    """The status Kamailio gives an OPTIONS to `dn`: 404 when it has no binding for it."""
    probe = SipInstance("999", media=False)
    listening = reactor.listenUDP(0, probe, interface="127.0.0.1")
    try:
        response = await probe.options(f"sip:{dn}@127.0.0.1:{port}")
        return response.status
    finally:
        await probe.cleanup()
        await listening.stopListening()


def assert_challenged_call(result: ScenarioResult, kamailio: KamailioProcess) -> None:
    """The ladder of call_flow through Kamailio, whatever the transport: both register
    (401, then 200), the INVITE is challenged (407, ACK, INVITE again), the call reaches
    the callee, the BYE is challenged too and answered, and the caller unregisters."""
    alice, bob = sent(result, "100"), sent(result, "200")
    assert result.outcome == "completed", (result.reason, alice, bob, kamailio.log[-3000:])
    assert alice[:4] == ["> REGISTER", "< 401 Unauthorized", "> REGISTER", "< 200 OK"]
    assert bob[:4] == ["> REGISTER", "< 401 Unauthorized", "> REGISTER", "< 200 OK"]
    start = alice.index("> INVITE")
    assert alice[start:start + 4] == ["> INVITE", "< 407 Proxy Authentication Required",
                                      "> ACK", "> INVITE"], alice
    assert "> BYE" in alice and "< INVITE" in bob and "< BYE" in bob
    bye_at = alice.index("> BYE")
    assert alice[bye_at:bye_at + 4] == ["> BYE", "< 407 Proxy Authentication Required",
                                        "> BYE", "< 200 OK"], alice
    assert alice[-2:] == ["> REGISTER", "< 200 OK"]  # Expires: 0 at the end


@pytest_twisted.ensureDeferred
async def test_register_and_call_through_kamailio(kamailio: KamailioProcess,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWSIP_PASSWORD", PASSWORD)
    manager = InstanceManager(base_port=0)
    result = await Engine(manager).run(parse_scenario(call_flow(kamailio.port)))
    assert_challenged_call(result, kamailio)
    signed = [m for m in result.messages if m.dn == "100" and m.summary == "REGISTER"][1]
    assert f"algorithm={kamailio.algorithm}" in signed.text and "qop=auth" in signed.text
    invites = [m for m in result.messages if m.dn == "100" and m.summary == "INVITE"]
    assert "Proxy-Authorization: Digest" in invites[1].text
    assert 'response="***"' in invites[1].text and PASSWORD not in invites[1].text
    incoming = next(m for m in result.messages if m.dn == "200" and m.summary == "INVITE")
    assert "Record-Route:" in incoming.text
    byes = [m for m in result.messages if m.dn == "100" and m.summary == "BYE"]
    bye = byes[0]
    assert f"Route: <sip:127.0.0.1:{kamailio.port};lr" in bye.text
    assert "Proxy-Authorization: Digest" in byes[1].text and PASSWORD not in byes[1].text
    assert bye.peer == ("127.0.0.1", kamailio.port)
    assert not manager.instances and not manager.registrations
    assert await bound_at(kamailio.port, "100") == 404
    assert await bound_at(kamailio.port, "200") == 404


@pytest_twisted.ensureDeferred
async def test_wrong_password_fails_before_any_chain(kamailio: KamailioProcess,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.setenv("TWSIP_PASSWORD", PASSWORD)
    monkeypatch.setenv("TWSIP_PASSWORD_100", "not-the-password")
    path = tmp_path / "flow.json"
    path.write_text(call_flow(kamailio.port))
    out, err = io.StringIO(), io.StringIO()
    status = await run_cli(["run", str(path), "--base-port", "0", "--quiet"], stdout=out,
                           stderr=err)
    assert status == 1
    lines = err.getvalue().splitlines()
    assert lines == [f"twsip: {path}: instance 'alice' (DN 100) could not register to "
                     f"127.0.0.1:{kamailio.port}: 401 Unauthorized (credentials refused)"], \
        err.getvalue()
    assert "not-the-password" not in out.getvalue() + err.getvalue()
    assert "MakeCall" not in out.getvalue()
    assert await bound_at(kamailio.port, "200") == 404  # bob registered, then unregistered


@pytest_twisted.ensureDeferred
async def test_a_dn_outside_the_flow_goes_to_the_pbx(kamailio: KamailioProcess,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A registered caller may call any DN: the PBX routes it (here nobody has DN 300, so
    Kamailio answers 404, after the 407 was answered)."""
    monkeypatch.setenv("TWSIP_PASSWORD", PASSWORD)
    text = json.dumps({
        "nodes": [instance("alice", "100", kamailio.port),
                  node("call", "command", "MakeCall", "alice", targetUri="300")],
        "edges": [edge("alice", "call")]})
    result = await Engine(InstanceManager(base_port=0)).run(parse_scenario(text))
    assert result.outcome == "failed"
    assert "call to 300 failed: 404" in result.reason, result.reason
    assert "< 407 Proxy Authentication Required" in sent(result, "100")


@pytest_twisted.ensureDeferred
async def test_registration_refreshed_at_the_interval(kamailio: KamailioProcess,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """registerIntervalSeconds 2: refreshed half-way (credentials sent at once, on the
    nonce Kamailio gave, nc=2), then removed at the end."""
    monkeypatch.setenv("TWSIP_PASSWORD", PASSWORD)
    alice = instance("alice", "100", kamailio.port)
    alice["data"]["registerIntervalSeconds"] = 2
    text = json.dumps({
        "nodes": [alice, node("wait", "event", "TIMEOUT", "alice", timeout=1600)],
        "edges": [edge("alice", "wait")]})
    result = await Engine(InstanceManager(base_port=0)).run(parse_scenario(text))
    assert result.outcome == "completed"
    assert sent(result, "100") == ["> REGISTER", "< 401 Unauthorized", "> REGISTER",
                                   "< 200 OK", "> REGISTER", "< 200 OK", "> REGISTER",
                                   "< 200 OK"]
    registers = [m for m in result.messages if m.summary == "REGISTER"]
    refresh = registers[2]
    assert "nc=00000002" in refresh.text and "Expires: 2" in refresh.text
    assert 0.9 < refresh.time - registers[1].time < 1.5
    assert "Expires: 0" in registers[3].text
    assert await bound_at(kamailio.port, "100") == 404


def over_tcp(flow_text: str) -> str:
    data = json.loads(flow_text)
    for item in data["nodes"]:
        if item["type"] == "sipInstance":
            item["data"]["pbxTransport"] = "TCP"
    return json.dumps(data)


@pytest_twisted.ensureDeferred
async def test_register_and_call_through_kamailio_over_tcp(
        kamailio: KamailioProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """pbxTransport TCP: one connection per instance, REGISTER, INVITE (407), the call
    delivered back over the callee's connection, BYE; no retransmission on the way, and
    every connection closed afterwards."""
    monkeypatch.setenv("TWSIP_PASSWORD", PASSWORD)
    manager = InstanceManager(base_port=0)
    result = await Engine(manager).run(parse_scenario(over_tcp(call_flow(kamailio.port))))
    assert_challenged_call(result, kamailio)
    register = next(m for m in result.messages if m.dn == "100" and m.summary == "REGISTER")
    assert "Via: SIP/2.0/TCP 127.0.0.1:" in register.text
    assert ";transport=tcp>" in register.text
    incoming = next(m for m in result.messages if m.dn == "200" and m.summary == "INVITE")
    assert "Via: SIP/2.0/TCP" in incoming.text and incoming.peer == ("127.0.0.1",
                                                                       kamailio.port)
    assert not manager.instances and not manager.streams
    assert await bound_at(kamailio.port, "100") == 404
    assert await bound_at(kamailio.port, "200") == 404
