"""``python -m twsip``: run a scenario flow file headless, over real SIP on 127.0.0.1.

    python -m twsip run FLOW.json|DIR [...] [--report OUT] [--ladder OUT] [--junit FILE]
                        [--pcap FILE] [--base-port N]
    python -m twsip demo [...same options]
    python -m twsip check FLOW.json [FLOW.json ...] [--base-port N]
    python -m twsip --version

Prints one line per event while the flow runs, then a text ladder of the real messages and
a summary. Several flows (files, or folders: their ``*.json`` in name order) run one after
another, each on fresh instances, then one line per flow and a total; the worst status is
the command's. Exit status: 0 the flow completed, 1 it failed (or was stopped, or the instances
could not be started), 2 the file is invalid or uses nodes the engine cannot run (the
message is on stderr). What a flow runs differently than written (the builder's
``register: true`` with no PBX, codecs twsip lacks, ...) is one warning line each on stderr
before it starts. ``check`` validates flows without binding a port or sending anything,
prints what each would run and its warnings, and exits 0 (all runnable) or 2.

`main(argv)` runs the reactor and returns the exit status; `run_cli(argv, reactor=...)` is
the same as a Deferred, for code (and tests) that already run a reactor, or that pass a
`twsip.testing.FakeNetwork` to run it all in memory.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any, TextIO
from collections.abc import Sequence

from twisted.internet.defer import Deferred

from twsip.cli.run import EXIT_FAILED, EXIT_INVALID, EXIT_OK, FlowJob, run_flows
from twsip.cli.twistd_options import version_text

if TYPE_CHECKING:
    from twsip.interfaces import UDPReactor

__all__ = ["EXIT_FAILED", "EXIT_INVALID", "EXIT_OK", "main", "run_cli"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m twsip",
        description="Run SIP scenario flows (the visual builder's flow JSON) headless, "
                    "with real SIP user agents on 127.0.0.1.")
    parser.add_argument("--version", action="version", version=version_text())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--report", metavar="OUT.json",
                         help="write the whole run as JSON (nodes, states, timings, "
                              "messages); with several flows a folder, one FLOW.json each")
        sub.add_argument("--ladder", metavar="OUT.html",
                         help="write the ladder as one self-contained HTML file; with "
                              "several flows a folder, one FLOW.html each")
        sub.add_argument("--junit", metavar="FILE.xml",
                         help="write JUnit XML: one testsuite per flow, one testcase per "
                              "node (Jenkins, GitLab, GitHub test reports)")
        sub.add_argument("--pcap", metavar="FILE.pcap",
                         help="write every SIP message and RTP packet as it went over the "
                              "loopback (libpcap: Wireshark, tshark, sngrep)")
        sub.add_argument("--base-port", type=_port, default=5060, metavar="N",
                         help="UDP port of the first instance, the next ones +2 each "
                              "(default 5060; 0 lets the system pick free ports)")
        sub.add_argument("--max-retries", type=int, default=10, metavar="N",
                         help="how many more ports (+2 each) to try when one is taken "
                              "(default 10)")
        sub.add_argument("--quiet", "-q", action="store_true",
                         help="do not print the live event lines, only ladder and summary")
        sub.add_argument("--no-sip", action="store_true",
                         help="leave SIP messages out of the live event lines")
        sub.add_argument("--record", metavar="DIR",
                         help="write one WAV per call leg of the audio it received into DIR "
                              "(named DN-CallID.wav)")

    run = commands.add_parser("run", help="run flow files",
                              description="Run flow files of the scenario builder, one "
                                          "after another.")
    run.add_argument("flows", nargs="+", metavar="FLOW.json",
                     help="flow files, or folders (their *.json in name order)")
    options(run)
    demo = commands.add_parser("demo", help="run the built-in demo flow",
                               description="100 calls 200, 200 answers, one second of "
                                           "talk, 100 hangs up.")
    options(demo)
    check = commands.add_parser(
        "check", help="validate flow files without running them",
        description="Validate flow files without binding a port or sending anything: "
                    "print what each would run (instances and their ports, chains, node "
                    "count) and every warning. Exit 0 when all are runnable, 2 otherwise.")
    check.add_argument("flows", nargs="+", metavar="FLOW.json", help="flow files")
    check.add_argument("--base-port", type=_port, default=5060, metavar="N",
                       help="the base port the run would use (default 5060)")
    return parser


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1-65535 (or 0), not {port}")
    return port


def _check(args: Any, stdout: TextIO, stderr: TextIO) -> int:
    """``check``: every flow judged as ``run`` would judge it; the worst status wins."""
    from twsip.flow.check import plan_flow
    from twsip.flow.model import ScenarioError, load_scenario
    from twsip.flow.registry import check_runnable

    status = EXIT_OK
    for path in args.flows:
        try:
            graph = load_scenario(path)
            check_runnable(graph)
        except ScenarioError as exc:
            print(f"{path}: INVALID: {exc}", file=stdout)
            status = EXIT_INVALID
            continue
        if not graph.instances:
            print(f"{path}: INVALID: the flow has no sipInstance node, so nothing can run",
                  file=stdout)
            status = EXIT_INVALID
            continue
        plan = plan_flow(graph, args.base_port)
        warned = f", {len(plan.warnings)} warning(s)" if plan.warnings else ""
        print(f"{path}: runnable{warned}", file=stdout)
        for line in plan.lines():
            print(line, file=stdout)
    return status


def _flow_paths(paths: Sequence[str]) -> list[str] | str:
    """Files as given, folders as their ``*.json`` in name order; or what is wrong."""
    found: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            inside = sorted(name for name in os.listdir(path) if name.endswith(".json"))
            if not inside:
                return f"{path}: a folder without any *.json flow file"
            found += [os.path.join(path, name) for name in inside]
        else:
            found.append(path)
    return found


def _check_outputs(args: Any, several: bool) -> str | None:
    """What is wrong with the output options, found before anything starts."""
    from twsip.report.pcap import check_writable

    if args.record is not None and not (os.path.isdir(args.record)
                                        and os.access(args.record, os.W_OK)):
        return f"--record {args.record}: not a folder this process can write to"
    for option in ("pcap", "junit"):
        path = getattr(args, option)
        why = check_writable(path) if path is not None else None
        if why is not None:
            return f"--{option} {path}: cannot be written ({why})"
    if several:
        for option in ("report", "ladder"):
            folder = getattr(args, option)
            if folder is None:
                continue
            if os.path.exists(folder) and not os.path.isdir(folder):
                return (f"--{option} {folder}: with several flows this is a folder (one "
                        f"file per flow), and it names a file")
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as exc:
                return f"--{option} {folder}: cannot create the folder ({exc.strerror})"
    return None


def _load(name: str, graph_source: Any) -> FlowJob:
    """One flow read and judged as ``run`` judges it; never raises."""
    from twsip.flow.model import ScenarioError, load_scenario, parse_scenario
    from twsip.flow.registry import check_runnable

    try:
        graph = (parse_scenario(graph_source) if graph_source is not None
                 else load_scenario(name))
        check_runnable(graph)
    except ScenarioError as exc:
        return FlowJob(name, error=str(exc), status=EXIT_INVALID)
    if not graph.instances:
        return FlowJob(name, error="the flow has no sipInstance node, so nothing can run",
                       status=EXIT_INVALID)
    return FlowJob(name, graph)


def _prepare(argv: Sequence[str] | None, stdout: TextIO, stderr: TextIO) -> Any:
    """Parse the command line and the flows: (args, jobs) or an exit status."""
    from twsip.flow.check import plan_flow

    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage error (or --version)
        return exc.code if isinstance(exc.code, int) else EXIT_INVALID
    if args.command == "check":
        return _check(args, stdout, stderr)
    if args.command == "demo":
        from twsip.flow.demo import DEMO_FLOW
        jobs = [_load("built-in demo", DEMO_FLOW)]
    else:
        paths = _flow_paths(args.flows)
        if isinstance(paths, str):
            print(f"twsip: {paths}", file=stderr)
            return EXIT_INVALID
        jobs = [_load(path, None) for path in paths]
    problem = _check_outputs(args, len(jobs) > 1)
    if problem is not None:
        print(f"twsip: {problem}", file=stderr)
        return EXIT_INVALID
    for job in jobs:
        if job.error is not None:
            print(f"twsip: {job.name}: {job.error}", file=stderr)
    if all(job.graph is None for job in jobs):
        return EXIT_INVALID
    if len(jobs) == 1:
        assert jobs[0].graph is not None
        for warning in plan_flow(jobs[0].graph, args.base_port).warnings:
            print(f"twsip: {jobs[0].name}: warning: {warning}", file=stderr)
    return args, jobs


def run_cli(argv: Sequence[str] | None = None, *, reactor: UDPReactor | None = None,
            stdout: TextIO | None = None, stderr: TextIO | None = None) -> Deferred[int]:
    """The CLI on a reactor that is already running; fires with the exit status."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    prepared = _prepare(argv, stdout, stderr)
    if isinstance(prepared, int):
        d: Deferred[int] = Deferred()
        d.callback(prepared)
        return d
    if reactor is None:
        from twisted.internet import reactor as global_reactor
        reactor = global_reactor  # type: ignore[assignment]
    assert reactor is not None
    args, jobs = prepared
    return Deferred.fromCoroutine(run_flows(args, jobs, reactor, stdout, stderr))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI to the end (this runs the reactor) and return the exit status."""
    stdout, stderr = sys.stdout, sys.stderr
    prepared = _prepare(argv, stdout, stderr)
    if isinstance(prepared, int):
        return prepared
    args, jobs = prepared

    from twisted.internet import reactor
    from twisted.internet.error import ReactorNotRunning
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    # Only warnings and errors reach the terminal through the logger: the run's own
    # lines are printed by the CLI.
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(stderr),
                              [LogLevelFilterPredicate(LogLevel.error)])],
        redirectStandardIO=False)
    status: list[int] = []
    engines: list = []

    def start() -> None:
        d = Deferred.fromCoroutine(run_flows(args, jobs,
                                             reactor,  # type: ignore[arg-type]
                                             stdout, stderr, engines))

        def done(result: Any) -> None:
            if isinstance(result, int):
                status.append(result)
            else:
                print(f"twsip: internal error: {result.getErrorMessage()}", file=stderr)
                status.append(EXIT_FAILED)
            try:
                reactor.stop()
            except ReactorNotRunning:  # already shutting down (Ctrl-C)
                pass

        d.addBoth(done)

    def before_shutdown() -> Any:
        # Ctrl-C: stop the run cleanly (hang up, free the ports) before the reactor goes.
        for engine in engines:
            if engine.running:
                return engine.stop("stopped: the process was interrupted (Ctrl-C or a signal)")
        return None

    reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)
    reactor.callWhenRunning(start)
    reactor.run()
    return status[0] if status else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
