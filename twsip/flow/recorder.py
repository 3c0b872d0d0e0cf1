"""What a run saw, as it happened: node records, action lines, every SIP message.

Everything goes both into the run's own lists (the `ScenarioResult` is built from them)
and out on the engine's public `EventStream`, so a live view and the final report never
disagree. SIP messages are captured through the instances' observers, so the record
holds what really went over the wire, retransmissions included.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from twsip.flow.events import (
    ActionLog,
    Event,
    EventStream,
    NodeStateChanged,
    SipMessage,
)
from twsip.flow.model import ExecutionGraph, ScenarioNode
from twsip.flow.result import RUNNING, NodeRecord
from twsip.interfaces import TimeSource
from twsip.manager import ManagedInstance
from twsip.sip.digest import mask_credentials
from twsip.sip.instance import MessageEvent, SipInstance
from twsip.sip.message import Request, Response

__all__ = ["Recorder"]


class Recorder:
    """The events, messages and node records of one run.

    `clock` times the run's events; `message_clock` is the instances' reactor, which
    stamps SIP messages and may not be the engine's clock.
    """

    def __init__(self, graph: ExecutionGraph, instances: Mapping[str, ManagedInstance],
                 clock: TimeSource, message_clock: TimeSource, stream: EventStream,
                 port_dns: Mapping[tuple[str, int], str]) -> None:
        self.instances = instances
        self.clock = clock
        self.stream = stream
        self.start = clock.seconds()
        self.message_start = message_clock.seconds()
        self.events: list[Event] = []
        self.messages: list[SipMessage] = []
        self.records = {nid: NodeRecord(nid, node.label, node.name, node.kind,
                                        node.instance_id, self.dn_of(node.instance_id))
                        for nid, node in graph.nodes.items()}
        self._port_dns = port_dns
        # Which messages are the run's: all of them, unless the run shares its instances
        # with other callers (then `Run.claim_calls` sets a filter).
        self.accept: Callable[[MessageEvent], bool] | None = None
        self._observers: list[tuple[SipInstance, Callable[[MessageEvent], None]]] = []

    def elapsed(self) -> float:
        return self.clock.seconds() - self.start

    def dn_of(self, instance_id: str) -> str:
        return self.instances[instance_id].config.dn

    def emit(self, event: Event) -> None:
        self.events.append(event)
        self.stream.emit(event)

    def action(self, dn: str, text: str, node_id: str | None = None) -> None:
        self.emit(ActionLog(self.clock.seconds(), self.elapsed(), dn, text, node_id))

    def node_action(self, node: ScenarioNode, text: str) -> None:
        self.action(self.dn_of(node.instance_id), text, node.id)

    def set_state(self, node: ScenarioNode, state: str, detail: str = "") -> None:
        record = self.records[node.id]
        record.state = state
        record.detail = detail
        now = self.elapsed()
        if state == RUNNING:
            record.started = now
        else:
            record.ended = now
        self.emit(NodeStateChanged(self.clock.seconds(), now, node.id, node.label, node.name,
                                   node.kind, node.instance_id, record.dn, state, detail))

    # -- SIP message capture ---------------------------------------------------------------
    def attach(self) -> None:
        for instance_id, managed in self.instances.items():
            def observe(event: MessageEvent, instance_id: str = instance_id,
                        dn: str = managed.config.dn) -> None:
                if self.accept is None or self.accept(event):
                    self.on_message(event, instance_id, dn)

            managed.ua.observers.append(observe)
            self._observers.append((managed.ua, observe))

    def detach(self) -> None:
        for ua, observe in self._observers:
            try:
                ua.observers.remove(observe)
            except ValueError:
                pass
        self._observers.clear()

    def on_message(self, event: MessageEvent, instance_id: str, dn: str) -> None:
        message = event.message
        status: int | None
        if isinstance(message, Request):
            method, status, summary = message.method, None, message.method
        else:
            assert isinstance(message, Response)
            status = message.status
            summary = f"{message.status} {message.reason}"
            try:
                method = message.cseq.method
            except Exception:  # a response with a broken CSeq is still recorded
                method = ""
        peer = (event.peer[0], event.peer[1])
        sip = SipMessage(
            time=event.time, elapsed=event.time - self.message_start,
            direction=event.direction, instance_id=instance_id, dn=dn,
            local=(event.instance.host, event.instance.port), peer=peer,
            peer_dn=self._port_dns.get(peer), summary=summary, method=method, status=status,
            call_id=message.get("call-id") or "", cseq=message.get("cseq") or "",
            text=mask_credentials(str(message)))
        self.messages.append(sip)
        self.emit(sip)
