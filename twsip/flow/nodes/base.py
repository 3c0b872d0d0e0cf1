"""What a node handler is, and the narrow view of a run that it gets.

A handler is data plus one coroutine: the table of handlers (twsip.flow.registry) then
answers every question about node types in one place: which ones run, what each reads,
what its timeout bounds, how the README describes it. A handler sees the run only through
`NodeContext` (its calls, its record, the manager, the clock), so a node type cannot
reach into chain orchestration or another node's state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from twsip.flow.calls import CallRegistry
from twsip.flow.model import ExecutionGraph, ScenarioNode
from twsip.flow.recorder import Recorder
from twsip.interfaces import TimeSource
from twsip.manager import InstanceManager, ManagedInstance
from twsip.sip.dialog import Session
from twsip.sip.instance import SipInstance

__all__ = ["NodeContext", "NodeFailed", "NodeHandler", "text_field"]


def text_field(node: ScenarioNode, key: str) -> str:
    """A data field the parser kept raw (digits, filePath, targetUser, ...) as text, "" when
    absent: the builder may have written a number there."""
    value = node.data.get(key)
    return str(value).strip() if value is not None else ""


class NodeFailed(Exception):
    """A node did not do what it is for; the message says why, for a person."""


@dataclass
class NodeContext:
    """What a node handler may use of its run."""

    calls: CallRegistry
    recorder: Recorder
    manager: InstanceManager
    clock: TimeSource
    instances: Mapping[str, ManagedInstance]
    # a path of the flow (PlayAudio's filePath) as the flow means it, relative to its file
    resolve_path: Callable[[str], str] = lambda path: path

    def ua(self, node: ScenarioNode) -> SipInstance:
        return self.instances[node.instance_id].ua

    def dn(self, node: ScenarioNode) -> str:
        return self.instances[node.instance_id].config.dn

    def action(self, node: ScenarioNode, text: str) -> None:
        self.recorder.node_action(node, text)

    def lookup(self, node: ScenarioNode) -> Session:
        """The node's call, which must exist already."""
        session = self.calls.get(node)
        if session is None:
            raise NodeFailed(f"instance {self.dn(node)} has no call {node.call_id!r} (a "
                             f"MakeCall or INCOMING with that callId must run first)")
        return session

    def check_free(self, node: ScenarioNode) -> None:
        """A node that creates a call needs its callId free (or held by an ended call)."""
        session = self.calls.get(node)
        if session is not None and not session.ended:
            raise NodeFailed(f"callId {node.call_id!r} is held by a live call on "
                             f"{self.dn(node)}; give this call another callId")


Run = Callable[[NodeContext, ScenarioNode], Awaitable[str]]


@dataclass(frozen=True)
class NodeHandler:
    """One node type the engine runs.

    `fields` are the ``data`` fields the node reads (sipInstanceId aside); `bounded` is
    the failure message when the node timeout ends the node's whole run ({number}, {call},
    {ms} filled in), None when the handler keeps time itself; `describe` gives the
    running-state detail of a node; `check` refuses, before anything starts, a node that
    cannot run in this graph (raising ScenarioError).
    """

    name: str
    kind: str  # "command" or "event"
    family: str
    fields: tuple[str, ...]
    description: str
    run: Run
    bounded: str | None = None
    describe: Callable[[ScenarioNode], str] | None = None
    check: Callable[[ScenarioNode, ExecutionGraph], None] | None = None

    def running_detail(self, node: ScenarioNode) -> str:
        return self.describe(node) if self.describe is not None else node.call_id

    def timeout_message(self, node: ScenarioNode) -> str:
        assert self.bounded is not None
        return self.bounded.format(number=node.number, call=node.call_id, ms=node.timeout_ms)
