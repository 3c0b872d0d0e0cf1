"""register:true in a flow, on the in-memory network with a fake registrar: every
instance registers before any chain starts, unregisters at the end, a refusal fails the
run before any chain with one line naming the instance, the PBX and the status, and the
password shows nowhere."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted

from fake_registrar import FakeRegistrar
from twsip.flow.engine import Engine
from twsip.flow.model import parse_scenario
from twsip.manager import InstanceManager, RegistrationFailed, credentials_for
from twsip.config import SipInstanceConfig
from twsip.report.jsonreport import result_to_dict
from twsip.testing import FakeNetwork


def inst(nid: str, dn: str, **data: Any) -> dict:
    return {"id": nid, "type": "sipInstance",
            "data": {"dn": dn, "register": True, "pbxHost": "127.0.0.1", "pbxPort": "5070",
                     **data}}


def flow(*instances: dict) -> str:
    wait = {"id": "t", "type": "event",
            "data": {"event": "TIMEOUT", "sipInstanceId": "A", "timeout": 500}}
    first = {"id": "A-t", "source": "A", "target": "t", "sourceHandle": "source"}
    return json.dumps({"nodes": [*instances, wait], "edges": [first]})


def start(network: FakeNetwork, mode: str = "ok") -> FakeRegistrar:
    registrar = FakeRegistrar(mode=mode)
    network.attach(registrar, 5070)
    return registrar


def test_instances_register_first_and_unregister_at_the_end(
        network: FakeNetwork, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWSIP_PASSWORD", "secret")
    registrar = start(network)
    manager = InstanceManager(reactor=network)
    graph = parse_scenario(flow(inst("A", "100"), inst("B", "200", authUser="200")))
    result = network.run(Engine(manager, reactor=network).run(graph))
    assert result.outcome == "completed"
    registers = [r for r in registrar.requests]
    assert [(r.to.uri, r.get("expires"), r.get("authorization") is not None)
            for r in registers] == [
        ("sip:100@127.0.0.1", "300", False), ("sip:200@127.0.0.1", "300", False),
        ("sip:100@127.0.0.1", "300", True), ("sip:200@127.0.0.1", "300", True),
        ("sip:100@127.0.0.1", "0", True), ("sip:200@127.0.0.1", "0", True)]
    assert registrar.bindings == {}
    # the REGISTERs are in the ladder, before the TIMEOUT node ran; masked
    texts = [m.text for m in result.messages if m.method == "REGISTER"]
    assert len(texts) == 12
    timeout_started = next(e.time for e in result.events
                           if getattr(e, "node_id", None) == "t")
    assert max(m.time for m in result.messages[:8]) <= timeout_started
    signed = [t for t in texts if "Authorization:" in t]
    assert signed and all('response="***"' in t for t in signed)
    report = json.dumps(result_to_dict(result))
    assert "secret" not in report
    assert not manager.registrations and not manager.instances


def test_refused_registration_fails_before_any_chain(
        network: FakeNetwork, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWSIP_PASSWORD", "wrong")
    monkeypatch.setenv("TWSIP_PASSWORD_200", "secret")  # B's own password is right
    registrar = start(network)
    manager = InstanceManager(reactor=network)
    events: list[Any] = []
    engine = Engine(manager, reactor=network)
    engine.subscribe(events.append)
    graph = parse_scenario(flow(inst("A", "100", label="Alice"), inst("B", "200")))
    with pytest.raises(RegistrationFailed) as info:
        network.run(engine.run(graph))
    assert str(info.value) == ("instance 'A' (DN 100) could not register to "
                               "127.0.0.1:5070: 401 Unauthorized (credentials refused)")
    assert not any(getattr(e, "node_id", None) == "t" and getattr(e, "state", "") == "running"
                   for e in events)
    # B had registered: it was unregistered; nothing is bound any more
    assert registrar.bindings == {}
    assert not manager.instances and not manager.registrations
    network.settle()


def test_silent_pbx_times_out(network: FakeNetwork) -> None:
    start(network, mode="silent")
    manager = InstanceManager(reactor=network, register_timeout=5)
    graph = parse_scenario(flow(inst("A", "100", authPassword="secret")))
    with pytest.raises(RegistrationFailed, match=r"127.0.0.1:5070: 408 no answer within 5 s"):
        network.run(Engine(manager, reactor=network).run(graph))
    network.settle()


def test_password_sources_in_order() -> None:
    config = SipInstanceConfig("A", "A", "100", auth_password="from-flow")
    assert credentials_for(config, {}) .password == "from-flow"
    assert credentials_for(config, {"TWSIP_PASSWORD": "all"}).password == "all"
    creds = credentials_for(config, {"TWSIP_PASSWORD": "all", "TWSIP_PASSWORD_100": "mine"})
    assert creds is not None and (creds.username, creds.password) == ("100", "mine")
    assert credentials_for(SipInstanceConfig("A", "A", "100"), {}) is None
    assert "from-flow" not in repr(config)


@pytest_twisted.ensureDeferred
async def test_pbx_down_on_real_udp_fails_with_408() -> None:
    """Nothing listens at the PBX's port: the run fails after the registration timeout,
    and no port stays bound (the autouse guard checks)."""
    from sipp_helper import system_chosen_udp_port
    port = await system_chosen_udp_port()
    manager = InstanceManager(base_port=0, register_timeout=1.5)
    graph = parse_scenario(flow(inst("A", "100", pbxPort=port, authPassword="x")))
    with pytest.raises(RegistrationFailed, match=rf"127.0.0.1:{port}: 408 no answer"):
        await Engine(manager).run(graph)
    assert not manager.instances
