"""A twsip process for load tests: auto-answering instances on 127.0.0.1, nothing else.

    python -m bench.uas_runner [--port 0] [--instances 1] [--profile FILE] [--count-objects]
                               [--no-overload-control]

Starts an `InstanceManager` (log_messages=False), creates the instances, serves with
auto-answer (every call gets 100, 180 and 200 and ends when the caller hangs up), prints
``READY <port> ...`` on stdout once bound, and runs the reactor until SIGTERM/SIGINT; then
it cleans up and exits, printing its CPU time and the garbage collector's run times (``CPU``
and ``GC`` lines). With ``--profile FILE`` the whole run is profiled with cProfile
(``.prof``) or pyinstrument (``.html`` / ``.txt``) and written to FILE at exit;
``--count-objects`` prints the GC-tracked objects by type before cleaning up.

This is what `bench.sipp_load` calls by default; ``python -m bench --sipp-peer twistd``
calls the shipped ``twistd -n sipinstances --quiet`` instead.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time


class GcStats:
    """Time spent in the cyclic garbage collector, per generation (a gc.callbacks hook)."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.total = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]
        self._start = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
            return
        generation = info["generation"]
        took = time.perf_counter() - self._start
        self.count[generation] += 1
        self.total[generation] += took
        self.longest[generation] = max(self.longest[generation], took)

    def __str__(self) -> str:
        return "; ".join(
            f"gen{g}: {self.count[g]} runs, {self.total[g]:.3f} s, longest "
            f"{self.longest[g] * 1000:.1f} ms" for g in range(3))


def count_objects() -> None:
    from collections import Counter

    gc.collect()
    counts = Counter(type(o).__qualname__ for o in gc.get_objects())
    total = sum(counts.values())
    top = ", ".join(f"{name} {n}" for name, n in counts.most_common(12))
    print(f"OBJECTS {total}: {top}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.uas_runner")
    parser.add_argument("--port", type=int, default=0,
                        help="first UDP port (0: the system picks free ports)")
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--profile", default="",
                        help="write a profile here at exit: *.prof (cProfile) or "
                             "*.html/*.txt (pyinstrument)")
    parser.add_argument("--count-objects", action="store_true",
                        help="at exit, print the GC-tracked objects by type (before cleanup)")
    parser.add_argument("--no-overload-control", action="store_true",
                        help="never shed new calls with 503 (twsip.sip.overload): raw "
                             "behaviour, as `twistd sipinstances --no-overload-control`")
    args = parser.parse_args(argv)

    from twisted.internet import reactor

    from twsip.manager import InstanceManager
    from twsip.flow.model import graph_for_instances

    # Signalling only, as BENCHMARKS.md's figures were measured: RTP costs a socket per call.
    overload = None
    if args.no_overload_control:
        from twsip.sip.overload import OverloadSettings
        overload = OverloadSettings(enabled=False)
    kwargs = {"overload": overload} if overload is not None else {}  # older twsip: none
    manager = InstanceManager(base_port=args.port, host="127.0.0.1", reactor=reactor,
                              log_messages=False, media=False, **kwargs)
    created = manager.create_instances(graph_for_instances(args.instances).configs)
    manager.start_serving(auto_answer=True)
    gc.collect()  # as twistd sipinstances does (twsip.service.freeze_startup_objects);
    gc.freeze()  # inline, so that --twsip runs of older versions get the same GC policy
    if args.count_objects:
        reactor.addSystemEventTrigger("before", "shutdown", count_objects)
    reactor.addSystemEventTrigger("before", "shutdown", manager.cleanup)
    ports = " ".join(str(m.port) for m in created)
    print(f"READY {ports}", flush=True)

    gc_stats = GcStats()
    gc.callbacks.append(gc_stats)
    profiler = None
    if args.profile.endswith(".prof"):
        import cProfile
        profiler = cProfile.Profile()
        profiler.enable()
    elif args.profile:
        import pyinstrument
        profiler = pyinstrument.Profiler(interval=0.0005)
        profiler.start()
    try:
        reactor.run()
    finally:
        if profiler is not None:
            if args.profile.endswith(".prof"):
                profiler.disable()
                profiler.dump_stats(args.profile)
            else:
                profiler.stop()
                with open(args.profile, "w") as f:
                    if args.profile.endswith(".html"):
                        f.write(profiler.output_html())
                    else:
                        f.write(profiler.output_text(unicode=False, color=False))
    times = os.times()
    print(f"CPU {times.user + times.system:.3f}", flush=True)
    print(f"GC {gc_stats}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
