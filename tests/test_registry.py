"""The node registry: one table decides what runs, what is refused, and what the README says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from twsip.flow.model import KNOWN_COMMANDS, KNOWN_EVENTS, ScenarioError, parse_scenario
from twsip.flow.nodes.base import NodeHandler
from twsip.flow.registry import (
    HANDLERS,
    _table,
    check_runnable,
    supported_nodes_markdown,
    unsupported_names,
)

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = re.compile(r"<!-- supported-nodes -->\n(.*?)\n<!-- /supported-nodes -->", re.S)


def test_readme_lists_the_registered_nodes() -> None:
    found = SECTION.search(README.read_text())
    assert found is not None, "README.md lost its <!-- supported-nodes --> section"
    assert found.group(1) == supported_nodes_markdown(), (
        "README.md disagrees with twsip.flow.registry: paste supported_nodes_markdown()")


def test_the_runnable_families() -> None:
    assert list(HANDLERS) == ["MakeCall", "Answer", "Release", "INCOMING", "RINGING",
                              "DISCONNECTED", "TIMEOUT", "PlayAudio", "SendDTMF",
                              "DTMFReceived", "Hold", "Retrieve", "BlindTransfer",
                              "MuteTransfer", "HELD", "RETRIEVED", "TRANSFERRED"]
    assert set(HANDLERS) == {*KNOWN_COMMANDS, *KNOWN_EVENTS} and unsupported_names() == []
    assert {h.family for h in HANDLERS.values()} == {"call control", "events and timers",
                                                     "media", "mid-call"}


def test_each_handler_declares_what_it_reads_and_what_bounds_it() -> None:
    assert HANDLERS["MakeCall"].fields[0] == "targetUri"
    assert HANDLERS["INCOMING"].fields[0] == "number"
    unbounded = [name for name, h in HANDLERS.items() if h.bounded is None]
    assert unbounded == ["MakeCall", "TIMEOUT"]  # setup timer; the wait itself
    assert all(h.description and "\n" not in h.description for h in HANDLERS.values())


def test_the_table_refuses_unknown_or_doubled_handlers() -> None:
    async def run(ctx: object, node: object) -> str:
        return ""

    with pytest.raises(ValueError, match="not a command"):
        _table(NodeHandler("Dance", "command", "fun", (), "dances", run))
    with pytest.raises(ValueError, match="two handlers"):
        _table(HANDLERS["TIMEOUT"], HANDLERS["TIMEOUT"])


def test_unregistered_nodes_are_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from twsip.flow import registry
    monkeypatch.setattr(registry, "HANDLERS",
                        {k: v for k, v in HANDLERS.items() if k != "Hold"})
    text = ('{"nodes": [{"id": "A", "type": "sipInstance", "data": {"dn": "100", '
            '"register": false}}, {"id": "p", "type": "command", "data": {"command": '
            '"Hold", "sipInstanceId": "A", "label": "Play"}}], "edges": []}')
    with pytest.raises(ScenarioError) as info:
        check_runnable(parse_scenario(text))
    assert "'p' (Play: Hold)" in str(info.value)
    assert (info.value.node, info.value.field) == ("p", "data.command")
