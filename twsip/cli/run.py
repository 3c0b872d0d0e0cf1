"""``python -m twsip run``/``demo`` once the command line is judged: one flow after another
on fresh instances, each with its live lines, ladder and summary; then, for several, one
line per flow and a total; the reports; the worst exit status.

`FlowJob` is one flow as `twsip.__main__` prepared it: its graph, or why it cannot run.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, TextIO

from twsip.cli.instruments import Instruments, ObservedManager
from twsip.cli.progress import Progress
from twsip.flow.model import ExecutionGraph, ScenarioError
from twsip.flow.result import ScenarioResult
from twsip.interfaces import UDPReactor
from twsip.report.junit import SuiteEntry, write_junit

__all__ = ["EXIT_FAILED", "EXIT_INVALID", "EXIT_OK", "FlowJob", "output_path", "run_flows"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2


@dataclass
class FlowJob:
    """One flow of the command: `graph` to run, or `error` (the file is invalid)."""

    name: str
    graph: ExecutionGraph | None = None
    error: str | None = None
    status: int = EXIT_OK
    result: ScenarioResult | None = None
    started: float | None = None


def output_path(option: str, job: FlowJob, jobs: list[FlowJob], suffix: str) -> str:
    """Where a --report/--ladder of `job` goes: the path itself for a single flow, else a
    file in that folder named after the flow (numbered when two flows share a name)."""
    if len(jobs) == 1:
        return option
    stem = os.path.splitext(os.path.basename(job.name))[0] or "flow"
    same = [j for j in jobs if os.path.splitext(os.path.basename(j.name))[0] == stem]
    if len(same) > 1:
        stem = f"{stem}-{same.index(job) + 1}"
    return os.path.join(option, stem + suffix)


async def run_flows(args: Any, jobs: list[FlowJob], reactor: UDPReactor, stdout: TextIO,
                    stderr: TextIO, engines: list | None = None) -> int:
    """Run every runnable job in order; the worst status (2 > 1 > 0)."""
    instruments = Instruments(reactor, pcap=getattr(args, "pcap", None))
    try:
        for number, job in enumerate(jobs, 1):
            if job.graph is None:
                continue
            if len(jobs) > 1:
                stdout.write(f"{'' if number == 1 else chr(10)}=== {job.name} "
                             f"({number}/{len(jobs)}) ===\n")
                stdout.flush()
            job.started = time.time()
            job.status = await _run_one(args, job, jobs, reactor, stdout, stderr, engines,
                                        instruments)
    finally:
        instruments.close()
    if len(jobs) > 1:
        stdout.write("\n" + suite_summary(jobs) + "\n")
        stdout.flush()
    status = max(job.status for job in jobs)
    junit = getattr(args, "junit", None)
    if junit:
        try:
            write_junit([SuiteEntry(j.name, j.result, j.error, j.started) for j in jobs], junit)
            stdout.write(f"JUnit XML written to {junit}\n")
        except OSError as exc:
            print(f"twsip: cannot write {exc.filename}: {exc.strerror}", file=stderr)
            status = max(status, EXIT_FAILED)
    if getattr(args, "pcap", None):
        stdout.write(f"pcap written to {args.pcap}\n")
    return status


def suite_summary(jobs: list[FlowJob]) -> str:
    """One line per flow and a total, for a command that ran several."""
    words = {EXIT_OK: "PASS", EXIT_FAILED: "FAIL", EXIT_INVALID: "INVALID"}
    lines = []
    for job in jobs:
        if job.result is not None:
            how = f"{job.result.outcome} in {job.result.duration:.3f} s: {job.result.reason}"
        else:
            how = job.error or "not run"
        lines.append(f"{words.get(job.status, 'FAIL'):<7} {job.name}: {how}")
    counts = {word: sum(1 for j in jobs if words.get(j.status, "FAIL") == word)
              for word in ("PASS", "FAIL", "INVALID")}
    lines.append(f"Total: {len(jobs)} flow(s): {counts['PASS']} passed, {counts['FAIL']} "
                 f"failed, {counts['INVALID']} invalid")
    return "\n".join(lines)


async def _run_one(args: Any, job: FlowJob, jobs: list[FlowJob], reactor: UDPReactor,
                   stdout: TextIO, stderr: TextIO, engines: list | None,
                   instruments: Instruments) -> int:
    from twsip.flow.check import plan_flow
    from twsip.flow.engine import Engine
    from twsip.flow.events import ScenarioWarning, SipMessage, format_event
    from twsip.report.jsonreport import summary_text, write_report
    from twsip.report.ladder import text_ladder, write_html_ladder

    graph, name = job.graph, job.name
    assert graph is not None
    warnings = plan_flow(graph, args.base_port).warnings
    if len(jobs) > 1:  # a single flow's warnings were printed before the reactor ran
        for warning in warnings:
            print(f"twsip: {name}: warning: {warning}", file=stderr)
    manager = ObservedManager(base_port=args.base_port, max_retries=args.max_retries,
                              reactor=reactor, record_dir=args.record,
                              on_instance=instruments.attach)
    engine = Engine(manager, reactor=reactor)
    warned = {str(warning) for warning in warnings}
    if engines is not None:
        engines[:] = [engine]
    progress = Progress(stderr, os.path.basename(name), len(graph.nodes), reactor.seconds)
    same_terminal = progress.enabled and getattr(stdout, "isatty", lambda: False)()

    def show(event: Any) -> None:
        if args.no_sip and isinstance(event, SipMessage):
            return
        if isinstance(event, ScenarioWarning) and event.text in warned:
            return  # said on stderr before the run started
        if same_terminal:
            progress.clear()
        stdout.write(format_event(event) + "\n")
        stdout.flush()

    if not args.quiet:
        engine.subscribe(show)
    engine.subscribe(progress.event)
    try:
        result = await engine.run(graph)
    except ScenarioError as exc:
        print(f"twsip: {name}: {exc}", file=stderr)
        job.error = str(exc)
        return EXIT_INVALID
    except Exception as exc:  # InstanceCreationError: ports, ...
        print(f"twsip: {name}: {exc}", file=stderr)
        job.error = str(exc)
        return EXIT_FAILED
    finally:
        progress.clear()
    job.result = result
    stdout.write("\n" + text_ladder(result) + "\n\n" + summary_text(result) + "\n")
    stdout.flush()
    try:
        if args.report:
            path = output_path(args.report, job, jobs, ".json")
            write_report(result, path, flow=name)
            stdout.write(f"report written to {path}\n")
        if args.ladder:
            path = output_path(args.ladder, job, jobs, ".html")
            write_html_ladder(result, path)
            stdout.write(f"HTML ladder written to {path}\n")
    except OSError as exc:
        print(f"twsip: cannot write {exc.filename}: {exc.strerror}", file=stderr)
        return EXIT_FAILED
    return EXIT_OK if result.ok else EXIT_FAILED
