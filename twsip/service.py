"""``twistd sipinstances``: SIP instances on 127.0.0.1 as a Twisted service.

Start = create every instance of a graph (``--instances N`` plain phones or the
``sipInstance`` nodes of a ``--scenario`` flow file) and serve: each one answers the calls
it gets (180, then 200 with SDP) and ends the dialog when the caller hangs up. Stop =
``InstanceManager.cleanup()``: every call ended, every port closed, every timer cancelled.

Once the instances serve, a ``--scenario`` flow runs once on them; without one, the
built-in demo flow (100 calls 200, one second of talk, hang-up) runs once so the first
start shows a real ladder (``--no-demo`` turns it off). Either way the instances keep
serving afterwards. Anything else that should run then hangs off `when_serving`.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import os
import sys
from typing import Any, Callable, Mapping, Protocol

from twisted.application import service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger
from twisted.python import usage

from twsip.cli.instruments import Instruments, serve_with_modes
from twsip.cli.pbx_options import PbxOptions, PbxSettings, listens_tcp, pbx_settings, with_pbx
from twsip.cli.twistd_options import TesterOptions, TesterSettings, tester_settings
from twsip.flow.demo import demo_graph
from twsip.flow.engine import Engine
from twsip.flow.events import EventStream
from twsip.flow.model import ExecutionGraph, ScenarioError, graph_for_instances, load_scenario
from twsip.flow.registry import check_pbx, check_runnable
from twsip.flow.result import ScenarioResult
from twsip.interfaces import UDPReactor
from twsip.manager import LOCAL_HOST, InstanceManager
from twsip.outcome import Outcome
from twsip.report.jsonreport import summary_text
from twsip.report.ladder import text_ladder
from twsip.sip.limits import DEFAULT_MAX_CALL_SECONDS, DEFAULT_MAX_CALLS
from twsip.sip.overload import DEFAULT_MAX_DELAY, OverloadSettings
from twsip.sip.transaction import TimerSettings

__all__ = ["Options", "SipInstancesService", "makeService", "DEFAULT_INSTANCES", "log_result",
           "run_once_serving"]

log = Logger(namespace="twsip.service")

DEFAULT_INSTANCES = 2


def _whole_number(low: int, high: int, what: str, doc: str) -> Callable[[str], int]:
    """A usage.Options coercer: a whole number from `low` to `high`, or a clear error."""

    def coerce(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError(f"not a whole number: {value!r}") from None
        if not low <= number <= high:
            raise ValueError(f"{what}, not {number}")
        return number

    coerce.coerceDoc = doc  # type: ignore[attr-defined]
    return coerce


_count = _whole_number(1, 1_000_000, "at least 1 instance", "A whole number, at least 1.")
_port = _whole_number(0, 65535, "a port is 1-65535 (or 0 for ports the system picks)",
                      "0 lets the system pick a free port for each instance.")
_retries = _whole_number(0, 1_000_000, "retries cannot be negative", "A whole number.")
_max_calls = _whole_number(0, 100_000_000, "the call limit cannot be negative",
                           "A whole number; 0 means no limit.")
_max_call_seconds = _whole_number(0, 100_000_000, "seconds cannot be negative",
                                  "Whole seconds; 0 means no limit.")


class Options(TesterOptions, PbxOptions):
    """The command line of ``twistd sipinstances`` (the tester options: `TesterOptions`)."""

    synopsis = ("[--instances N | --scenario FILE] [--base-port PORT] [--quiet] "
                "[--answer DN=MODE ...] [--media silence|echo|tone] [--pcap FILE] "
                "[--stats SECONDS]")
    longdesc = (
        "Runs SIP user agents on 127.0.0.1, one UDP port each (base port, +2, +4, ...). "
        "Each answers incoming calls (180 Ringing, then 200 OK with SDP) and ends the call "
        "when the caller hangs up, so SIPp or a softphone can call it: "
        "sipp -sn uac 127.0.0.1:5060. Local mode only: nothing is sent outside 127.0.0.0/8."
    )
    optParameters = [
        ["instances", None, None,
         f"Number of instances, with DNs 100, 200, 300, ... [default: {DEFAULT_INSTANCES}]",
         _count],
        ["scenario", "s", None,
         "A flow JSON file of the scenario builder: one instance per sipInstance node "
         "(instead of --instances)."],
        ["base-port", "p", 5060, "UDP port of the first instance; the next ones +2 each.",
         _port],
        ["max-retries", "r", 10,
         "How many more ports (in +2 steps) to try when a port is taken.", _retries],
        ["host", None, LOCAL_HOST,
         "Address to bind; only 127.0.0.1 (local mode)."],
    ]
    # How many calls an instance holds and for how long (twsip.sip.limits).
    optParameters += [
        ["max-calls", None, DEFAULT_MAX_CALLS,
         "Most calls up at once per instance; a new INVITE beyond it gets 503 with "
         "Retry-After.", _max_calls],
        ["max-call-seconds", None, int(DEFAULT_MAX_CALL_SECONDS),
         "An auto-answered call still up after this many seconds is ended with BYE.",
         _max_call_seconds],
    ]
    # Overload control (twsip.sip.overload): shed new calls 503 while datagrams wait.
    optParameters += [
        ["overload-delay", None, int(DEFAULT_MAX_DELAY * 1000),
         "Milliseconds a datagram may wait in an instance's socket queue before new "
         "INVITEs are answered 503 with Retry-After.",
         _whole_number(1, 100_000, "the delay is 1-100000 ms", "Whole milliseconds.")],
    ]
    optFlags = [
        ["no-overload-control", None,
         "Never shed new calls with 503 under overload (raw behaviour)."],
        ["quiet", "q", "Log only start, stop and errors, not every SIP message."],
        ["trace", None, "Log the full text of every SIP message too (debug level)."],
        ["no-demo", None, "Do not run the built-in demo call at start-up."],
    ]

    def postOptions(self) -> None:
        host = self["host"]
        if host != LOCAL_HOST:
            raise usage.UsageError(
                f"--host {host}: twsip runs in local mode only and binds {LOCAL_HOST}; "
                f"no other address or name is accepted")
        path = self["scenario"]
        if path is not None:
            if self["instances"] is not None:
                raise usage.UsageError("give --instances or --scenario, not both")
            try:
                graph = load_scenario(path)
            except ScenarioError as exc:
                raise usage.UsageError(f"--scenario {path}: {exc}") from None
            if not graph.instances:
                raise usage.UsageError(f"--scenario {path}: the flow has no sipInstance node")
            try:
                check_runnable(graph)
            except ScenarioError as exc:
                raise usage.UsageError(f"--scenario {path}: {exc}") from None
        else:
            if self["instances"] is None:
                self["instances"] = DEFAULT_INSTANCES
            graph = graph_for_instances(self["instances"])
        self["graph"] = graph
        self.check_testers(graph)
        self.check_pbx()
        for config in with_pbx(graph.configs, self["pbx"]):
            if config.register and config.pbx_host:
                try:
                    check_pbx(config)
                except ScenarioError as exc:
                    raise usage.UsageError(str(exc)) from None


class ServiceReactor(UDPReactor, Protocol):
    """What the service runs on: UDP ports and timers for the instances, and a way to
    stop the reactor when there is nothing to serve."""

    def callWhenRunning(self, callable: Callable[..., Any],  # noqa: N802
                        *args: object, **kw: object) -> Any: ...

    def stop(self) -> None: ...


class SipInstancesService(service.Service):
    """Creates and serves the instances of `graph` while running; cleans all up on stop.

    `manager` is the running `InstanceManager` (None before the first start). A failure
    to create the instances (a port taken, ...) is logged as one error line, leaves no port
    open, and fails `when_serving()`; with `stop_reactor_on_failure` (as under twistd) the
    reactor is stopped too, since there is nothing to serve.
    """

    name = "sipinstances"

    def __init__(self, graph: ExecutionGraph, *, base_port: int = 5060,
                 max_retries: int = 10, host: str = LOCAL_HOST, log_messages: bool = True,
                 trace_messages: bool = False, run_graph: bool = False,
                 demo: bool = False, freeze_gc: bool = False,
                 auto_answer: bool = True, stop_reactor_on_failure: bool = False,
                 exit_status_on_failure: bool = False,
                 timers: TimerSettings | None = None,
                 reactor: ServiceReactor | None = None,
                 max_calls: int = DEFAULT_MAX_CALLS,
                 max_call_seconds: float = DEFAULT_MAX_CALL_SECONDS,
                 testers: TesterSettings | None = None,
                 pbx: PbxSettings | None = None,
                 overload: OverloadSettings | None = None, listen_tcp: bool = False) -> None:
        self.graph = graph
        self.listen_tcp = listen_tcp  # --transport udp,tcp
        self.pbx = pbx  # --register: the PBX of instances whose node names none
        self.overload = overload  # when the instances shed new calls (None: defaults)
        self.base_port = base_port
        self.max_retries = max_retries
        self.host = host
        self.log_messages = log_messages
        self.trace_messages = trace_messages
        self.run_graph = run_graph
        self.demo = demo
        self.freeze_gc = freeze_gc
        self.engine: Engine | None = None
        self.flow_done: Deferred | None = None  # fires with the flow's result (or None)
        self.auto_answer = auto_answer
        self.stop_reactor_on_failure = stop_reactor_on_failure
        self.exit_status_on_failure = exit_status_on_failure
        self.timers = timers
        self._reactor = reactor
        self.max_calls = max_calls
        self.max_call_seconds = max_call_seconds
        self.testers = testers or TesterSettings()
        self.instruments: Instruments | None = None
        self.manager: InstanceManager | None = None
        self.failure: Exception | None = None
        self._serving = Outcome()  # fires with the manager or the creation error
        self._registering: Deferred[None] | None = None  # --register, before serving

    # -- the hook for what runs once the instances serve -----------------------------------
    def when_serving(self) -> Deferred[InstanceManager]:
        """A new Deferred: fires with the manager once every instance serves.

        It fails with the creation error if the instances could not be created. Each call
        gets its own Deferred, so one waiter's callbacks never change what another sees.
        """
        return self._serving.wait()

    def _settle(self) -> None:
        self._serving.fire(self.failure if self.failure is not None else self.manager)

    # -- IService ------------------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        self.failure = None
        if self._serving.done:  # a new start, after a stop
            self._serving = Outcome()
        try:
            self.manager = InstanceManager(
                self.base_port, self.max_retries, self.host, reactor=self._reactor,
                timers=self.timers, log_messages=self.log_messages,
                trace_messages=self.trace_messages, max_calls=self.max_calls,
                max_call_seconds=self.max_call_seconds, media=self.testers.media,
                record_dir=self.testers.record_dir, overload=self.overload,
                listen_tcp=self.listen_tcp)
            configs = with_pbx(self.graph.configs, self.pbx)
            created = self.manager.create_instances(configs)
        except Exception as exc:  # InstanceCreationError, PortAllocationError, ValueError
            self._start_failed(exc)
            return
        if any(c.register and c.pbx_host for c in configs):
            # Serving starts once every binding is in place; a refusal is a start failure.
            manager = self.manager
            d = self._registering = Deferred.fromCoroutine(manager.register(created))
            d.addCallbacks(lambda _: self._serve(created),
                           lambda f: self._registration_failed(manager, f))
            return
        self._serve(created)

    def _registration_failed(self, manager: InstanceManager, failure: Any) -> object:
        """Nothing stays registered or bound, then the usual one-line start failure
        (a stop while registering cancelled it: stopService cleans up then)."""
        self._registering = None
        if failure.check(CancelledError):
            return None
        exc = failure.value
        if self.manager is manager:
            self.manager = None
        d = manager.cleanup()
        d.addCallback(lambda _: self._start_failed(exc))
        return d

    def _serve(self, created: list[Any]) -> None:
        self._registering = None
        assert self.manager is not None
        self._start_instruments(created)
        serve_with_modes(self.manager, self.auto_answer, self.testers.answers,
                         self.testers.default)
        for managed in created:
            log.info("DN {dn} ({label}) answers at sip:{dn}@{host}:{port}",
                     dn=managed.config.dn, label=managed.config.label, host=self.host,
                     port=managed.port)
        log.info("serving {count} SIP instance(s) on {host}{auto}{quiet}",
                 count=len(created), host=self.host,
                 auto=", answering every call" if self.auto_answer else "",
                 quiet="" if self.log_messages else " (quiet: SIP messages not logged)")
        self._settle()
        if self.freeze_gc:
            freeze_startup_objects()
        self._run_flow()

    def _start_instruments(self, created: list[Any]) -> None:
        """--pcap and --stats: watch every instance from before it serves."""
        testers = self.testers
        if testers.pcap is None and testers.stats is None:
            return
        reactor = self._reactor if self._reactor is not None else _global_reactor()
        self.instruments = Instruments(reactor, pcap=testers.pcap, stats=testers.stats)
        for managed in created:
            self.instruments.attach(managed)
        for dn, mode in testers.answers.items():
            log.info("DN {dn} answers calls: {mode}", dn=dn, mode=str(mode))

    def _stop_instruments(self, _: object = None) -> None:
        instruments, self.instruments = self.instruments, None
        if instruments is not None:
            instruments.close()

    def _run_flow(self) -> None:
        """Run the scenario (or the demo) once on the serving instances."""
        assert self.manager is not None
        if self.run_graph:
            flow = self.graph
        elif self.demo and len(self.graph.instances) >= 2:
            dns = [chain.config.dn for chain in self.graph.instances]
            flow = demo_graph(dns[0], dns[1])
        else:
            return
        # SIP messages are the instances' to log (one line each unless --quiet); the flow
        # adds its node events and, at the end, the ladder of every message.
        self.engine = Engine(self.manager, reactor=self._reactor,
                             events=EventStream(log_sip=False))
        self.flow_done = run_once_serving(self.manager, flow, engine=self.engine)

    def _start_failed(self, exc: Exception) -> None:
        self.failure = exc
        log.error("could not start the SIP instances: {error}{stopping}", error=str(exc),
                  stopping="; nothing to serve: stopping" if self.stop_reactor_on_failure
                  else "")
        self._settle()
        if self.stop_reactor_on_failure:
            reactor = self._reactor if self._reactor is not None else _global_reactor()
            reactor.callWhenRunning(_stop_reactor, reactor)
        if self.stop_reactor_on_failure and self.exit_status_on_failure \
                and not _exit_registered:
            _exit_registered.append(True)
            atexit.register(exit_failed)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._serving.done:  # when_serving() now waits for the next start
            self._serving = Outcome()
        if self._registering is not None:
            self._registering.cancel()
        manager = self.manager
        if manager is None or not manager.instances:
            self._stop_instruments()
            return succeed(None)
        count = len(manager.instances)
        log.info("stopping {count} SIP instance(s)", count=count)
        engine, self.engine = self.engine, None
        d: Deferred[Any] = engine.stop("service stopping") if engine is not None \
            else succeed(None)
        d.addBoth(lambda _: manager.cleanup())
        d.addBoth(self._stop_instruments)

        def stopped(_: object) -> None:
            log.info("stopped: {count} SIP instance(s) closed, every port freed", count=count)

        d.addCallback(stopped)
        return d


def log_result(result: ScenarioResult, logger: Logger | None = None) -> None:
    """Log a finished run's ladder and summary through twisted.logger (one event each)."""
    logger = logger or log
    logger.info("scenario ladder:\n{ladder}", ladder=text_ladder(result))
    logger.info("{summary}", summary=summary_text(result), outcome=result.outcome)


