"""twsip benchmarks: ``python -m bench [--quick]`` prints one table of figures.

Each benchmark lives in its own module (`bench.parse`, `bench.uas_path`, `bench.calls`,
`bench.scale`, `bench.media`, `bench.sipp_load`, `bench.overload`, `bench.floor`) with a ``run(quick, workdir, options) -> list[Row]``
function; `bench.uas_runner` is the twsip process SIPp calls. See BENCHMARKS.md. `bench.__main__`
runs every module in a fresh child process (so that one benchmark's memory and timers never
colour another's figures, RSS above all) and prints the rows side by side with the
reference measured in the same run.

Nothing here writes into the repository: output files go to a temporary directory.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

__all__ = ["Row", "rss_kib", "best_rate", "loadavg", "child_env", "MODULES"]

# Run order: the CPU-only figures first, SIPp (the longest) last.
MODULES = ("parse", "uas_path", "calls", "scale", "media", "sipp_load", "overload", "floor")


@dataclass
class Row:
    """One line of the table.

    `measured` and `reference` are numbers in `unit`; `ratio` is measured / reference
    (how many times the reference twsip reaches). `met` is None when the row has no
    target or was skipped.
    """

    figure: str
    measured: float | None
    unit: str
    target: str = ""
    met: bool | None = None
    reference: float | None = None
    reference_label: str = ""
    skipped: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if self.measured is None or not self.reference:
            return None
        return self.measured / self.reference

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Row":
        return cls(**data)


def child_env() -> dict[str, str]:
    """The environment for a child process: this checkout (and `BENCH_TWSIP_PATH`, a
    directory holding another `twsip` package to measure instead, before it) on the path."""
    env = dict(os.environ)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [p for p in (env.get("BENCH_TWSIP_PATH", ""), repo, env.get("PYTHONPATH", ""))
             if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def rss_kib() -> int:
    """Resident set size of this process (VmRSS, KiB)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def best_rate(work: Callable[[int], None], seconds: float, repeats: int) -> float:
    """Operations per second of ``work(n)`` (n operations), best of `repeats` runs.

    The loop size is calibrated so that one run takes about `seconds`; the best run is
    the one least disturbed by other processes on a shared machine.
    """
    n = 100
    while True:
        start = time.perf_counter()
        work(n)
        elapsed = time.perf_counter() - start
        if elapsed >= 0.05:
            break
        n *= 4
    n = max(1, int(n * seconds / elapsed))
    best = 0.0
    gc_was_enabled = gc.isenabled()
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        work(n)
        elapsed = time.perf_counter() - start
        best = max(best, n / elapsed)
    if gc_was_enabled:
        gc.enable()
    return best


def fmt_number(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def cpu_count() -> int:
    return os.cpu_count() or 1
