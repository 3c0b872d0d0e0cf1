"""Calls between two twsip instances in one process: complete calls per second.

Instance A calls instance B (auto-answer) over loopback UDP, with `concurrency` calls in
flight at any time; each call is the full INVITE, 100, 180, 200, ACK, BYE, 200 exchange and
counts once its BYE is answered. Both ends run in this process on one reactor, so every
message is built, sent, received and parsed by twsip: 7 messages per call at each end.
"""

from __future__ import annotations

import sys
import time

from . import Row
from ._support import RetransmissionCounter, run_on_reactor

TARGET = 1000


async def measure(seconds: float, concurrency: int, warmup: float) -> dict:
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, gatherResults

    from twsip.sip.dialog import CallFailed
    from twsip.manager import InstanceManager
    from twsip.flow.model import graph_for_instances

    manager = InstanceManager(base_port=0, reactor=reactor, log_messages=False, media=False)
    caller, callee = manager.create_instances(graph_for_instances(2).configs)
    callee.ua.start_serving(auto_answer=True)
    target = manager.resolve_target(callee.config.dn)
    counter = RetransmissionCounter().install()
    stats = {"done": 0, "failed": 0, "errors": []}
    clock = {"start": 0.0, "end": 0.0}
    measuring = False

    async def worker(end: float) -> None:
        while time.perf_counter() < end:
            try:
                session = await caller.ua.invite(target, timeout=32)
                await session.hangup()
            except CallFailed as exc:
                stats["failed"] += 1
                if len(stats["errors"]) < 5:
                    stats["errors"].append(str(exc))
                continue
            if measuring:
                stats["done"] += 1

    try:
        # Warm up (caches, allocator), then measure a fresh window.
        end = time.perf_counter() + warmup
        await gatherResults([Deferred.fromCoroutine(worker(end)) for _ in range(concurrency)])
        stats["failed"] = 0
        retrans_before = counter.count
        measuring = True
        clock["start"] = time.perf_counter()
        end = clock["start"] + seconds
        await gatherResults([Deferred.fromCoroutine(worker(end)) for _ in range(concurrency)])
        clock["end"] = time.perf_counter()
        stats["retransmissions"] = counter.count - retrans_before
    finally:
        counter.uninstall()
        await manager.cleanup()
    stats["rate"] = stats["done"] / (clock["end"] - clock["start"])
    stats["elapsed"] = clock["end"] - clock["start"]
    return stats


def run(quick: bool = False, workdir: str | None = None, options: dict | None = None
        ) -> list[Row]:
    from twisted.internet.defer import Deferred

    options = options or {}
    seconds = float(options.get("seconds") or (1 if quick else 10))
    concurrency = int(options.get("concurrency") or 50)
    warmup = 0.2 if quick else 1.0

    async def main() -> dict:
        return await Deferred.fromCoroutine(measure(seconds, concurrency, warmup))

    stats = run_on_reactor(main)
    print(f"  calls: {stats}", file=sys.stderr)
    notes = [f"{concurrency} calls in flight, {stats['elapsed']:.1f} s measured; "
             f"{stats['done']} calls, {stats['failed']} failed, "
             f"{stats['retransmissions']} retransmissions"]
    notes += [f"failure: {e}" for e in stats["errors"]]
    clean = stats["failed"] == 0
    return [Row("instance <-> instance calls, one process", stats["rate"], "calls/s",
                target=f">= {TARGET}/s, 0 failed",
                met=(stats["rate"] >= TARGET and clean) if not quick else None,
                reference=None, reference_label="none (published: sippy 150-400 setups/s)",
                notes=notes)]