def run_once_serving(manager: InstanceManager, graph: ExecutionGraph, *,
                     engine: Engine | None = None, log_ladder: bool = True,
                     ) -> Deferred[ScenarioResult | None]:
    """Run `graph` once on the manager's serving instances and log it all; they keep serving.

    For ``twistd sipinstances`` (``--scenario FLOW.json`` and the start-up demo). The events
    go to twisted.logger (SIP messages only when the manager does not log them itself
    already), then the ladder and the summary. Never fails: a flow that cannot run (refused
    nodes, a DN the service does not run) is logged as an error and the Deferred fires with
    None. Pass your own `engine` to be able to ``engine.stop()`` the run from stopService.
    """
    if engine is None:
        engine = Engine(manager, events=EventStream(log_sip=not manager.log_messages))

    def logged(result: ScenarioResult) -> ScenarioResult:
        if log_ladder:
            log_result(result)
        return result

    def refused(failure: Any) -> None:
        log.error("scenario not run: {error}", error=failure.getErrorMessage())
        return None

    d: Deferred[Any] = engine.run_on_serving(graph)
    d.addCallbacks(logged, refused)
    return d


def freeze_startup_objects() -> None:
    """Move everything alive now into the collector's permanent generation.

    What exists once the instances serve (Twisted, the modules, the instances themselves)
    lives as long as the process; full collections under load need not walk it again and
    again. Measured with SIPp at 3000 calls/s: the longest collection pause fell from about
    120 ms to 65-85 ms, and with it the bursts that overflow the caller's socket buffer.
    """
    gc.collect()
    gc.freeze()


