"""Run SIPp (Debian package ``sip-tester``) from Twisted tests, without blocking the reactor.

`run_sipp` spawns one SIPp process through ``reactor.spawnProcess`` in a directory of the
test, bounds it with a hard deadline of our own (SIPp's ``-timeout`` waits for open calls to
end, so it alone does not stop a hung run), and reads its ``-trace_stat`` file for the counts
of successful and failed calls. `start_sipp_server` starts a SIPp UAS on a port it really
holds and says which port that is.

Every SIPp run here writes its statistics (``stat.csv``), unexpected messages
(``errors.log``) and the full SIP trace (``messages.log``) into its directory, and a failed
assertion names that directory, so a failure can be read message by message.
"""

from __future__ import annotations

import csv
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pytest
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import DatagramProtocol, ProcessProtocol

SIPP = shutil.which("sipp")
requires_sipp = pytest.mark.skipif(
    SIPP is None, reason="sipp is not on PATH (install the Debian package sip-tester)")

SCENARIOS = Path(__file__).parent / "sipp"
LOOPBACK = "127.0.0.1"

# SIPp's documented exit codes.
EXIT_CODES = {
    0: "all calls were successful",
    1: "at least one call failed",
    97: "exit on an internal command (e.g. the global -timeout)",
    99: "normal exit without any call processed",
    255: "fatal error",
    254: "fatal error binding a socket",
}


@dataclass
class SippResult:
    """How one SIPp run ended and what its statistics said."""

    args: list[str]
    workdir: Path
    exit_code: int | None
    signal: int | None
    killed: bool
    stdout: str
    stderr: str
    stats: dict[str, str] = field(default_factory=dict)

    def counter(self, name: str) -> int:
        """A cumulative counter from the stat file, e.g. ``SuccessfulCall``."""
        value = self.stats.get(f"{name}(C)")
        return int(value) if value not in (None, "") else -1

    @property
    def successful(self) -> int:
        return self.counter("SuccessfulCall")

    @property
    def failed(self) -> int:
        return self.counter("FailedCall")

    @property
    def retransmissions(self) -> int:
        return self.counter("Retransmissions")

    @property
    def nonzero_failures(self) -> dict[str, int]:
        return {name[:-3]: int(value) for name, value in self.stats.items()
                if name.startswith("Failed") and name.endswith("(C)") and value not in ("", "0")}

    def describe(self) -> str:
        """Everything a person needs to see why a run failed."""
        meaning = EXIT_CODES.get(self.exit_code, "?") if self.exit_code is not None else "none"
        lines = [
            f"sipp {' '.join(self.args)}",
            f"in {self.workdir}",
            f"exit code {self.exit_code} ({meaning}), signal {self.signal}, "
            f"killed by the test's deadline: {self.killed}",
            f"successful {self.successful}, failed {self.failed}, "
            f"retransmissions {self.retransmissions}, failures {self.nonzero_failures}",
        ]
        errors = self.workdir / "errors.log"
        if errors.exists():
            lines.append("errors.log (start):\n" + errors.read_text(errors="replace")[:3000])
        if self.stderr.strip():
            lines.append("stderr (end):\n" + self.stderr[-2000:])
        lines.append("stdout (end):\n" + self.stdout[-3000:])
        return "\n".join(lines)


class _SippProtocol(ProcessProtocol):
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.ended: Deferred[tuple[int | None, int | None]] = Deferred()

    def outReceived(self, data: bytes) -> None:  # noqa: N802
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:  # noqa: N802
        self.err.append(data)

    def processEnded(self, reason) -> None:  # noqa: N802
        value = reason.value
        if isinstance(value, (ProcessDone, ProcessTerminated)):
            self.ended.callback((value.exitCode, value.signal))
        else:  # pragma: no cover - Twisted always reports one of the two
            self.ended.callback((None, None))


class SippProcess:
    """A running SIPp; `wait()` gives its `SippResult` once it has exited."""

    def __init__(self, args: Sequence[str], workdir: Path, deadline: float) -> None:
        if SIPP is None:
            raise RuntimeError("sipp is not installed")
        self.args = list(args)
        self.workdir = workdir
        self.killed = False
        self._protocol = _SippProtocol()
        self._transport = reactor.spawnProcess(
            self._protocol, SIPP, [SIPP, *self.args], env=dict(os.environ),
            path=str(workdir))
        self.pid: int = self._transport.pid
        self._deadline = reactor.callLater(deadline, self.kill)
        self.result: SippResult | None = None
        self._waiters: list[Deferred[SippResult]] = []
        self._protocol.ended.addCallback(self._finish)
        LIVE.add(self)

    @property
    def running(self) -> bool:
        return not self._protocol.ended.called

    def kill(self) -> None:
        """Stop SIPp at once (the run then counts as failed)."""
        if self.running:
            self.killed = True
            try:
                self._transport.signalProcess("KILL")
            except Exception:  # already gone
                pass

    def _finish(self, ended: tuple[int | None, int | None]) -> None:
        LIVE.discard(self)
        if self._deadline.active():
            self._deadline.cancel()
        exit_code, signal = ended
        self.result = SippResult(
            args=self.args, workdir=self.workdir, exit_code=exit_code, signal=signal,
            killed=self.killed, stdout=b"".join(self._protocol.out).decode(errors="replace"),
            stderr=b"".join(self._protocol.err).decode(errors="replace"),
            stats=read_stats(self.workdir / "stat.csv"))
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(self.result)

    async def wait(self) -> SippResult:
        if self.result is not None:
            return self.result
        d: Deferred[SippResult] = Deferred()
        self._waiters.append(d)
        return await d


