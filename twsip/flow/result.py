"""What a finished run is: its outcome, each node's record and everything it saw.

These types sit below the engine so that the reports (twsip/report) can read results
without importing the engine that makes them: the layers only point down.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twsip.flow.events import Event, InstanceInfo, SipMessage
from twsip.flow.model import FlowWarning

__all__ = [
    "CANCELLED",
    "CallMediaRecord",
    "COMPLETED",
    "FAILED",
    "NodeRecord",
    "PENDING",
    "RUNNING",
    "STOPPED",
    "ScenarioResult",
]

# node states
PENDING = "pending"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
# run outcomes: COMPLETED, FAILED or
STOPPED = "stopped"


@dataclass
class NodeRecord:
    """A node's life in one run. Times are seconds since the run started."""

    id: str
    label: str
    name: str
    kind: str
    instance_id: str
    dn: str
    state: str = PENDING
    started: float | None = None
    ended: float | None = None
    detail: str = ""
    # failed, and the flow's failure branch took over: the outcome the flow was drawn for
    branched: bool = False

    @property
    def duration(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started


@dataclass(frozen=True)
class CallMediaRecord:
    """One call leg's RTP in a run: what it sent and what it received (RFC 3550 figures)."""

    instance_id: str
    dn: str
    call: str  # the flow's callId
    call_id: str  # the SIP Call-ID
    local_port: int | None
    remote: str | None  # host:port it sent to
    direction: str
    sent_packets: int
    received_packets: int
    lost: int
    jitter_ms: float
    payload_types: tuple[int, ...]
    digits: tuple[str, ...]  # DTMF received (RFC 4733 and SIP INFO alike)

    def summary(self) -> str:
        pts = ",".join(map(str, self.payload_types)) or "-"
        digits = f", DTMF {''.join(self.digits)}" if self.digits else ""
        return (f"[{self.dn}] {self.call} RTP: sent {self.sent_packets}, received "
                f"{self.received_packets}, lost {self.lost}, jitter {self.jitter_ms:.2f} ms, "
                f"PT {pts}{digits}")


@dataclass
class ScenarioResult:
    """What a run did: its outcome, every node's record, every SIP message, every event."""

    outcome: str  # COMPLETED, FAILED or STOPPED
    reason: str
    node_id: str | None  # the node that failed the run, if one did
    node_label: str | None
    started: float  # engine clock seconds
    ended: float
    instances: list[InstanceInfo]
    nodes: dict[str, NodeRecord]
    messages: list[SipMessage]
    events: list[Event]
    # SIP Call-ID -> the flow's callId of the call it belongs to ("call-1")
    calls: dict[str, str] = field(default_factory=dict)
    # what the flow asked for that ran differently than written
    warnings: list[FlowWarning] = field(default_factory=list)
    # each call leg's RTP, in the order the calls were made
    media: list[CallMediaRecord] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome == COMPLETED

    @property
    def duration(self) -> float:
        return self.ended - self.started
