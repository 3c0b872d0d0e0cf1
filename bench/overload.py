"""Overload: SIPp offers twice the clean rate to one twsip instance; does it shed or collapse?

One twsip process (`bench.uas_runner`, overload control on as shipped) is called by a SIPp
uac that accepts ``503`` as an answer (it ACKs it and ends the call: see `SCENARIO`) at
2x the clean rate for N seconds. Meanwhile an OPTIONS prober in this process sends one
OPTIONS every 0.1 s to the same instance and times each answer. Once SIPp is done and one
second has passed, a normal step (``sipp -sn uac`` at the clean rate, N/2 s) goes to the
*same* twsip process, judged like `bench.sipp_load`'s steps.

Issue 14's targets: goodput (calls answered 200 per second while overloaded) >= 90% of the
clean rate; >= 90% of the OPTIONS probes answered within 0.3 s; the normal step afterwards
clean. With ``--no-overload`` in the options the same run measures the raw behaviour
(`uas_runner --no-overload-control`) for comparison.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import Row, loadavg
from .sipp_load import (Step, cpu_seconds, free_udp_port, read_results, sipp_path,
                        start_twsip, step_seconds, stop, udp_drops, without_sipp,
                        _last_row)

CLEAN_RATE = 3000  # BENCHMARKS.md: twsip's (and SIPp uac's) highest clean rate here
QUICK_CLEAN_RATE = 100
PROBE_EVERY = 0.1
PROBE_DEADLINE = 0.3

# SIPp's uac with 503 as a possible answer: the ACK of a non-2xx final response belongs to
# the INVITE's transaction, so it copies the response's Via (same branch), From, To (tag).
SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uac that takes 503 for an answer">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Subject: Performance Test
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="503" optional="true" next="shed"/>
  <recv response="200" rtd="true"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Subject: Performance Test
      Content-Length: 0
    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      BYE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: [service] <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Subject: Performance Test
      Content-Length: 0
    ]]>
  </send>
  <recv response="200" crlf="true" next="done"/>
  <label id="shed"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <label id="done"/>
</scenario>
"""