# SIPp processes not yet exited: a test's teardown kills what it left running.
LIVE: set[SippProcess] = set()


async def kill_leftovers() -> None:
    for process in list(LIVE):
        process.kill()
        await process.wait()


def read_stats(path: Path) -> dict[str, str]:
    """The last row of a SIPp ``-trace_stat`` file (``;``-separated), by column name."""
    if not path.exists():
        return {}
    with path.open(newline="", errors="replace") as f:
        rows = [row for row in csv.reader(f, delimiter=";") if row]
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1]))


def common_args(extra: Sequence[str], timeout: float) -> list[str]:
    """Options every run gets: loopback identity, no keyboard, bounded, fully traced."""
    return [
        *extra,
        "-i", LOOPBACK,
        "-nostdin",
        "-timeout", f"{timeout:g}s", "-timeout_error",
        "-trace_stat", "-stf", "stat.csv",
        "-trace_err", "-error_file", "errors.log",
        "-trace_msg", "-message_file", "messages.log",
    ]


async def run_sipp(extra: Sequence[str], workdir: Path, timeout: float = 30.0) -> SippResult:
    """Run SIPp to its end; a run still alive `timeout` + 15 s later is killed."""
    workdir.mkdir(parents=True, exist_ok=True)
    process = SippProcess(common_args(extra, timeout), workdir, deadline=timeout + 15.0)
    return await process.wait()


# -- a SIPp server on a port the test knows -----------------------------------------------------

async def system_chosen_udp_port() -> int:
    """A port the system just handed out on 127.0.0.1, released again for SIPp to take."""
    port = reactor.listenUDP(0, DatagramProtocol(), interface=LOOPBACK)
    number = port.getHost().port
    stopped = port.stopListening()
    if stopped is not None:
        await stopped
    return number


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for name in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, name))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def holds_udp_port(pid: int, port: int) -> bool | None:
    """Whether process `pid` has a UDP socket bound to `port` (None: cannot tell here).

    Until the child has exec'd SIPp it still holds the sockets it inherited at fork: those
    must not count, so the process must already be SIPp itself.
    """
    if not os.path.isdir("/proc/self/fd"):
        return None
    try:
        if os.path.realpath(f"/proc/{pid}/exe") != os.path.realpath(SIPP or ""):
            return False
        inodes = _socket_inodes(pid)
        with open(f"/proc/{pid}/net/udp") as f:
            table = f.read().splitlines()[1:]
    except OSError:
        return None
    for line in table:
        fields = line.split()
        if len(fields) > 9 and int(fields[1].rpartition(":")[2], 16) == port \
                and fields[9] in inodes:
            return True
    return False


async def start_sipp_server(extra: Sequence[str], workdir: Path, timeout: float = 60.0,
                            attempts: int = 3) -> tuple[SippProcess, int]:
    """Start a SIPp server and return it with the port it listens on, once it listens.

    The port is one the system just handed out and released, so another process may take
    it first: SIPp then exits (254, cannot bind). Readiness is read from /proc (SIPp holds a
    socket bound to the port); a SIPp that does not get there is stopped and started again
    on a new port. Without /proc the port is trusted (the callers retransmit).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    for attempt in range(attempts):
        port = await system_chosen_udp_port()
        process = SippProcess(common_args([*extra, "-p", str(port)], timeout), workdir,
                              deadline=timeout + 15.0)
        for _ in range(250):  # up to ~5 s for SIPp to bind
            if not process.running:
                break
            held = holds_udp_port(process.pid, port)
            if held is None:
                return process, port
            if held:
                return process, port
            await task.deferLater(reactor, 0.02, lambda: None)
        process.kill()
        result = await process.wait()
        if attempt == attempts - 1:
            raise RuntimeError(f"SIPp did not listen on 127.0.0.1:{port}\n" + result.describe())
    raise AssertionError("unreachable")
