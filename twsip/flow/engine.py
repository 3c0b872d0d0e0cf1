"""The scenario engine: runs an ExecutionGraph on real SIP instances, on the reactor.

``Engine(manager).run(graph)`` creates one instance per sipInstance node, serves them, runs
every chain, hangs up whatever is still live, cleans the manager up, and fires with a
`ScenarioResult`. ``Engine(manager).run_on_serving(graph)`` does the same on instances that
already serve (``twistd sipinstances``) and leaves them serving; logging the ladder of
such a run is the service's job (`twsip.service.run_once_serving`).

How a flow runs
---------------
* Every start node of every instance begins a chain; all chains run at once on the
  reactor (no threads). A node runs on its chain's instance and goes pending -> running ->
  completed or failed. A failed node follows its failure branch if it has one; otherwise
  the run fails, and the node that is running in every other chain is cancelled (state
  "cancelled"). A node runs at most once: a chain that reaches a node that already ran
  ends there (the action log says so).
* Calls are kept per instance and ``callId`` ("call-1" by default), so one instance can
  hold several calls. ``callId`` is a name in the flow, not the SIP Call-ID.
* Every node has a timeout (``timeout`` ms, default 10 s); what it bounds is listed below.

Commands
  MakeCall   Call ``targetUri`` (a DN of the flow, resolved by the manager, or a loopback
             ``sip:`` URI). Completes when the call is answered (200, ACK sent); fails on a
             3xx-6xx or when ``timeout`` passes first (the call is then CANCELled, 408).
             A call that a Release node of the flow cancels before the answer completes the
             MakeCall with "cancelled before the answer by Release", since that is what the
             flow asked for (see examples/cancel-before-answer.json).
  Answer     Answer the incoming call ``callId`` (200 with SDP); completes on the ACK.
  Release    Answered call: BYE, completes on its final response. Outgoing call not yet
             answered: CANCEL. Incoming call not yet answered: reject 486 Busy Here.
Events
  INCOMING   Takes the next call from the queue of the instance with DN ``number`` (its own
             by default), sends 180 Ringing at once (so callers see ringing without a
             RINGING node) and completes. The call then rings until an Answer or Release
             node acts on it; if none does within ``timeout`` ms of its arrival, the engine
             rejects it 480 Temporarily Unavailable. No call within ``timeout``: fails.
  RINGING    Outgoing call: completes on the first 180/183 received (at once if it came
             already); fails if the call is answered or fails without one. Incoming call:
             completes when 180 has been sent (INCOMING already sent it; otherwise it is
             sent now). Waits for the call to exist if another chain has yet to create it.
  DISCONNECTED  Completes when the far side ends the call: BYE ("remote hangup"), CANCEL
             ("cancelled by caller") or, for an outgoing call, a rejection; fails if the
             call ends from this side. Waits for the call to exist, like RINGING.
  TIMEOUT    Waits ``timeout`` ms on the engine's clock, then completes.

Media, DTMF, hold and transfer nodes parse but are refused before anything starts
(`check_runnable`), with a message listing them.

At the end (completed, failed or stopped) the engine waits `settle` seconds so that
messages in flight land in the record, ends every call of the flow that is still live (BYE,
CANCEL or 480), and with `run()` calls ``manager.cleanup()``. Only then does the result
fire and `ScenarioFinished` go out.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable, Coroutine

from twisted.internet import task
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    TimeoutError,
    fail,
    succeed,
)
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from twsip.sip.dialog import CallFailed, ClientSession, ServerSession, Session
from twsip.flow.events import (
    ActionLog,
    Event,
    EventStream,
    InstanceInfo,
    NodeStateChanged,
    ScenarioFinished,
    ScenarioStarted,
    SipMessage,
)
from twsip.sip.instance import MessageEvent, SipInstance
from twsip.manager import InstanceManager, ManagedInstance, UnknownInstance
from twsip.sip.message import Request, Response
from twsip.flow.model import ExecutionGraph, ScenarioError, ScenarioNode
from twsip.flow.result import (
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    RUNNING,
    STOPPED,
    NodeRecord,
    ScenarioResult,
)
from twsip.sip.uri import loopback_address, parse_uri

__all__ = ["Engine", "EngineBusy", "check_runnable"]

log = Logger(namespace="twsip.engine")

# Nodes whose whole run the node timeout bounds (MakeCall is bounded by its own call setup
# timer, TIMEOUT *is* its timeout).
_BOUNDED = {
    "INCOMING": "no incoming call for DN {number} within {ms} ms",
    "RINGING": "no 180/183 on {call} within {ms} ms",
    "DISCONNECTED": "{call} was not ended by the far side within {ms} ms",
    "Answer": "no ACK for the 200 OK on {call} within {ms} ms",
    "Release": "no final response to the BYE on {call} within {ms} ms",
}


class NodeFailed(Exception):
    """A node did not do what it is for; the message says why, for a person."""


class EngineBusy(RuntimeError):
    """An Engine runs one scenario at a time."""


def check_runnable(graph: ExecutionGraph) -> None:
    """Refuse, before anything starts, a flow the engine cannot run (ScenarioError).

    That is: nodes that need media, re-INVITE or REFER (listed by name), and a MakeCall
    whose target is neither a DN of the flow nor a loopback sip: URI.
    """
    unsupported = graph.unsupported_nodes()
    if unsupported:
        listed = ", ".join(f"{n.id!r} ({n.label}: {n.name})" for n in unsupported)
        first = unsupported[0]
        raise ScenarioError(
            f"this flow uses nodes the engine cannot run yet, because they need RTP media "
            f"or re-INVITE/REFER support: {listed}; remove them to run the flow",
            first.id, f"data.{first.kind}", first.label)
    dns = [chain.config.dn for chain in graph.instances]
    for node in graph.nodes.values():
        if node.name != "MakeCall" or node.target_uri is None:
            continue
        target = node.target_uri
        if target.lower().startswith(("sip:", "sips:")):
            if loopback_address(target) is None:
                raise ScenarioError(
                    f"target {target!r} is not a sip: URI on 127.0.0.0/8; local mode calls "
                    f"only loopback addresses", node.id, "data.targetUri", node.label)
        elif target not in dns:
            raise ScenarioError(
                f"target {target!r} is neither a DN of this flow ({', '.join(dns)}) nor a "
                f"sip: URI", node.id, "data.targetUri", node.label)


class Engine:
    """Runs scenario graphs on the instances of an `InstanceManager`.

    `reactor` is the clock for the engine's own timers (TIMEOUT nodes, node timeouts, ring
    timeouts); it defaults to the manager's reactor, and tests may pass a
    `twisted.internet.task.Clock`. `events` is the public `EventStream` (subscribe to it for
    a live view). `settle` is how long the engine waits, once every chain has ended, for
    messages still in flight before it hangs up and cleans up.
    """

    def __init__(self, manager: InstanceManager | None = None, *, reactor: Any = None,
                 events: EventStream | None = None, settle: float = 0.05,
                 hangup_grace: float = 2.0) -> None:
        if manager is None:
            manager = InstanceManager(reactor=reactor)
        self.instance_manager = manager
        self.clock: IReactorTime = reactor if reactor is not None else manager.reactor
        self.events = events if events is not None else EventStream()
        self.settle = settle
        self.hangup_grace = hangup_grace
        self._run: _Run | None = None

    @property
    def running(self) -> bool:
        return self._run is not None

    def subscribe(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Shorthand for ``engine.events.subscribe(callback)``."""
        return self.events.subscribe(callback)

    def run(self, graph: ExecutionGraph) -> Deferred[ScenarioResult]:
        """Create the flow's instances, serve them, run the flow, hang up, clean up.

        Fires with a ScenarioResult whatever the flow's outcome. Fails with ScenarioError
        when the flow is refused (nothing started), with InstanceCreationError when the
        instances cannot be created (no port left open), with EngineBusy during a run.
        """
        return self._start(graph, owned=True)

    def run_on_serving(self, graph: ExecutionGraph) -> Deferred[ScenarioResult]:
        """Run the flow on instances the manager already has (matched by DN) and keeps.

        For ``twistd sipinstances``: the instances stay bound and serving afterwards, and
        an instance that answered calls by itself (auto-answer) does so again once the run
        is over; during the run its calls go to the flow's INCOMING nodes instead.
        """
        return self._start(graph, owned=False)

    def stop(self, reason: str = "stopped") -> Deferred[ScenarioResult | None]:
        """Stop the current run (outcome "stopped"); fires once it has cleaned up."""
        run = self._run
        if run is None:
            return succeed(None)
        run.stop(reason)
        return run.when_done()

    def _start(self, graph: ExecutionGraph, owned: bool) -> Deferred[ScenarioResult]:
        if self._run is not None:
            return fail(EngineBusy("this engine is already running a scenario"))
        try:
            check_runnable(graph)
            managed = self._instances_for(graph, owned)
        except Exception as exc:
            return fail(exc)
        run = self._run = _Run(self, graph, managed, owned)

        def done(result: Any) -> Any:
            self._run = None
            return result

        d = Deferred.fromCoroutine(run.execute())
        d.addBoth(done)
        d.addBoth(run.settle_waiters)
        return d

    def _instances_for(self, graph: ExecutionGraph, owned: bool) -> dict[str, ManagedInstance]:
        manager = self.instance_manager
        if owned:
            created = manager.create_instances(graph.configs)
            manager.start_serving(auto_answer=False)
            return {m.config.id: m for m in created}
        result: dict[str, ManagedInstance] = {}
        for chain in graph.instances:
            config = chain.config
            try:
                result[config.id] = manager.by_dn(config.dn)
            except UnknownInstance:
                known = ", ".join(m.config.dn for m in manager.instances.values()) or "none"
                raise ScenarioError(
                    f"the flow needs an instance with DN {config.dn}, which is not running "
                    f"(running DNs: {known})", config.id, "data.dn", config.label) from None
        return result