class OptionsProber:
    """Sends OPTIONS every `every` s to `target` from a socket of its own, in a thread,
    and records how long each answer took (None: never answered)."""

    def __init__(self, port: int, every: float = PROBE_EVERY) -> None:
        self.port = port
        self.every = every
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.02)
        self.sent: dict[str, float] = {}
        self.rtt: dict[str, float] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, daemon=True),
                         threading.Thread(target=self._receive, daemon=True)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _send(self) -> None:
        local = self.sock.getsockname()[1]
        n = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            n += 1
            call_id = f"probe{n}-{local}"
            data = (f"OPTIONS sip:probe@127.0.0.1:{self.port} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bKprobe{n}x{local};rport\r\n"
                    f"Max-Forwards: 70\r\nFrom: <sip:prober@127.0.0.1:{local}>;tag=p{n}\r\n"
                    f"To: <sip:probe@127.0.0.1:{self.port}>\r\nCall-ID: {call_id}\r\n"
                    f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
            self.sent[call_id] = time.monotonic()
            self.sock.sendto(data, ("127.0.0.1", self.port))
            next_at += self.every
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except OSError:  # timeout: look at the stop flag again
                continue
            now = time.monotonic()
            for line in data.split(b"\r\n"):
                if line.lower().startswith(b"call-id:"):
                    call_id = line.split(b":", 1)[1].strip().decode()
                    if call_id in self.sent and call_id not in self.rtt:
                        self.rtt[call_id] = now - self.sent[call_id]

    def stop(self, linger: float = PROBE_DEADLINE + 0.2) -> None:
        time.sleep(linger)  # the last probes' answers may still come
        self._stop.set()
        for thread in self._threads:
            thread.join(1)
        self.sock.close()

    def within(self, deadline: float = PROBE_DEADLINE) -> tuple[int, int]:
        """(answered within `deadline`, probes sent)."""
        return sum(1 for r in self.rtt.values() if r <= deadline), len(self.sent)

    def worst(self) -> float | None:
        late = [self.rtt.get(c, float("inf")) for c in self.sent]
        return max(late) if late else None


@dataclass
class OverloadRun:
    clean_rate: int
    offered: int
    seconds: float
    control: bool
    answered: int = 0     # calls that got 200 (goodput)
    shed: int = 0         # calls answered 503
    failed: int = 0
    retransmissions: int = 0
    elapsed: float = 0.0
    achieved_offer: float = 0.0
    probes_ok: int = 0
    probes: int = 0
    probe_worst: float | None = None
    twsip_cpu: float = 0.0
    drops: int | None = None
    after: Step | None = None
    load: str = ""
    notes: list[str] = field(default_factory=list)
    gc: str = ""  # the twsip process's garbage collector over the whole run (both steps)

    @property
    def goodput(self) -> float:
        return self.answered / max(self.seconds, 1e-9)

    @property
    def probe_share(self) -> float:
        return self.probes_ok / max(self.probes, 1)

    def summary(self) -> str:
        worst = "never" if self.probe_worst in (None, float("inf")) else \
            f"{self.probe_worst * 1000:.0f} ms"
        after = self.after.summary() if self.after else "not run"
        return (f"overload control {'on' if self.control else 'OFF'}: offered "
                f"{self.offered}/s x {self.seconds:g} s (SIPp reached "
                f"{self.achieved_offer:,.0f}/s): {self.answered} answered 200 "
                f"({self.goodput:,.0f}/s = {self.goodput / self.clean_rate:.0%} of the clean "
                f"rate {self.clean_rate}/s), {self.shed} shed 503, {self.failed} failed, "
                f"{self.retransmissions} retrans; OPTIONS within 0.3 s {self.probes_ok}/"
                f"{self.probes} (worst {worst}); twsip CPU {self.twsip_cpu:.0%}; kernel "
                f"drops at twsip {self.drops}; load {self.load}; normal step 1 s later: "
                f"{after}; twsip GC over both: {self.gc}")


def _counts(workdir: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for path in workdir.glob("*_counts.csv"):
        for name, value in _last_row(path).items():
            if value.isdigit():
                out[name] = out.get(name, 0) + int(value)
    return out


def overload_run(sipp: str, clean_rate: int, seconds: float, workdir: Path,
                 control: bool = True) -> OverloadRun:
    run = OverloadRun(clean_rate, 2 * clean_rate, seconds, control)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "uac_503.xml").write_text(SCENARIO)
    extra = () if control else ("--no-overload-control",)
    server, port = start_twsip(workdir, extra=extra)
    load_before = loadavg()
    try:
        time.sleep(0.2)
        cpu0 = cpu_seconds(server.pid)
        prober = OptionsProber(port)
        calls = int(run.offered * seconds)
        cmd = [sipp, f"127.0.0.1:{port}", "-sf", "uac_503.xml", "-i", "127.0.0.1",
               "-p", str(free_udp_port()), "-r", str(run.offered), "-rp", "1000",
               "-m", str(calls), "-l", str(max(calls, 1)), "-nostdin", "-timeout",
               f"{int(seconds) + 40}s", "-trace_stat", "-stf", "stat.csv", "-fd", "1",
               "-trace_counts", "-trace_err"]
        start = time.monotonic()
        uac = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL,
                               stderr=open(workdir / "uac.err", "wb"))
        prober.start()
        offered_done = start + seconds
        while uac.poll() is None:
            time.sleep(0.05)
            if time.monotonic() > offered_done and prober.sent and not prober._stop.is_set():
                prober.stop(linger=0.5)  # probe while the offered load lasts
            if time.monotonic() - start > seconds + 60:
                uac.kill()
                run.notes.append("SIPp did not finish")
        if not prober._stop.is_set():
            prober.stop()
        run.twsip_cpu = (cpu_seconds(server.pid) - cpu0) / max(time.monotonic() - start, 1e-9)
        run.drops = udp_drops(port)
        run.probes_ok, run.probes = prober.within()
        run.probe_worst = prober.worst()
        row = _last_row(workdir / "stat.csv") if (workdir / "stat.csv").exists() else {}
        run.failed = int(row.get("FailedCall(C)", 0) or 0)
        run.retransmissions = int(row.get("Retransmissions(C)", 0) or 0)
        created = int(row.get("OutgoingCall(C)", 0) or row.get("TotalCallCreated", 0) or 0)
        run.achieved_offer = created / seconds
        counts = _counts(workdir)
        run.shed = sum(v for k, v in counts.items() if k.endswith("_503_Recv"))
        run.answered = sum(v for k, v in counts.items()
                           if k.endswith("_200_Recv") and k.split("_")[0] == "4")
        run.retransmissions = max(run.retransmissions, sum(
            v for k, v in counts.items() if k.endswith("_Retrans")))
        # The normal step, to the same twsip process, one second after the overload ended.
        time.sleep(1.0)
        after = Step("twsip", clean_rate, max(seconds / 2, 1), int(clean_rate * max(seconds / 2, 1)))
        after_dir = workdir / "after"
        after_dir.mkdir()
        after_uac = subprocess.run(
            [sipp, "-sn", "uac", f"127.0.0.1:{port}", "-i", "127.0.0.1",
             "-p", str(free_udp_port()), "-r", str(clean_rate), "-rp", "1000",
             "-m", str(after.calls), "-nostdin", "-timeout", f"{int(after.seconds) + 40}s",
             "-timeout_error", "-trace_stat", "-stf", "stat.csv", "-fd", "1",
             "-trace_counts", "-trace_err"],
            cwd=after_dir, stdout=subprocess.DEVNULL, stderr=open(after_dir / "uac.err", "wb"))
        after.rc = after_uac.returncode
        read_results(after, after_dir)
        run.after = after
    finally:
        last_words = stop(server)
    gc_line = [line for line in last_words.splitlines() if line.startswith("GC ")]
    run.gc = gc_line[0][3:] if gc_line else "not reported"
    run.load = f"{load_before} -> {loadavg()}"
    return run


