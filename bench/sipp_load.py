"""SIPp's built-in uac against one auto-answering twsip instance, at stepped call rates.

For each rate, a fresh twsip process (`bench.uas_runner`) answers ``sipp -sn uac`` for N
seconds (INVITE, 100, 180, 200, ACK, BYE, 200 per call). A step is clean when SIPp exits 0
with every call successful, no failed call, no retransmission in either direction (SIPp's
``Retransmissions`` and its per-message ``*_Retrans`` counts, which include 200s that twsip
retransmitted), no timeout, no unexpected message, and the offered rate was really
generated. Stepping stops at the first unclean step; the figure is the highest clean rate.

The reference, measured in the same run and at the same rates, is SIPp's uac against
SIPp's own built-in uas. Every SIPp process binds 127.0.0.1 only (``-i 127.0.0.1``).
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import Row, child_env

REPO = Path(__file__).resolve().parent.parent
FULL_RATES = (500, 1000, 2000, 3000, 3500, 4000, 5000, 6000, 8000)
QUICK_RATES = (100,)
TARGET_RATE = 3000


def sipp_path() -> str | None:
    return shutil.which("sipp") or (os.path.exists("/usr/bin/sipp") and "/usr/bin/sipp") or None


def without_sipp(figure: str, unit: str, target: str) -> list[Row]:
    """The row of a SIPp benchmark on a machine without SIPp: skipped, saying why."""
    return [Row(figure, None, unit, target=target,
                skipped="sipp is not installed (Debian package sip-tester)")]


def step_seconds(options: dict, quick: bool) -> float:
    """How long each SIPp step lasts: `--seconds`, else 2 s quick and 10 s in full."""
    return float(options.get("seconds") or (2 if quick else 10))


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a live process, from /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def udp_drops(port: int) -> int | None:
    """Datagrams the kernel dropped for the 127.0.0.1 socket on `port` (full buffer)."""
    try:
        with open("/proc/net/udp") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 12 and fields[1] == f"0100007F:{port:04X}":
            return int(fields[-1])
    return None


@dataclass
class Step:
    peer: str
    rate: int
    seconds: float
    calls: int
    rc: int = -1
    successful: int = 0
    failed: int = 0
    retransmissions: int = 0
    timeouts: int = 0
    unexpected: int = 0
    elapsed: float = 0.0
    response_ms: float = 0.0
    peer_cpu: float = 0.0   # share of one core the answering peer used during the step
    peer_cpu_seconds: float = 0.0  # ... and its CPU time over the step (s)
    sipp_cpu: float = 0.0   # share of one core SIPp's uac used
    error: str = ""
    gc: str = ""            # the twsip runner's garbage-collector times
    peer_drops: int | None = None  # datagrams the kernel dropped at the peer's socket
    sipp_drops: int | None = None  # ... and at SIPp uac's socket
    detail: dict = field(default_factory=dict)

    @property
    def achieved(self) -> float:
        # Calls are started at `rate` for calls/rate seconds; the tail is the last call.
        return self.successful / max(self.elapsed, 1e-9)

    @property
    def clean(self) -> bool:
        return (not self.error and self.rc == 0 and self.successful == self.calls
                and self.failed == 0 and self.retransmissions == 0 and self.timeouts == 0
                and self.unexpected == 0 and self.achieved >= 0.95 * self.rate)

    def summary(self) -> str:
        verdict = "clean" if self.clean else "NOT clean"
        text = (f"{self.peer:>5} @ {self.rate:>5}/s x {self.seconds:g} s: {verdict}; "
                f"{self.successful}/{self.calls} ok, {self.failed} failed, "
                f"{self.retransmissions} retrans, {self.timeouts} timeouts, "
                f"{self.unexpected} unexpected, achieved {self.achieved:,.0f}/s, "
                f"INVITE->200 {self.response_ms:.1f} ms, "
                f"CPU peer {self.peer_cpu:.0%} sipp {self.sipp_cpu:.0%}")
        if self.peer_drops or self.sipp_drops:
            text += (f", kernel dropped {self.peer_drops or 0} datagrams at the peer's socket "
                     f"and {self.sipp_drops or 0} at SIPp's")
        if self.error:
            text += f" [{self.error}]"
        return text


def _sipp_time(text: str) -> float:
    """SIPp's ``HH:MM:SS:uuuuuu`` as milliseconds."""
    try:
        h, m, s, us = text.split(":")
        return ((int(h) * 60 + int(m)) * 60 + int(s)) * 1000 + int(us) / 1000
    except ValueError:
        return 0.0


