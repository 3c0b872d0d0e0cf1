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

Each node type is a small handler in the registry (twsip.flow.registry); media nodes are
in twsip.flow.nodes.media, hold, retrieve and transfer (and HELD, RETRIEVED, TRANSFERRED,
with how a transfer moves a callId to the new call) in twsip.flow.nodes.midcall. A node
that cannot run in its flow is refused before anything starts (`check_runnable`).

At the end (completed, failed or stopped) the engine waits `settle` seconds so that
messages in flight land in the record, ends every call of the flow that is still live (BYE,
CANCEL or 480), and with `run()` calls ``manager.cleanup()``. Only then does the result
fire and `ScenarioFinished` go out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed

from twsip.flow.events import Event, EventStream
from twsip.flow.model import ExecutionGraph, ScenarioError
from twsip.flow.registry import check_runnable
from twsip.flow.result import ScenarioResult
from twsip.flow.run import Run
from twsip.interfaces import TimeSource, UDPReactor
from twsip.manager import InstanceManager, ManagedInstance, UnknownInstance

__all__ = ["Engine", "EngineBusy"]


class EngineBusy(RuntimeError):
    """An Engine runs one scenario at a time."""


class Engine:
    """Runs scenario graphs on the instances of an `InstanceManager`.

    `reactor` is the clock for the engine's own timers (TIMEOUT nodes, node timeouts, ring
    timeouts); it defaults to the manager's reactor. Tests may pass a
    `twisted.internet.task.Clock`, or a `twsip.testing.FakeNetwork` that the manager runs on
    too, so that whole flows run in memory. `events` is the public `EventStream` (subscribe
    to it for a live view). `settle` is how long the engine waits, once every chain has
    ended, for messages still in flight before it hangs up and cleans up.
    """

    def __init__(self, manager: InstanceManager | None = None, *,
                 reactor: UDPReactor | TimeSource | None = None,
                 events: EventStream | None = None, settle: float = 0.05,
                 hangup_grace: float = 2.0) -> None:
        if manager is None:
            manager = InstanceManager(reactor=reactor)  # type: ignore[arg-type]
        self.instance_manager = manager
        self.clock: TimeSource = reactor if reactor is not None else manager.reactor
        self.events = events if events is not None else EventStream()
        self.settle = settle
        self.hangup_grace = hangup_grace
        self._run: Run | None = None

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

        For ``twistd sipinstances``: the instances stay bound and serving afterwards. An
        instance that answers calls by itself (auto-answer) goes on answering every
        caller during the run, except the flow's own calls, which go to its INCOMING
        nodes (the rule is in `Run.claim_calls`: calls from the flow's instances, and
        outside calls to an instance that no MakeCall of the flow calls while an
        INCOMING node waits on it).
        """
        return self._start(graph, owned=False)

    def stop(self, reason: str = "stopped") -> Deferred[ScenarioResult | None]:
        """Stop the current run (outcome "stopped"); fires once it has cleaned up."""
        run = self._run
        if run is None:
            return succeed(None)
        run.stop(reason)
        return run.done.wait()

    def _start(self, graph: ExecutionGraph, owned: bool) -> Deferred[ScenarioResult]:
        if self._run is not None:
            return fail(EngineBusy("this engine is already running a scenario"))
        try:
            check_runnable(graph)
            managed = self._instances_for(graph, owned)
        except Exception as exc:
            return fail(exc)
        run = self._run = Run(graph, managed, owned, self.instance_manager, self.clock,
                              self.events, self.settle, self.hangup_grace)

        def done(result: Any) -> Any:
            self._run = None
            run.done.fire(result if isinstance(result, ScenarioResult) else None)
            return result

        d = Deferred.fromCoroutine(run.execute())
        d.addBoth(done)
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