class _Chain:
    __slots__ = ("instance_id", "start", "node_deferred", "deferred")

    def __init__(self, instance_id: str, start: str) -> None:
        self.instance_id = instance_id
        self.start = start
        self.node_deferred: Deferred | None = None
        self.deferred: Deferred | None = None


class _Run:
    """One execution of one graph. All of its state dies with it."""

    def __init__(self, engine: Engine, graph: ExecutionGraph,
                 managed: dict[str, ManagedInstance], owned: bool) -> None:
        self.engine = engine
        self.graph = graph
        self.managed = managed
        self.owned = owned
        self.manager = engine.instance_manager
        self.clock = engine.clock
        self.stream = engine.events
        self.start = self.clock.seconds()
        # SIP messages carry the time of the instances' reactor, which may not be ours
        self.message_start = self.manager.reactor.seconds()
        self.events: list[Event] = []
        self.messages: list[SipMessage] = []
        self.records = {nid: NodeRecord(nid, node.label, node.name, node.kind,
                                        node.instance_id, managed[node.instance_id].config.dn)
                        for nid, node in graph.nodes.items()}
        self.dialogs: dict[tuple[str, str], Session] = {}
        self.slot_waiters: dict[tuple[str, str], list[Deferred]] = {}
        self.ring_timers: dict[Session, IDelayedCall] = {}
        self.released: set[Session] = set()
        self.calls: dict[str, str] = {}
        self.chains: list[_Chain] = []
        self.outcome: str | None = None
        self.reason = ""
        self.failed_node: ScenarioNode | None = None
        self._done_waiters: list[Deferred] = []
        self._observers: list[tuple[SipInstance, Callable[[MessageEvent], None]]] = []
        self._paused: list[SipInstance] = []
        self._port_dn = {(m.ua.host, m.port): m.config.dn for m in self.manager.instances.values()}
        self._ua_instance = {id(m.ua): iid for iid, m in managed.items()}

    # -- bookkeeping ---------------------------------------------------------------------
    def elapsed(self) -> float:
        return self.clock.seconds() - self.start

    def emit(self, event: Event) -> None:
        self.events.append(event)
        self.engine.events.emit(event)

    def action(self, dn: str, text: str, node_id: str | None = None) -> None:
        self.emit(ActionLog(self.clock.seconds(), self.elapsed(), dn, text, node_id))

    def node_action(self, node: ScenarioNode, text: str) -> None:
        self.action(self.dn(node), text, node.id)

    def dn(self, node: ScenarioNode) -> str:
        return self.managed[node.instance_id].config.dn

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

    def when_done(self) -> Deferred[ScenarioResult | None]:
        d: Deferred[ScenarioResult | None] = Deferred()
        self._done_waiters.append(d)
        return d

    def settle_waiters(self, result: Any) -> Any:
        waiters, self._done_waiters = self._done_waiters, []
        for d in waiters:
            d.callback(result if isinstance(result, ScenarioResult) else None)
        return result

    # -- SIP message capture -------------------------------------------------------------
    def attach(self) -> None:
        for iid, managed in self.managed.items():
            ua = managed.ua

            def observe(event: MessageEvent, iid: str = iid, dn: str = managed.config.dn
                        ) -> None:
                self.on_message(event, iid, dn)

            ua.observers.append(observe)
            self._observers.append((ua, observe))

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
            except Exception:
                method = ""
        peer = (event.peer[0], event.peer[1])
        sip = SipMessage(
            time=event.time, elapsed=event.time - self.message_start,
            direction=event.direction, instance_id=instance_id, dn=dn,
            local=(event.instance.host, event.instance.port), peer=peer,
            peer_dn=self._port_dn.get(peer), summary=summary, method=method, status=status,
            call_id=message.get("call-id") or "", cseq=message.get("cseq") or "",
            text=str(message))
        self.messages.append(sip)
        self.emit(sip)

    # -- auto-answer (run_on_serving) ------------------------------------------------------
    def pause_auto_answer(self) -> None:
        # The flow's INCOMING nodes take the calls while it runs; start_serving(
        # auto_answer=True) gives them back to the instance afterwards.
        for managed in self.managed.values():
            ua = managed.ua
            if ua.auto_answering:
                ua.stop_auto_answer()
                self._paused.append(ua)
            if not ua.serving:
                ua.start_serving(auto_answer=False)

    def resume_auto_answer(self) -> None:
        for ua in self._paused:
            if ua.transport is not None:
                ua.start_serving(auto_answer=True)
        self._paused.clear()

    # -- the run ---------------------------------------------------------------------------
    async def execute(self) -> ScenarioResult:
        self.attach()
        if not self.owned:
            self.pause_auto_answer()
        infos = [InstanceInfo(iid, m.config.label, m.config.dn, m.ua.host, m.port,
                              m.config.color) for iid, m in self.managed.items()]
        self.emit(ScenarioStarted(self.clock.seconds(), 0.0, tuple(infos),
                                  len(self.graph.nodes)))
        self.warn_unreachable()
        try:
            for chain_def in self.graph.instances:
                for start in chain_def.start_nodes:
                    if self.outcome is not None:
                        break
                    chain = _Chain(chain_def.config.id, start)
                    self.chains.append(chain)
                    chain.deferred = Deferred.fromCoroutine(self.run_chain(chain))
            await DeferredList([c.deferred for c in self.chains if c.deferred is not None],
                               consumeErrors=True)
            if self.outcome is None:
                self.outcome = COMPLETED
                done = sum(1 for r in self.records.values() if r.state == COMPLETED)
                self.reason = f"{done} of {len(self.records)} node(s) completed"
        finally:
            await self.finish()
        return ScenarioResult(
            outcome=self.outcome, reason=self.reason,
            node_id=self.failed_node.id if self.failed_node else None,
            node_label=self.failed_node.label if self.failed_node else None,
            started=self.start, ended=self.clock.seconds(), instances=infos,
            nodes=dict(self.records), messages=list(self.messages), events=list(self.events),
            calls=dict(self.calls))

    def warn_unreachable(self) -> None:
        seen: set[str] = set()
        todo = [n for chain in self.graph.instances for n in chain.start_nodes]
        while todo:
            nid = todo.pop()
            if nid in seen:
                continue
            seen.add(nid)
            node = self.graph.nodes[nid]
            todo.extend(n for n in (node.success, node.failure) if n is not None)
        for nid, node in self.graph.nodes.items():
            if nid not in seen:
                self.node_action(node, f"{node.label} (node {nid}) is not connected below a "
                                       f"sipInstance node, so it never runs")

    async def run_chain(self, chain: _Chain) -> None:
        nid: str | None = chain.start
        while nid is not None and self.outcome is None:
            node = self.graph.nodes[nid]
            if self.records[nid].state != PENDING:
                self.node_action(node, f"{node.label} (node {nid}) has run already; a node "
                                       f"runs once, so this branch ends here")
                return
            self.set_state(node, RUNNING, self.describe(node))
            d = chain.node_deferred = Deferred.fromCoroutine(self.perform(node))
            try:
                detail = await d
            except Exception as exc:
                if self.outcome is not None:  # the run is failing or stopping
                    self.set_state(node, CANCELLED, f"cancelled: {self.reason}")
                    return
                if isinstance(exc, NodeFailed):
                    reason = str(exc)
                else:
                    log.failure("node {node_id} ({name}) crashed", node_id=nid,
                                name=node.name)
                    reason = f"internal error: {exc!r}"
                self.set_state(node, FAILED, reason)
                if node.failure is not None:
                    nxt = self.graph.nodes[node.failure]
                    self.node_action(node, f"{node.label} failed: following its failure "
                                           f"branch to {nxt.label} (node {nxt.id})")
                    nid = node.failure
                    continue
                self.fail_run(chain, node, reason)
                return
            finally:
                chain.node_deferred = None
            self.set_state(node, COMPLETED, detail)
            nid = node.success

    def fail_run(self, chain: _Chain, node: ScenarioNode, reason: str) -> None:
        if self.outcome is not None:
            return
        self.outcome = FAILED
        self.reason = reason
        self.failed_node = node
        self.node_action(node, f"{node.label} failed and has no failure branch: the run "
                               f"fails; cancelling the other chains")
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

    def describe(self, node: ScenarioNode) -> str:
        call = node.call_id
        if node.name == "MakeCall":
            return f"calling {node.target_uri} ({call}), setup timeout {node.timeout_ms} ms"
        if node.name == "INCOMING":
            return f"waiting up to {node.timeout_ms} ms for a call to DN {node.number} ({call})"
        if node.name == "TIMEOUT":
            return f"waiting {node.timeout_ms} ms"
        return call

    # -- nodes -------------------------------------------------------------------------------
    async def perform(self, node: ScenarioNode) -> str:
        handler: Callable[[ScenarioNode], Coroutine[Any, Any, str]] = getattr(
            self, f"do_{node.name}")
        message = _BOUNDED.get(node.name)
        if message is None:
            return await handler(node)
        d = Deferred.fromCoroutine(handler(node))
        d.addTimeout(node.timeout_ms / 1000, self.clock)
        try:
            return await d
        except TimeoutError:
            raise NodeFailed(message.format(number=node.number, call=node.call_id,
                                            ms=node.timeout_ms)) from None

    def key(self, node: ScenarioNode) -> tuple[str, str]:
        return (node.instance_id, node.call_id)

    def lookup(self, node: ScenarioNode) -> Session:
        session = self.dialogs.get(self.key(node))
        if session is None:
            raise NodeFailed(f"instance {self.dn(node)} has no call {node.call_id!r} (a "
                             f"MakeCall or INCOMING with that callId must run first)")
        return session

    def check_free(self, node: ScenarioNode) -> None:
        session = self.dialogs.get(self.key(node))
        if session is not None and not session.ended:
            raise NodeFailed(f"callId {node.call_id!r} is held by a live call on "
                             f"{self.dn(node)}; give this call another callId")

    def bind(self, node: ScenarioNode, session: Session) -> None:
        key = self.key(node)
        self.dialogs[key] = session
        self.calls.setdefault(session.call_id, node.call_id)
        for d in self.slot_waiters.pop(key, []):
            if not d.called:
                d.callback(session)

    def wait_session(self, node: ScenarioNode) -> Deferred[Session]:
        key = self.key(node)
        session = self.dialogs.get(key)
        if session is not None:
            return succeed(session)
        waiters = self.slot_waiters.setdefault(key, [])

        def cancel(d: Deferred) -> None:
            if d in waiters:
                waiters.remove(d)

        d: Deferred[Session] = Deferred(cancel)
        waiters.append(d)
        return d

    async def do_MakeCall(self, node: ScenarioNode) -> str:  # noqa: N802
        self.check_free(node)
        ua = self.managed[node.instance_id].ua
        assert node.target_uri is not None
        try:
            target = self.manager.resolve_target(node.target_uri)
        except UnknownInstance as exc:
            raise NodeFailed(str(exc)) from None
        self.node_action(node, f"calling {node.target_uri} at {target} ({node.call_id})")
        try:
            session = ua.dial(target, node.timeout_ms / 1000)
        except CallFailed as exc:
            raise NodeFailed(f"cannot call {node.target_uri}: {exc.reason}") from None
        self.bind(node, session)
        try:
            await session.when_answered()
        except CallFailed as exc:
            if session in self.released:
                return "cancelled before the answer by Release, as the flow asked"
            raise NodeFailed(f"call to {node.target_uri} failed: {exc.status} "
                             f"{exc.reason}") from None
        final = session.final_response
        status = f"{final.status} {final.reason}" if final is not None else "2xx"
        return f"answered ({status}), ACK sent"

    async def do_INCOMING(self, node: ScenarioNode) -> str:  # noqa: N802
        self.check_free(node)
        assert node.number is not None
        queue = self.manager.by_dn(node.number).incoming
        while True:
            session: ServerSession = await queue.get()
            if not session.ended:
                break
            self.node_action(node, f"skipped call {session.call_id} from "
                                   f"{_user(session.remote_uri)}: it ended while queued "
                                   f"({session.end_reason})")
        session.ringing()
        self.bind(node, session)
        timer = self.clock.callLater(node.timeout_ms / 1000, self.ring_expired, node, session)
        self.ring_timers[session] = timer
        session.when_ended().addCallback(lambda _: self.stop_ring_timer(session))
        caller = _user(session.remote_uri)
        self.node_action(node, f"incoming call from {caller} ({node.call_id}, Call-ID "
                               f"{session.call_id}): 180 Ringing sent")
        return f"call from {caller}, ringing"

    def ring_expired(self, node: ScenarioNode, session: ServerSession) -> None:
        self.ring_timers.pop(session, None)
        if session.ended or session.answered:
            return
        session.reject(480, "Temporarily Unavailable")
        self.node_action(node, f"{node.call_id} rang {node.timeout_ms} ms with no Answer or "
                               f"Release: rejected 480 Temporarily Unavailable")

    def stop_ring_timer(self, session: Session) -> None:
        timer = self.ring_timers.pop(session, None)
        if timer is not None and timer.active():
            timer.cancel()

    async def do_Answer(self, node: ScenarioNode) -> str:  # noqa: N802
        session = self.lookup(node)
        if not isinstance(session, ServerSession):
            raise NodeFailed(f"{node.call_id} on {self.dn(node)} is an outgoing call; "
                             f"Answer needs an incoming one")
        if session.ended:
            raise NodeFailed(f"{node.call_id} has ended already ({session.end_reason})")
        if session.answered:
            raise NodeFailed(f"{node.call_id} is answered already")
        self.stop_ring_timer(session)
        self.node_action(node, f"answering {node.call_id}: 200 OK")
        try:
            await session.answer()
        except CallFailed as exc:
            raise NodeFailed(f"answer failed: {exc.status} {exc.reason}") from None
        return "answered, ACK received"

    async def do_Release(self, node: ScenarioNode) -> str:  # noqa: N802
        session = self.lookup(node)
        call = node.call_id
        if session.ended:
            raise NodeFailed(f"{call} has ended already ({session.end_reason})")
        if isinstance(session, ServerSession) and not session.answered:
            self.stop_ring_timer(session)
            session.reject(486, "Busy Here")
            self.node_action(node, f"rejecting {call} (not answered): 486 Busy Here")
            return "rejected 486 Busy Here"
        if isinstance(session, ClientSession) and not session.established:
            self.released.add(session)
            session.cancel()
            self.node_action(node, f"cancelling {call} (not answered): CANCEL")
            return "CANCEL sent"
        self.node_action(node, f"hanging up {call}: BYE")
        try:
            response = await session.hangup()
        except CallFailed as exc:
            raise NodeFailed(f"BYE failed: {exc.status} {exc.reason}") from None
        status = getattr(response, "status", None)
        if status is not None and not 200 <= status < 300:
            raise NodeFailed(f"BYE answered {status} {response.reason}")
        return f"hung up (BYE answered {status} {getattr(response, 'reason', '')})".strip()

    async def do_RINGING(self, node: ScenarioNode) -> str:  # noqa: N802
        session = await self.wait_session(node)
        if isinstance(session, ClientSession):
            try:
                response = await session.when_ringing()
            except CallFailed as exc:
                raise NodeFailed(f"no ringing on {node.call_id}: {exc.status} "
                                 f"{exc.reason}") from None
            return f"{response.status} {response.reason} received"
        assert isinstance(session, ServerSession)
        if session.ringing_sent:
            return "180 Ringing sent (INCOMING rings every call)"
        if session.ended or session.answered:
            raise NodeFailed(f"{node.call_id} can no longer ring "
                             f"({session.end_reason or 'answered'})")
        session.ringing()
        self.node_action(node, f"180 Ringing sent on {node.call_id}")
        return "180 Ringing sent"

    async def do_DISCONNECTED(self, node: ScenarioNode) -> str:  # noqa: N802
        session = await self.wait_session(node)
        reason = await session.when_ended()
        far = reason in ("remote hangup", "cancelled by caller") or (
            isinstance(session, ClientSession) and reason.startswith("rejected"))
        if not far:
            raise NodeFailed(f"{node.call_id} ended from this side ({reason}), not by the "
                             f"far side")
        return f"ended by the far side ({reason})"

    async def do_TIMEOUT(self, node: ScenarioNode) -> str:  # noqa: N802
        await task.deferLater(self.clock, node.timeout_ms / 1000, lambda: None)
        return f"waited {node.timeout_ms} ms"

    # -- the end ---------------------------------------------------------------------------
    async def finish(self) -> None:
        try:
            for timer in list(self.ring_timers.values()):
                if timer.active():
                    timer.cancel()
            self.ring_timers.clear()
            for waiters in self.slot_waiters.values():
                for d in list(waiters):
                    if not d.called:
                        d.cancel()
            self.slot_waiters.clear()
            await self.pause(self.engine.settle)
            byes = self.hang_up_live_calls()
            if byes is not None:
                if byes:
                    waiting: Deferred = DeferredList(byes, consumeErrors=True)
                    waiting.addTimeout(self.engine.hangup_grace, self.clock)
                    try:
                        await waiting
                    except TimeoutError:
                        pass
                await self.pause(self.engine.settle)
            if self.owned:
                await self.manager.cleanup()
            else:
                self.resume_auto_answer()
        finally:
            self.detach()
            outcome = self.outcome or STOPPED
            self.emit(ScenarioFinished(
                self.clock.seconds(), self.elapsed(), outcome, self.reason or outcome,
                self.failed_node.id if self.failed_node else None,
                self.failed_node.label if self.failed_node else None))

    def hang_up_live_calls(self) -> list[Deferred] | None:
        """End every call of the flow still live: None when there was none, else the
        Deferreds of the BYEs sent (CANCEL and reject need no waiting)."""
        byes: list[Deferred] = []
        any_live = False
        seen: set[str] = set()  # SIP Call-IDs: when both ends are ours, end a call once
        for (iid, call), session in self.dialogs.items():
            if session.ended or session.call_id in seen:
                continue
            seen.add(session.call_id)
            any_live = True
            dn = self.managed[iid].config.dn
            if isinstance(session, ServerSession) and not session.answered:
                session.reject(480, "Temporarily Unavailable")
                self.action(dn, f"end of the run: rejecting {call} (not answered): 480")
                continue
            if session.established:
                self.action(dn, f"end of the run: hanging up {call}: BYE")
                byes.append(session.hangup())
            else:  # hangup() of an outgoing call not answered yet is its CANCEL
                self.action(dn, f"end of the run: cancelling {call} (not answered): CANCEL")
                session.hangup()
        return byes if any_live else None

    async def pause(self, seconds: float) -> None:
        if seconds > 0:
            await task.deferLater(self.clock, seconds, lambda: None)


def _user(uri: str) -> str:
    try:
        return parse_uri(uri).user or uri
    except ValueError:
        return uri
