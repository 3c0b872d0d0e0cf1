"""``twistd sipinstances --register HOST:PORT``: the service's instances register to a PBX
(a test-owned fake registrar on a loopback UDP port) before they serve, a refusal is one
error line and nothing stays bound or registered, and stopping unregisters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.logger import LogLevel
from twisted.python import usage

from fake_registrar import FakeRegistrar
from twsip.cli.pbx_options import PbxSettings, parse_pbx, with_pbx
from twsip.config import SipInstanceConfig
from twsip.flow.model import graph_for_instances
from twsip.manager import RegistrationFailed
from twsip.service import Options, SipInstancesService


@pytest.fixture
def registrar() -> Iterator[tuple[FakeRegistrar, int]]:
    fake = FakeRegistrar()
    port = reactor.listenUDP(0, fake, interface="127.0.0.1")
    try:
        yield fake, port.getHost().port
    finally:
        port.stopListening()


def test_options_parse_register_and_refuse_what_local_mode_cannot_reach() -> None:
    options = Options()
    options.parseOptions(["--register", "127.0.0.1:5070", "--auth-user", "alice",
                          "--register-interval", "60", "--no-demo"])
    assert options["pbx"] == PbxSettings("127.0.0.1", 5070, "UDP", "alice", 60)
    for bad in (["--register", "10.0.0.1:5070"], ["--register", "pbx.example:5060"],
                ["--register", "127.0.0.1:0"], ["--auth-user", "x"]):
        with pytest.raises(usage.UsageError):
            Options().parseOptions(bad)
    assert parse_pbx("localhost") == ("localhost", 5060)
    options = Options()
    options.parseOptions(["--register", "localhost:5070", "--register-transport", "tcp"])
    assert options["pbx"].transport == "TCP"
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--register", "127.0.0.1", "--register-transport", "sctp"])


def test_a_nodes_own_pbx_is_kept() -> None:
    own = SipInstanceConfig(id="a", label="a", dn="100", pbx_host="127.0.0.2", pbx_port=5080)
    plain = SipInstanceConfig(id="b", label="b", dn="200", register=False)
    kept, filled = with_pbx([own, plain], PbxSettings("127.0.0.1", 5070, auth_user="u"))
    assert kept is own
    assert (filled.register, filled.pbx_host, filled.pbx_port, filled.auth_user) == \
        (True, "127.0.0.1", 5070, "u")


@pytest_twisted.ensureDeferred
async def test_service_registers_before_serving_and_unregisters_at_stop(
        registrar: tuple[FakeRegistrar, int], monkeypatch: pytest.MonkeyPatch) -> None:
    fake, port = registrar
    monkeypatch.setenv("TWSIP_PASSWORD", "secret")
    service = SipInstancesService(graph_for_instances(2), base_port=0,
                                  pbx=PbxSettings("127.0.0.1", port))
    service.startService()
    try:
        manager = await service.when_serving()
        assert sorted(fake.bindings) == ["sip:100@127.0.0.1", "sip:200@127.0.0.1"]
        assert set(manager.registrations) == set(manager.instances)
    finally:
        await service.stopService()
    assert fake.bindings == {}
    assert [r.get("expires") for r in fake.requests][-2:] == ["0", "0"]


@pytest_twisted.ensureDeferred
async def test_scenario_nodes_with_a_pbx_register_under_the_service(
        registrar: tuple[FakeRegistrar, int], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    fake, port = registrar
    monkeypatch.setenv("TWSIP_PASSWORD", "secret")
    path = tmp_path / "flow.json"
    path.write_text(json.dumps({"nodes": [
        {"id": "A", "type": "sipInstance",
         "data": {"dn": "100", "register": True, "pbxHost": "127.0.0.1", "pbxPort": port}},
        {"id": "B", "type": "sipInstance", "data": {"dn": "200", "register": False}}],
        "edges": []}))
    options = Options()
    options.parseOptions(["--scenario", str(path), "--base-port", "0"])
    service = SipInstancesService(options["graph"], base_port=0)
    service.startService()
    try:
        await service.when_serving()
        assert list(fake.bindings) == ["sip:100@127.0.0.1"]
    finally:
        await service.stopService()
    assert fake.bindings == {}


@pytest_twisted.ensureDeferred
async def test_a_refused_registration_is_one_error_line_and_nothing_stays(
        registrar: tuple[FakeRegistrar, int], monkeypatch: pytest.MonkeyPatch,
        log_events: list[dict[str, Any]]) -> None:
    fake, port = registrar
    monkeypatch.setenv("TWSIP_PASSWORD", "secret")
    monkeypatch.setenv("TWSIP_PASSWORD_200", "wrong")
    service = SipInstancesService(graph_for_instances(2), base_port=0,
                                  pbx=PbxSettings("127.0.0.1", port))
    service.startService()
    try:
        with pytest.raises(RegistrationFailed, match="DN 200.*401"):
            await service.when_serving()
        assert service.manager is None
        assert fake.bindings == {}  # DN 100 did register, and was unregistered
        errors = [e for e in log_events if e.get("log_namespace") == "twsip.service"
                  and e.get("log_level") == LogLevel.error]
        assert len(errors) == 1 and "could not register" in errors[0]["error"]
        assert "wrong" not in repr(log_events) and "secret" not in repr(log_events)
    finally:
        await service.stopService()
