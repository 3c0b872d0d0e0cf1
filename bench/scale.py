"""Scale: many instances in one process, and many established calls in one process.

1. `InstanceManager.create_instances` for N instances on real ports (base_port with +2
   steps, the way twsip is used): wall time, and resident memory per instance as the VmRSS
   delta over N. Then `cleanup()`: the time until every port is released.
2. C concurrent established calls in one process: callers call callees (auto-answer), at
   most `window` setups in flight, until all C calls are up at once; the time that takes,
   VmRSS per call (both ends), the GC-tracked objects per call (both ends) and the
   collector's time during the set-up, then every call hung up and the time for that.
"""

from __future__ import annotations

import gc
import sys
import time

from . import Row, rss_kib
from ._support import RetransmissionCounter, run_on_reactor


def _open_udp_ports() -> int:
    from twisted.internet import reactor, udp

    return sum(1 for r in reactor.getReaders() if isinstance(r, udp.Port))


async def instances(count: int, base_port: int) -> dict:
    from twisted.internet import reactor

    from twsip.manager import InstanceManager
    from twsip.flow.model import graph_for_instances

    graph = graph_for_instances(count)
    manager = InstanceManager(base_port=base_port, max_retries=50, reactor=reactor,
                              media=False)
    gc.collect()
    ports_before = _open_udp_ports()
    rss_before = rss_kib()
    start = time.perf_counter()
    created = manager.create_instances(graph.configs)
    create_time = time.perf_counter() - start
    gc.collect()
    rss_after = rss_kib()
    bound = _open_udp_ports() - ports_before
    start = time.perf_counter()
    await manager.cleanup()
    cleanup_time = time.perf_counter() - start
    left = _open_udp_ports() - ports_before
    left_timers = sum(1 for c in reactor.getDelayedCalls()
                      if getattr(c.func, "__module__", "").startswith("twsip"))
    return {"count": len(created), "bound": bound, "create_s": create_time,
            "rss_per_instance_kib": (rss_after - rss_before) / count,
            "cleanup_s": cleanup_time, "ports_left": left, "timers_left": left_timers,
            "first_port": created[0].port, "last_port": created[-1].port}


async def calls(count: int, pairs: int, window: int) -> dict:
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults

    from twsip.sip.dialog import CallFailed
    from twsip.manager import InstanceManager
    from twsip.flow.model import graph_for_instances

    # Callers and callees share one reactor and set up 200 calls at once: the callees'
    # queues do wait past the overload limit, and overload control (twsip.sip.overload)
    # would rightly shed some of them. This row measures holding calls, not shedding.
    kwargs: dict = {}
    try:
        from twsip.sip.overload import OverloadSettings
        kwargs["overload"] = OverloadSettings(enabled=False)
    except ImportError:  # an older twsip (--twsip DIR) has no overload control
        pass
    manager = InstanceManager(base_port=0, reactor=reactor, media=False, **kwargs)
    created = manager.create_instances(graph_for_instances(2 * pairs).configs)
    callers, callees = created[:pairs], created[pairs:]
    for managed in callees:
        managed.ua.start_serving(auto_answer=True)
    targets = [manager.resolve_target(m.config.dn) for m in callees]
    counter = RetransmissionCounter().install()
    gc.collect()
    rss_before = rss_kib()
    objects_before = len(gc.get_objects())
    gc_time = _GcTime()
    gc.callbacks.append(gc_time)
    sessions: list = []
    failures: list[str] = []
    limit = DeferredSemaphore(window)

    async def one(k: int) -> None:
        await limit.acquire()
        try:
            session = await callers[k % pairs].ua.invite(targets[k % pairs], timeout=60)
            sessions.append(session)
        except CallFailed as exc:
            failures.append(str(exc))
        finally:
            limit.release()

    start = time.perf_counter()
    await gatherResults([Deferred.fromCoroutine(one(k)) for k in range(count)])
    setup_time = time.perf_counter() - start
    gc.callbacks.remove(gc_time)
    established = sum(len([s for s in m.ua.calls if s.established]) for m in callers)
    gc.collect()
    rss_after = rss_kib()
    objects_per_call = (len(gc.get_objects()) - objects_before) / max(established, 1)
    retrans = counter.count
    results: list = []

    async def bye(session) -> None:
        await limit.acquire()
        try:
            results.append(await session.hangup())
        except CallFailed as exc:
            results.append(exc)
        finally:
            limit.release()

    start = time.perf_counter()
    await gatherResults([Deferred.fromCoroutine(bye(s)) for s in sessions])
    hangup_time = time.perf_counter() - start
    bad_hangups = sum(1 for r in results if not hasattr(r, "status") or r.status != 200)
    counter.uninstall()
    start = time.perf_counter()
    await manager.cleanup()
    cleanup_time = time.perf_counter() - start
    return {"count": count, "established": established, "failed": len(failures),
            "failures": failures[:5], "setup_s": setup_time,
            "rss_per_call_kib": (rss_after - rss_before) / max(established, 1),
            "rss_total_mib": (rss_after - rss_before) / 1024, "hangup_s": hangup_time,
            "bad_hangups": bad_hangups, "retransmissions": retrans,
            "cleanup_s": cleanup_time, "pairs": pairs, "objects_per_call": objects_per_call,
            "gc_setup_s": gc_time.total, "gc_full_runs": gc_time.full,
            "gc_longest_s": gc_time.longest}


