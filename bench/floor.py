"""CPU per call: twsip vs a do-nothing Twisted answerer (the floor) vs SIPp's uas.

SIPp's built-in uac calls each answerer in turn at the same rate for N seconds (three
steps back to back, in the same minute, repeated `rounds` times in rotating order), and
the answering process's CPU time over the step is divided by the calls it answered:

- twsip: `bench.uas_runner` (one auto-answering instance; signalling only, media=False);
- floor: `bench.floor_runner` (Twisted + string surgery + canned 180/200: what CPython and
  Twisted cost for six datagrams a call, with no SIP layer at all);
- SIPp uas (C++).

Issue 14's target: twsip <= 2.0x the floor, measured side by side. CPU time per call, not
the rate, is the measure: the rate is capped by SIPp's uac, and the machine is shared.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from . import Row, loadavg
from .sipp_load import run_step, sipp_path, step_seconds, without_sipp

RATE = 1000
QUICK_RATE = 100
PEERS = ("twsip", "floor", "sipp")


def run(quick: bool = False, workdir: str | None = None, options: dict | None = None
        ) -> list[Row]:
    options = options or {}
    figure = "CPU per call: twsip vs the Twisted floor (SIPp uac, same rate)"
    target = "<= 2.0x the floor"
    sipp = sipp_path()
    if sipp is None:
        return without_sipp(figure, "us", target)
    rate = int((options.get("rates") or [QUICK_RATE if quick else RATE])[0])
    seconds = step_seconds(options, quick)
    rounds = int(options.get("rounds") or (1 if quick else 2))
    base = Path(workdir or ".") / "floor"
    per_call: dict[str, list[float]] = {p: [] for p in PEERS}
    notes = []
    for n in range(rounds):
        order = PEERS[n % 3:] + PEERS[:n % 3]
        for peer in order:
            load = loadavg()
            step = run_step(sipp, peer, rate, seconds, base / f"{peer}-{n}")
            us = step.peer_cpu_seconds / max(step.successful, 1) * 1e6
            per_call[peer].append(us)
            text = (f"round {n + 1} {peer}: {us:.0f} us/call ({step.peer_cpu_seconds:.2f} s "
                    f"CPU for {step.successful} calls; {'clean' if step.clean else 'NOT clean'}"
                    f"; load {load})")
            notes.append(text)
            print(f"  floor: {text}", file=sys.stderr)
            time.sleep(0.5)
    median = {p: statistics.median(v) for p, v in per_call.items()}
    ratio = median["twsip"] / max(median["floor"], 1e-9)
    rows = [
        Row(figure, median["twsip"], "us", target=target,
            met=None if quick else ratio <= 2.0, reference=median["floor"],
            reference_label="floor: bench.floor_runner, same rate, same minute",
            notes=[f"{rate} calls/s x {seconds:g} s per step, {rounds} round(s); medians"]
            + notes),
        Row("CPU per call: SIPp uas (C++), same steps", median["sipp"], "us",
            reference=median["floor"], reference_label="the floor, same run"),
    ]
    if quick:
        rows[0].target += " (--quick: the benchmark runs, no verdict)"
    return rows
