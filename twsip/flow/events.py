"""The public event stream of a scenario run.

While the engine runs a flow it emits five kinds of event, in this order of life:

* `ScenarioStarted` - the instances (DN, address) and the number of nodes;
* `ScenarioWarning` - something the flow asks for that runs differently than written
  (register without a PBX, a codec twsip lacks, a targetUri for other ports), one each;
* `NodeStateChanged` - a node went pending -> running -> completed / failed / cancelled;
* `ActionLog` - one human line about what a node did ("calling 200 at sip:...");
* `SipMessage` - one real SIP message seen at one instance (sent or received), with its
  full text;
* `ScenarioFinished` - completed, failed or stopped, with the failing node and reason.

Any code can listen: ``unsubscribe = engine.events.subscribe(callback)``. Every event is
also emitted through `twisted.logger` (namespace ``twsip.scenario``) with a format string
and its fields, so ``twistd`` logs show the same run. `format_event` turns one event into
the one-line form the CLI prints.

Events are frozen dataclasses: `time` is the engine clock's ``seconds()`` when the event
happened and `elapsed` the seconds since the scenario started, so a listener never has to
keep its own start time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Union
from collections.abc import Callable

from twisted.logger import Logger, LogLevel

__all__ = [
    "ActionLog",
    "Event",
    "EventStream",
    "InstanceInfo",
    "NodeStateChanged",
    "ScenarioFinished",
    "ScenarioStarted",
    "ScenarioWarning",
    "SipMessage",
    "event_to_dict",
    "format_event",
]

log = Logger(namespace="twsip.scenario")


@dataclass(frozen=True)
class InstanceInfo:
    """One instance taking part in a run, as the ladder and the report name it."""

    id: str
    label: str
    dn: str
    host: str
    port: int
    color: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ScenarioStarted:
    kind: ClassVar[str] = "scenario-started"
    log_format: ClassVar[str] = ("scenario started: {instance_count} instance(s) "
                                 "({instance_list}), {node_count} node(s)")
    time: float
    elapsed: float
    instances: tuple[InstanceInfo, ...]
    node_count: int

    def log_fields(self) -> dict[str, Any]:
        return {"instance_count": len(self.instances), "node_count": self.node_count,
                "instance_list": ", ".join(f"DN {i.dn} at {i.address}"
                                           for i in self.instances)}


@dataclass(frozen=True)
class NodeStateChanged:
    kind: ClassVar[str] = "node-state"
    log_format: ClassVar[str] = "[{dn}] {label} ({name}, node {node_id}): {state}{more}"
    time: float
    elapsed: float
    node_id: str
    label: str
    name: str
    node_kind: str  # "command" or "event"
    instance_id: str
    dn: str
    state: str
    detail: str = ""

    def log_fields(self) -> dict[str, Any]:
        fields = _fields(self)
        fields["more"] = f" - {self.detail}" if self.detail else ""
        return fields


@dataclass(frozen=True)
class ActionLog:
    kind: ClassVar[str] = "action"
    log_format: ClassVar[str] = "[{dn}] {text}"
    time: float
    elapsed: float
    dn: str
    text: str
    node_id: str | None = None

    def log_fields(self) -> dict[str, Any]:
        return _fields(self)


@dataclass(frozen=True)
class SipMessage:
    """One SIP message at one instance. A message between two instances of the run is
    seen twice: "out" at the sender and "in" at the receiver."""

    kind: ClassVar[str] = "sip-message"
    log_format: ClassVar[str] = ("[{dn}] {arrow} {summary} {preposition} {peer_name} "
                                 "Call-ID {call_id}")
    time: float
    elapsed: float
    direction: str  # "in" or "out"
    instance_id: str
    dn: str
    local: tuple[str, int]
    peer: tuple[str, int]
    peer_dn: str | None  # the DN of the instance at `peer`, when it is one of the run
    summary: str  # "INVITE" or "180 Ringing"
    method: str  # the request's method, or for a response the CSeq method
    status: int | None  # None for a request
    call_id: str
    cseq: str
    text: str  # the whole message as it went over the wire

    @property
    def peer_name(self) -> str:
        host, port = self.peer
        return f"{self.peer_dn} ({host}:{port})" if self.peer_dn else f"{host}:{port}"

    def log_fields(self) -> dict[str, Any]:
        fields = _fields(self)
        del fields["text"]
        fields.update(arrow="->" if self.direction == "out" else "<-",
                      preposition="to" if self.direction == "out" else "from",
                      peer_name=self.peer_name)
        return fields


@dataclass(frozen=True)
class ScenarioWarning:
    kind: ClassVar[str] = "warning"
    log_format: ClassVar[str] = "warning: {text}"
    time: float
    elapsed: float
    text: str  # the node, the field and why, as one sentence
    node_id: str | None = None
    field: str | None = None

    def log_fields(self) -> dict[str, Any]:
        return _fields(self)


@dataclass(frozen=True)
class ScenarioFinished:
    kind: ClassVar[str] = "scenario-finished"
    log_format: ClassVar[str] = "scenario {outcome} after {elapsed:.3f} s{where}: {reason}"
    time: float
    elapsed: float
    outcome: str  # "completed", "failed" or "stopped"
    reason: str
    node_id: str | None = None
    node_label: str | None = None

    def log_fields(self) -> dict[str, Any]:
        fields = _fields(self)
        fields["where"] = (f" at node {self.node_id} ({self.node_label})"
                           if self.node_id else "")
        return fields


Event = Union[ScenarioStarted, ScenarioWarning, NodeStateChanged, ActionLog, SipMessage,
              ScenarioFinished]
Subscriber = Callable[[Event], None]


def _fields(event: Any) -> dict[str, Any]:
    return {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}


def event_to_dict(event: Event) -> dict[str, Any]:
    """A JSON-ready dict of one event (with its `kind`)."""
    data: dict[str, Any] = {"kind": event.kind}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if f.name == "instances":
            value = [dataclasses.asdict(i) for i in value]
        elif isinstance(value, tuple):
            value = list(value)
        data[f.name] = value
    return data


class EventStream:
    """Fan-out of run events to subscribers and to `twisted.logger`.

    A subscriber that raises is logged and kept; it never disturbs the run. With
    ``log_sip=False`` SIP message events are not logged (use it when the instances log
    every message themselves, e.g. an InstanceManager with ``log_messages=True``).
    """

    def __init__(self, *, log_events: bool = True, log_sip: bool = True,
                 logger: Logger | None = None) -> None:
        self._subscribers: list[Subscriber] = []
        self.log_events = log_events
        self.log_sip = log_sip
        self._log = logger or log

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call `callback(event)` for every event from now on; returns an unsubscribe."""
        self._subscribers.append(callback)
        return lambda: self.unsubscribe(callback)

    def unsubscribe(self, callback: Subscriber) -> None:
        try:
            self._subscribers.remove(callback)
        except ValueError:
            pass

    def emit(self, event: Event) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                self._log.failure("scenario event subscriber {subscriber!r} failed",
                                  subscriber=callback)
        if not self.log_events:
            return
        if isinstance(event, SipMessage):
            if not self.log_sip:
                return
            self._log.emit(LogLevel.info, event.log_format, **event.log_fields())
            self._log.debug("{text}", text=event.text, call_id=event.call_id, dn=event.dn)
            return
        level = LogLevel.info
        if isinstance(event, ScenarioWarning):
            level = LogLevel.warn
        elif isinstance(event, ScenarioFinished) and event.outcome != "completed":
            level = LogLevel.warn
        elif isinstance(event, NodeStateChanged) and event.state == "failed":
            level = LogLevel.warn
        self._log.emit(level, event.log_format, scenario_event=event.kind,
                       **event.log_fields())