_exit_registered: list[bool] = []


def exit_failed() -> None:
    """End the process with status 1 once twistd has finished its own shutdown.

    A service cannot set twistd's exit status, and twistd returns normally (status 0)
    after the reactor stops. Registered with atexit only when the start failed, this runs
    after twistd has removed its pid file and flushed and closed its log; it flushes what
    is left on stdio and leaves with 1, so that scripts and service managers see the
    failure.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(1)


def _global_reactor() -> ServiceReactor:
    # Imported when needed, so that twistd has installed the reactor it was asked for.
    from twisted.internet import reactor
    return reactor  # type: ignore[return-value]


def _stop_reactor(reactor: ServiceReactor) -> None:
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass


def makeService(options: Mapping[str, Any]) -> SipInstancesService:  # noqa: N802 (twistd's name)
    """The service for parsed `Options` (twistd calls this)."""
    graph = options.get("graph")
    if graph is None:
        graph = graph_for_instances(options.get("instances") or DEFAULT_INSTANCES)
    return SipInstancesService(
        graph,
        base_port=options["base-port"],
        max_retries=options["max-retries"],
        host=options["host"],
        log_messages=not options["quiet"],
        trace_messages=bool(options["trace"]) and not options["quiet"],
        run_graph=options.get("scenario") is not None,
        demo=not options.get("no-demo"),
        freeze_gc=True,
        stop_reactor_on_failure=True,
        exit_status_on_failure=True,
        max_calls=options.get("max-calls", DEFAULT_MAX_CALLS),
        max_call_seconds=options.get("max-call-seconds", DEFAULT_MAX_CALL_SECONDS),
        testers=tester_settings(options),
        pbx=pbx_settings(options), listen_tcp=listens_tcp(options),
        overload=OverloadSettings(
            enabled=not options.get("no-overload-control"),
            max_delay=options.get("overload-delay", DEFAULT_MAX_DELAY * 1000) / 1000),
    )
