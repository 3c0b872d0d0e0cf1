"""One execution of one graph: its chains, their nodes, the outcome, and the end.

Every start node of every instance begins a chain, and all chains run at once on the
reactor. `Run` walks each chain node by node, hands each node to its handler (from the
registry) with a `NodeContext`, follows success and failure branches, and decides the
outcome; the calls live in a `CallRegistry` and what happens goes to a `Recorder`. All of
the run's state dies with it.
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.internet import task
from twisted.internet.defer import Deferred, DeferredList, TimeoutError
from twisted.logger import Logger

from twsip.flow.calls import CallRegistry
from twsip.flow.check import target_warnings
from twsip.flow.events import (
    EventStream,
    InstanceInfo,
    ScenarioFinished,
    ScenarioStarted,
    ScenarioWarning,
)
from twsip.flow.model import ExecutionGraph, FlowWarning, ScenarioNode
from twsip.flow.nodes.base import NodeContext, NodeFailed
from twsip.flow.recorder import Recorder
from twsip.flow.registry import handler_for
from twsip.flow.result import (
    CallMediaRecord,
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    RUNNING,
    STOPPED,
    ScenarioResult,
)
from twsip.interfaces import TimeSource
from twsip.manager import InstanceManager, ManagedInstance, RegistrationFailed
from twsip.outcome import Outcome
from twsip.sip.dialog import ServerSession
from twsip.sip.instance import MessageEvent, SipInstance
from twsip.sip.message import Request
from twsip.sip.uri import loopback_address

__all__ = ["Run"]

log = Logger(namespace="twsip.engine")


class _Chain:
    __slots__ = ("start", "node_deferred", "deferred")

    def __init__(self, start: str) -> None:
        self.start = start
        self.node_deferred: Deferred[str] | None = None
        self.deferred: Deferred[None] | None = None


class Run:
    """One execution of one graph on `instances` (owned: created for it, cleaned up after).

    `done` fires with the result (None if the run could not finish) for everyone who
    asks for it, e.g. `Engine.stop`.
    """

    def __init__(self, graph: ExecutionGraph, instances: Mapping[str, ManagedInstance],
                 owned: bool, manager: InstanceManager, clock: TimeSource,
                 stream: EventStream, settle: float, hangup_grace: float) -> None:
        self.graph = graph
        self.instances = instances
        self.owned = owned
        self.manager = manager
        self.clock = clock
        self.settle = settle
        self.hangup_grace = hangup_grace
        port_dns = {(m.ua.host, m.port): m.config.dn for m in manager.instances.values()}
        # SIP messages carry the time of the instances' reactor, which may not be ours
        self.recorder = Recorder(graph, instances, clock, manager.reactor, stream, port_dns)
        self.calls = CallRegistry(clock)
        self.context = NodeContext(self.calls, self.recorder, manager, clock, instances,
                                   graph.resolve_path)
        self.chains: list[_Chain] = []
        self.outcome: str | None = None
        self.reason = ""
        self.failed_node: ScenarioNode | None = None
        self.warnings: list[FlowWarning] = []
        self.done = Outcome()
        self._claimed: list[SipInstance] = []

    # -- the run ---------------------------------------------------------------------------
    async def execute(self) -> ScenarioResult:
        recorder = self.recorder
        if not self.owned:
            self.claim_calls()
        recorder.attach()
        infos = [InstanceInfo(iid, m.config.label, m.config.dn, m.ua.host, m.port,
                              m.config.color) for iid, m in self.instances.items()]
        recorder.emit(ScenarioStarted(self.clock.seconds(), 0.0, tuple(infos),
                                      len(self.graph.nodes)))
        addresses = {m.config.dn: (m.ua.host, m.port) for m in self.instances.values()}
        self.warnings = [*self.graph.warnings, *target_warnings(self.graph, addresses)]
        for warning in self.warnings:
            recorder.emit(ScenarioWarning(self.clock.seconds(), recorder.elapsed(),
                                          str(warning), warning.node, warning.field))
        try:
            await self.register()
            for chain_def in self.graph.instances:
                for start in chain_def.start_nodes:
                    if self.outcome is not None:
                        break
                    chain = _Chain(start)
                    self.chains.append(chain)
                    chain.deferred = Deferred.fromCoroutine(self.run_chain(chain))
            await DeferredList([c.deferred for c in self.chains if c.deferred is not None],
                               consumeErrors=True)
            if self.outcome is None:
                self.outcome = COMPLETED
                done = sum(1 for r in recorder.records.values() if r.state == COMPLETED)
                self.reason = f"{done} of {len(recorder.records)} node(s) completed"
        finally:
            await self.finish()
        return ScenarioResult(
            outcome=self.outcome, reason=self.reason,
            node_id=self.failed_node.id if self.failed_node else None,
            node_label=self.failed_node.label if self.failed_node else None,
            started=recorder.start, ended=self.clock.seconds(), instances=infos,
            nodes=dict(recorder.records), messages=list(recorder.messages),
            events=list(recorder.events), calls=dict(self.calls.call_names),
            warnings=list(self.warnings), media=self.media_records())

    def media_records(self) -> list[CallMediaRecord]:
        """Each call leg's RTP figures, for the report and the ladders."""
        records = []
        for (instance_id, call), session in [*self.calls.replaced, *self.calls.sessions.items()]:
            media = session.any_media
            if media is None:
                continue
            report = media.report()
            received = sum(stream.packets for stream in report.streams)
            lost = sum(max(0, stream.lost) for stream in report.streams)
            jitter = max((stream.jitter_ms for stream in report.streams), default=0.0)
            pts = sorted({pt for stream in report.streams for pt in stream.payload_types})
            remote = f"{report.remote[0]}:{report.remote[1]}" if report.remote else None
            records.append(CallMediaRecord(
                instance_id, self.instances[instance_id].config.dn, call, session.call_id,
                report.local_port, remote, report.direction,
                report.counters.get("sent_packets", 0), received, lost, round(jitter, 3),
                tuple(pts), tuple(digit for digit, _ in media.received)))
        return records

    async def register(self) -> None:
        """Register the instances that ask for it before any chain starts; a refusal or
        silence fails the run here (RegistrationFailed, raised to the caller) and
        `finish` unregisters the ones that did register."""
        if not self.owned:
            return
        try:
            await self.manager.register(self.instances.values())
        except RegistrationFailed as exc:
            self.outcome = FAILED
            self.reason = str(exc)
            raise

    async def run_chain(self, chain: _Chain) -> None:
        recorder = self.recorder
        nid: str | None = chain.start
        while nid is not None and self.outcome is None:
            node = self.graph.nodes[nid]
            if recorder.records[nid].state != PENDING:
                recorder.node_action(node, f"{node.label} (node {nid}) has run already; a "
                                           f"node runs once, so this branch ends here")
                return
            recorder.set_state(node, RUNNING, handler_for(node).running_detail(node))
            d = chain.node_deferred = Deferred.fromCoroutine(self.perform(node))
            try:
                detail = await d
            except Exception as exc:
                if self.outcome is not None:  # the run is failing or stopping
                    recorder.set_state(node, CANCELLED, f"cancelled: {self.reason}")
                    return
                if isinstance(exc, NodeFailed):
                    reason = str(exc)
                else:
                    log.failure("node {node_id} ({name}) crashed", node_id=nid,
                                name=node.name)
                    reason = f"internal error: {exc!r}"
                recorder.set_state(node, FAILED, reason)
                if node.failure is not None:
                    recorder.records[node.id].branched = True
                    nxt = self.graph.nodes[node.failure]
                    recorder.node_action(node, f"{node.label} failed: following its failure "
                                               f"branch to {nxt.label} (node {nxt.id})")
                    nid = node.failure
                    continue
                self.fail_run(chain, node, reason)
                return
            finally:
                chain.node_deferred = None
            recorder.set_state(node, COMPLETED, detail)
            nid = node.success

    async def perform(self, node: ScenarioNode) -> str:
        handler = handler_for(node)
        if handler.bounded is None:
            return await handler.run(self.context, node)
        d: Deferred[str] = Deferred.fromCoroutine(
            handler.run(self.context, node))  # type: ignore[arg-type]
        d.addTimeout(node.timeout_ms / 1000, self.clock)  # type: ignore[arg-type]
        try:
            return await d
        except TimeoutError:
            raise NodeFailed(handler.timeout_message(node)) from None

    def fail_run(self, chain: _Chain, node: ScenarioNode, reason: str) -> None:
        if self.outcome is not None:
            return
        self.outcome = FAILED
        self.reason = reason
        self.failed_node = node
        self.recorder.node_action(node, f"{node.label} failed and has no failure branch: "
                                        f"the run fails; cancelling the other chains")
        self.cancel_chains(except_chain=chain)

    def stop(self, reason: str) -> None:
        if self.outcome is not None:
            return
        self.outcome = STOPPED
        self.reason = reason
        self.cancel_chains()

    def cancel_chains(self, except_chain: _Chain | None = None) -> None:
        for chain in self.chains:
            if chain is not except_chain and chain.node_deferred is not None \
                    and not chain.node_deferred.called:
                chain.node_deferred.cancel()

    # -- the end ---------------------------------------------------------------------------
    async def finish(self) -> None:
        try:
            self.calls.close()
            await self.pause(self.settle)
            byes = self.hang_up_live_calls()
            if byes is not None:
                if byes:
                    waiting: Deferred = DeferredList(byes, consumeErrors=True)
                    waiting.addTimeout(self.hangup_grace, self.clock)  # type: ignore[arg-type]
                    try:
                        await waiting
                    except TimeoutError:
                        pass
                await self.pause(self.settle)
            if self.owned:
                await self.manager.cleanup()
            else:
                self.release_calls()
        finally:
            self.recorder.detach()
            outcome = self.outcome or STOPPED
            failed = self.failed_node
            self.recorder.emit(ScenarioFinished(
                self.clock.seconds(), self.recorder.elapsed(), outcome, self.reason or outcome,
                failed.id if failed else None, failed.label if failed else None))

    def hang_up_live_calls(self) -> list[Deferred] | None:
        """End every call of the flow still live: None when there was none, else the
        Deferreds of the BYEs sent (CANCEL and reject need no waiting)."""
        byes: list[Deferred] = []
        any_live = False
        for instance_id, call, session in self.calls.live():
            any_live = True
            dn = self.recorder.dn_of(instance_id)
            if isinstance(session, ServerSession) and not session.answered:
                session.reject(480, "Temporarily Unavailable")
                self.recorder.action(dn, f"end of the run: rejecting {call} (not answered): "
                                         f"480")
                continue
            if session.established:
                self.recorder.action(dn, f"end of the run: hanging up {call}: BYE")
                byes.append(session.hangup())
            else:  # hangup() of an outgoing call not answered yet is its CANCEL
                self.recorder.action(dn, f"end of the run: cancelling {call} (not answered): "
                                         f"CANCEL")
                session.hangup()
        return byes if any_live else None

    async def pause(self, seconds: float) -> None:
        if seconds > 0:
            await task.deferLater(self.clock, seconds, lambda: None)  # type: ignore[arg-type]

    # -- sharing instances that serve already ---------------------------------------------
    def claim_calls(self) -> None:
        """Take the flow's own calls, and only those, from instances that serve already.

        Under ``twistd sipinstances`` the flow's instances keep auto-answering everyone
        else while it runs (SIPp, a softphone). A new call to an instance of the flow, or
        to one an INCOMING node waits on, belongs to the flow when

        * its INVITE comes from the address of one of the flow's instances, or
        * no MakeCall of the flow calls that instance (so the flow can only mean callers
          from outside) and an INCOMING node is waiting for a call on it right now.

        Every other call is auto-answered as if no flow ran.
        """
        flow_addresses = {(m.ua.host, m.port) for m in self.instances.values()}
        called = self._make_call_targets()
        uas = {id(m.ua): m.ua for m in self.instances.values()}
        for node in self.graph.nodes.values():
            if node.name == "INCOMING" and node.number:
                try:
                    ua = self.manager.by_dn(node.number).ua
                except LookupError:
                    continue
                uas[id(ua)] = ua
        open_to_all: set[SipInstance] = set()
        for ua in uas.values():
            if not ua.serving:
                ua.start_serving(auto_answer=False)
            ua.claim = _FlowClaim(ua, flow_addresses, ua.address not in called)
            self._claimed.append(ua)
            if ua.address not in called:
                open_to_all.add(ua)
        # The record (ladder, report) keeps the flow's messages only: those with the
        # flow's instances or MakeCall targets, and all of an instance open to outside
        # callers; the other callers' calls are not the flow's story.
        peers = flow_addresses | called

        def accept(event: MessageEvent) -> bool:
            return event.peer in peers or event.instance in open_to_all

        self.recorder.accept = accept

    def _make_call_targets(self) -> set[tuple[str, int]]:
        """The addresses the flow's MakeCall nodes call."""
        targets: set[tuple[str, int]] = set()
        for node in self.graph.nodes.values():
            if node.name != "MakeCall" or not node.target_uri:
                continue
            try:
                address = loopback_address(self.manager.resolve_target(node.target_uri))
            except (LookupError, ValueError):
                continue
            if address is not None:
                targets.add(address)
        return targets

    def release_calls(self) -> None:
        """The run is over: every call goes to the instance's own answering again, the
        ones the flow claimed but never took included."""
        for ua in self._claimed:
            if isinstance(ua.claim, _FlowClaim):
                ua.claim = None
            if ua.auto_answering and ua.transport is not None:
                ua.start_serving(auto_answer=True)
        self._claimed.clear()


class _FlowClaim:
    """`SipInstance.claim` while a flow runs on a shared instance (see `Run.claim_calls`)."""

    __slots__ = ("ua", "flow_addresses", "outside_callers")

    def __init__(self, ua: SipInstance, flow_addresses: set[tuple[str, int]],
                 outside_callers: bool) -> None:
        self.ua = ua
        self.flow_addresses = flow_addresses
        self.outside_callers = outside_callers

    def __call__(self, invite: Request, addr: tuple[str, int]) -> bool:
        if addr in self.flow_addresses:
            return True
        return self.outside_callers and bool(self.ua.incoming.waiting)