def format_event(event: Event) -> str:
    """One line for a terminal or a log: time since start, the instance, what happened."""
    stamp = f"{event.elapsed:8.3f}"
    if isinstance(event, ScenarioStarted):
        where = ", ".join(f"{i.dn} at {i.address}" for i in event.instances)
        return (f"{stamp}  scenario started: {len(event.instances)} instance(s) ({where}), "
                f"{event.node_count} node(s)")
    if isinstance(event, NodeStateChanged):
        detail = f" - {event.detail}" if event.detail else ""
        name = event.label if event.label == event.name else f"{event.label} ({event.name})"
        return f"{stamp}  [{event.dn}] {name}: {event.state.upper()}{detail}"
    if isinstance(event, ActionLog):
        return f"{stamp}  [{event.dn}] {event.text}"
    if isinstance(event, SipMessage):
        arrow, prep = ("->", "to") if event.direction == "out" else ("<-", "from")
        return (f"{stamp}  [{event.dn}] {arrow} {event.summary} {prep} {event.peer_name}"
                f"  Call-ID {event.call_id}")
    if isinstance(event, ScenarioWarning):
        return f"{stamp}  warning: {event.text}"
    if isinstance(event, ScenarioFinished):
        where = f" at {event.node_label} (node {event.node_id})" if event.node_id else ""
        return f"{stamp}  scenario {event.outcome.upper()}{where}: {event.reason}"
    raise TypeError(f"not a scenario event: {event!r}")