def _last_row(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if len(lines) < 2:
        return {}
    names = lines[0].split(";")
    return dict(zip(names, lines[-1].split(";")))


def _epoch(text: str) -> float:
    try:
        return float(text.split("\t")[-1])
    except ValueError:
        return 0.0


def read_results(step: Step, workdir: Path) -> None:
    stat = workdir / "stat.csv"
    if not stat.exists():
        step.error = step.error or "SIPp wrote no statistics"
        return
    row = _last_row(stat)
    if not row:
        step.error = step.error or "SIPp statistics are empty"
        return
    step.successful = int(row.get("SuccessfulCall(C)", 0) or 0)
    step.failed = int(row.get("FailedCall(C)", 0) or 0)
    sent_retrans = int(row.get("Retransmissions(C)", 0) or 0)
    step.elapsed = _epoch(row.get("CurrentTime", "")) - _epoch(row.get("StartTime", ""))
    step.response_ms = _sipp_time(row.get("ResponseTime1(C)", ""))
    step.unexpected = (int(row.get("OutOfCallMsgs(C)", 0) or 0)
                       + int(row.get("DeadCallMsgs(C)", 0) or 0))
    # The per-message *_Retrans counts hold both what SIPp resent and the duplicates it
    # received (the peer's retransmissions); Retransmissions(C) only the former.
    counted = 0
    for counts in workdir.glob("*_counts.csv"):
        crow = _last_row(counts)
        for name, value in crow.items():
            if not value.isdigit():
                continue
            if name.endswith("_Retrans"):
                counted += int(value)
                if int(value):
                    step.detail[name] = int(value)
            elif name.endswith("_Timeout"):
                step.timeouts += int(value)
            elif name.endswith("_Unexp"):
                step.unexpected += int(value)
    step.retransmissions = max(sent_retrans, counted)


def _wait_ready(proc: subprocess.Popen, timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buffer += chunk
            if b"\n" in buffer:
                return buffer.split(b"\n", 1)[0].decode()
        if proc.poll() is not None:
            break
    raise RuntimeError(f"peer did not start: {buffer.decode(errors='replace')!r}")


def start_twsip(workdir: Path, profile: str = "", extra: tuple[str, ...] = (),
                module: str = "bench.uas_runner") -> tuple[subprocess.Popen, int]:
    env = child_env()
    cmd = [sys.executable, "-m", module, "--port", "0", *extra]
    if profile:
        cmd += ["--profile", profile]
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=open(workdir / "twsip.err", "wb"))
    line = _wait_ready(proc, 20)
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"unexpected output from the twsip runner: {line!r}")
    return proc, int(line.split()[1])


def twistd_path() -> str | None:
    """The twistd next to this Python (the venv's), if the sipinstances plugin is there."""
    candidate = Path(sys.executable).with_name("twistd")
    return str(candidate) if candidate.exists() else shutil.which("twistd")