def run(quick: bool = False, workdir: str | None = None, options: dict | None = None
        ) -> list[Row]:
    options = options or {}
    figure = "overload: 2x the clean rate, goodput"
    target = ">= 90% of the clean rate; OPTIONS <= 0.3 s >= 90%; normal step 1 s later clean"
    sipp = sipp_path()
    if sipp is None:
        return without_sipp(figure, "calls/s", target)
    clean = int(options.get("clean_rate") or (QUICK_CLEAN_RATE if quick else CLEAN_RATE))
    seconds = step_seconds(options, quick)
    base = Path(workdir or ".") / "overload"
    runs = [overload_run(sipp, clean, seconds, base / "on")]
    if options.get("compare_raw"):
        time.sleep(1)
        runs.append(overload_run(sipp, clean, seconds, base / "off", control=False))
    main = runs[0]
    for r in runs:
        print(f"  overload: {r.summary()}", file=sys.stderr)
    met = (main.goodput >= 0.9 * clean and main.probe_share >= 0.9
           and main.after is not None and main.after.clean)
    rows = [Row(figure, main.goodput, "calls/s", target=target,
                met=None if quick else met, reference=float(clean),
                reference_label="the clean rate (offered: 2x)",
                notes=[r.summary() for r in runs]),
            Row("overload: OPTIONS answered within 0.3 s", main.probe_share * 100, "%",
                target=">= 90%", met=None if quick else main.probe_share >= 0.9,
                notes=[f"{main.probes_ok}/{main.probes} probes, one every {PROBE_EVERY:g} s"]),
            Row("overload: normal step 1 s after, clean", 1.0 if main.after and
                main.after.clean else 0.0, "(1 = clean)", target="clean",
                met=None if quick else bool(main.after and main.after.clean))]
    if quick:
        for row in rows:
            row.target += " (--quick: the benchmark runs, no verdict)"
    return rows