class _GcTime:
    """The cyclic collector's time (a gc.callbacks hook): with thousands of calls up, full
    collections walk every call's objects, which is what makes set-up slow down as calls
    accumulate."""

    def __init__(self) -> None:
        self.total = 0.0
        self.longest = 0.0
        self.full = 0
        self._start = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
            return
        took = time.perf_counter() - self._start
        self.total += took
        self.longest = max(self.longest, took)
        self.full += info["generation"] == 2


def run(quick: bool = False, workdir: str | None = None, options: dict | None = None
        ) -> list[Row]:
    options = options or {}
    n_instances = int(options.get("instances") or (100 if quick else 1000))
    n_calls = int(options.get("calls") or (500 if quick else 10_000))
    base_port = int(options.get("base_port") or 20000)
    pairs = int(options.get("pairs") or 10)

    async def main() -> tuple[dict, dict]:
        from twisted.internet.defer import Deferred

        a = await Deferred.fromCoroutine(instances(n_instances, base_port))
        print(f"  scale: {a}", file=sys.stderr)
        b = await Deferred.fromCoroutine(calls(n_calls, pairs, window=200))
        print(f"  scale: {b}", file=sys.stderr)
        return a, b

    inst, call = run_on_reactor(main)
    all_bound = inst["bound"] == n_instances and inst["count"] == n_instances
    released = inst["ports_left"] == 0 and inst["timers_left"] == 0
    verdict = not quick
    rows = [
        Row(f"{n_instances} instances: create + bind", inst["create_s"], "s",
            target="< 1 s" + ("" if not quick else " (for 1000)"),
            met=(inst["create_s"] < 1 and all_bound) if verdict else None,
            notes=[f"{inst['bound']} ports bound, {inst['first_port']}..{inst['last_port']}"]),
        Row(f"{n_instances} instances: RSS per instance", inst["rss_per_instance_kib"], "KiB",
            target="< 30 KiB", met=inst["rss_per_instance_kib"] < 30 if verdict else None),
        Row(f"{n_instances} instances: cleanup()", inst["cleanup_s"], "s",
            target="< 0.5 s, nothing left", met=(inst["cleanup_s"] < 0.5 and released)
            if verdict else None,
            notes=[f"{inst['ports_left']} ports and {inst['timers_left']} twsip timers left"]),
        Row(f"{n_calls:,} concurrent established calls: setup time", call["setup_s"], "s",
            target=f"all {n_calls:,} up at once, 0 failed",
            met=(call["established"] == n_calls and call["failed"] == 0) if verdict else None,
            notes=[f"{call['pairs']} caller -> {call['pairs']} callee instances, 200 setups "
                   f"in flight ({n_calls / call['setup_s']:,.0f} calls/s); "
                   f"{call['established']} established, {call['failed']} failed, "
                   f"{call['retransmissions']} retransmissions"]
            + [f"failure: {f}" for f in call["failures"]]),
        Row(f"{n_calls:,} concurrent established calls: RSS per call", call["rss_per_call_kib"],
            "KiB", target="report (both ends)",
            notes=[f"{call['rss_total_mib']:.1f} MiB for {call['established']} calls, "
                   f"caller and callee state together; "
                   f"{call['objects_per_call']:.1f} GC-tracked objects per call; the "
                   f"collector took {call['gc_setup_s']:.2f} s of the set-up "
                   f"({call['gc_full_runs']} full runs, longest "
                   f"{call['gc_longest_s'] * 1000:.0f} ms)"]),
        Row(f"{n_calls:,} calls: hang up all", call["hangup_s"], "s", target="report",
            notes=[f"{call['bad_hangups']} BYEs without a 200; cleanup afterwards "
                   f"{call['cleanup_s']:.2f} s"]),
    ]
    return rows