def start_twistd(workdir: Path) -> tuple[subprocess.Popen, int]:
    """``twistd -n sipinstances --instances 1 --quiet --no-demo``: the shipped command."""
    twistd = twistd_path()
    if twistd is None:
        raise RuntimeError("twistd is not installed")
    port = free_udp_port()
    env = child_env()
    proc = subprocess.Popen(
        [twistd, "-n", "--pidfile=", "sipinstances", "--instances", "1", "--base-port",
         str(port), "--max-retries", "0", "--quiet", "--no-demo"],
        cwd=workdir, env=env, stdout=open(workdir / "twistd.out", "wb"),
        stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while udp_drops(port) is None:  # bound once the kernel lists the socket
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out = (workdir / "twistd.out").read_text(errors="replace")[-800:]
            raise RuntimeError(f"twistd sipinstances did not start on {port}: {out}")
        time.sleep(0.1)
    return proc, port


def start_sipp_uas(sipp: str, workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_udp_port()
    proc = subprocess.Popen(
        [sipp, "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-nostdin"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=open(workdir / "uas.err", "wb"))
    time.sleep(0.3)
    if proc.poll() is not None:
        raise RuntimeError(f"sipp uas exited at once with {proc.returncode}")
    return proc, port


def stop(proc: subprocess.Popen) -> str:
    """Stop a peer; the twsip runner's last words (CPU and GC lines), if any."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is None:
        return ""
    return proc.stdout.read().decode(errors="replace")


def run_step(sipp: str, peer: str, rate: int, seconds: float, workdir: Path,
             profile: str = "", extra: tuple[str, ...] = ()) -> Step:
    calls = int(rate * seconds)
    step = Step(peer, rate, seconds, calls)
    workdir.mkdir(parents=True, exist_ok=True)
    if peer == "twsip":
        server, port = start_twsip(workdir, profile, extra)
    elif peer == "twistd":
        server, port = start_twistd(workdir)
    elif peer == "floor":
        server, port = start_twsip(workdir, module="bench.floor_runner")
    else:
        server, port = start_sipp_uas(sipp, workdir)
    try:
        time.sleep(0.2)
        server_cpu = cpu_seconds(server.pid)
        uac_port = free_udp_port()
        cmd = [sipp, "-sn", "uac", f"127.0.0.1:{port}", "-i", "127.0.0.1",
               "-p", str(uac_port), "-r", str(rate), "-rp", "1000", "-m", str(calls),
               "-nostdin", "-timeout", f"{int(seconds) + 40}s", "-timeout_error",
               "-trace_stat", "-stf", "stat.csv", "-fd", "1", "-trace_counts",
               "-trace_screen", "-trace_err"]
        start = time.monotonic()
        uac = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL,
                               stderr=open(workdir / "uac.err", "wb"))
        sipp_cpu = 0.0
        while uac.poll() is None:
            sipp_cpu = cpu_seconds(uac.pid) or sipp_cpu
            drops = udp_drops(uac_port)
            step.sipp_drops = drops if drops is not None else step.sipp_drops
            time.sleep(0.05)
            if time.monotonic() - start > seconds + 60:
                uac.kill()
                step.error = "SIPp did not finish"
        wall = max(time.monotonic() - start, 1e-9)
        step.rc = uac.returncode
        step.peer_cpu_seconds = cpu_seconds(server.pid) - server_cpu
        step.peer_cpu = step.peer_cpu_seconds / wall
        step.peer_drops = udp_drops(port)
        step.sipp_cpu = sipp_cpu / wall
        if server.poll() is not None:
            step.error = f"{peer} peer died (exit {server.returncode})"
    finally:
        last_words = stop(server)
    for line in last_words.splitlines():
        if line.startswith("GC "):
            step.gc = line[3:]
    read_results(step, workdir)
    return step


def climb(sipp: str, peer: str, rates: tuple[int, ...], seconds: float, workdir: Path,
          log: list[str]) -> tuple[int, list[Step]]:
    """Run the steps in order until one is not clean; the highest clean rate and the steps."""
    best, steps = 0, []
    for rate in rates:
        step = run_step(sipp, peer, rate, seconds, workdir / f"{peer}-{rate}")
        steps.append(step)
        text = step.summary()
        if step.detail:
            text += f" {step.detail}"
        if step.gc:
            text += f"; twsip GC {step.gc}"
        log.append(text)
        print(f"  sipp: {text}", file=sys.stderr)
        if not step.clean:
            break
        best = rate
        time.sleep(1)
    return best, steps


def run(quick: bool = False, workdir: str | None = None, options: dict | None = None
        ) -> list[Row]:
    options = options or {}
    figure = "SIPp uac -> 1 twsip instance, highest clean rate"
    target = f">= {TARGET_RATE}/s for 10 s, 0 failed, 0 retrans"
    sipp = sipp_path()
    if sipp is None:
        return without_sipp(figure, "calls/s", target)
    rates = tuple(options.get("rates") or (QUICK_RATES if quick else FULL_RATES))
    seconds = step_seconds(options, quick)
    base = Path(workdir or ".") / "sipp"
    log: list[str] = []
    peer = "twistd" if options.get("peer") == "twistd" else "twsip"
    if peer == "twistd":
        figure = "SIPp uac -> twistd sipinstances (1), highest clean rate"
    best, steps = climb(sipp, peer, rates, seconds, base, log)
    ref_best, ref_steps = climb(sipp, "sipp", rates, seconds, base, log)
    # Compare like with like: the reference's rate at twsip's own best step.
    row = Row(figure, best, "calls/s", target=target,
              met=(best >= TARGET_RATE and seconds >= 10) if not quick else None,
              reference=ref_best,
              reference_label="SIPp uac -> SIPp uas, same steps",
              notes=[f"steps of {seconds:g} s at {', '.join(map(str, rates))} calls/s; "
                     f"stops at the first unclean step"] + log)
    if quick:
        row.target += " (--quick: the benchmark runs, no verdict)"
    if best == 0:
        row.notes.append("no step was clean")
    if rates and best == rates[-1]:
        row.notes.append("twsip was clean at the highest step tried: the ceiling is higher")
    row.notes.append("twsip peer: " + ("`twistd -n sipinstances --instances 1 --quiet "
                                        "--no-demo`" if peer == "twistd" else
                                        "`python -m bench.uas_runner` (InstanceManager, "
                                        "log_messages=False, auto-answer)"))
    return [row]
