"""``python -m bench.media --streams 1000 --seconds 5``: K RTP streams on the real reactor.

K sending endpoints each play an endless 440 Hz tone (PCMU, 20 ms) to a receiving endpoint
of their own (or to one shared receiver, or to a bare socket), all on 127.0.0.1, paced by
the one shared `PacingScheduler`. Reported: packets sent and received per second, the
sender's timing error (the reactor's clock when `sendto` ran minus that packet's due time,
the stream's own start + n * 20 ms: the scheduler spreads streams over phases of the
ptime) as p50/p99/max, how many wake-ups found more than one phase due, the process's CPU
seconds (user + system) over the measured window as a share of one core, and the load
average before and after (the machine may be shared: read the figures beside it).

In ``python -m bench`` (`run`) the count grows (100, 250, 500, 750, 1000) until the
sender's p99 timing error passes 5 ms (the media issue's bound). Each count is measured
twice: to a receiving endpoint per stream (RFC 3550 statistics computed for every
packet), and to one bare counting socket (no RTP receive side). The row gives the highest
count that stayed under the bound with both ends in the process; its notes give every
count's figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import socket
import sys
from typing import Any


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(streams: int, seconds: float, receivers: str) -> dict[str, Any]:
    from twisted.internet import reactor, task
    from twisted.internet.protocol import DatagramProtocol

    from twsip.media.endpoint import RtpEndpoint, open_endpoint
    from twsip.media.pacing import scheduler_for

    scheduler = scheduler_for(reactor)
    errors: list[float] = []
    record = errors.append
    seconds_now = reactor.seconds

    class Sink(DatagramProtocol):
        received = 0

        def datagramReceived(self, datagram: bytes, addr: Any) -> None:
            Sink.received += 1

    sinks: list[Any] = []
    shared: Any = None
    if receivers == "one":
        shared = open_endpoint(reactor, reactor)
    elif receivers == "none":
        shared = Sink()
        sinks.append(reactor.listenUDP(0, shared, interface="127.0.0.1"))
        # One socket takes every stream's packets: a buffer as large as the system allows,
        # so that "received" counts what was sent, not what a default buffer could hold.
        sinks[0].socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    senders: list[RtpEndpoint] = []
    listeners: list[RtpEndpoint] = []
    for _ in range(streams):
        if receivers == "each":
            target = open_endpoint(reactor, reactor)
            listeners.append(target)
            port = target.local_port
        elif receivers == "one":
            port = shared.local_port
        else:
            port = sinks[0].getHost().port
        sender = open_endpoint(reactor, reactor, remote=("127.0.0.1", port))
        # Time every send: wrap the endpoint's send call (the socket's sendto).
        write = sender._sendto

        def timed_write(data: bytes, addr: Any, write: Any = write) -> Any:
            due = scheduler.tick_time
            if due is not None:
                record(seconds_now() - due)
            return write(data, addr)

        sender._sendto = timed_write
        senders.append(sender)
    if receivers == "one":
        listeners.append(shared)

    # Each size starts from a collected heap: the garbage of the size before is not
    # collected in the middle of this one's measurement.
    gc.collect()
    load_before = os.getloadavg()
    cpu_start = _cpu()
    wall_start = seconds_now()
    ticks_start, late_start = scheduler.ticks, scheduler.late_wakeups
    for sender in senders:
        sender.set_source("tone:440")
    await task.deferLater(reactor, seconds, lambda: None)
    for sender in senders:
        sender.stop()
    wall = seconds_now() - wall_start
    cpu = _cpu() - cpu_start
    await task.deferLater(reactor, 0.2, lambda: None)  # let the last datagrams land
    sent = sum(s.counters.sent_packets for s in senders)
    if receivers == "none":
        received = Sink.received
    else:
        received = sum(e.counters.received_datagrams for e in listeners)
    lost = sum(stats.lost for e in listeners for stats in e.stats().values())
    for endpoint in senders + listeners:
        await endpoint.close()
    for port in sinks:
        await port.stopListening()
    load_after = os.getloadavg()
    ticks = scheduler.ticks - ticks_start
    return {
        "streams": streams, "seconds": round(wall, 3), "receivers": receivers,
        "packets_sent": sent, "packets_received": received,
        "sent_per_s": round(sent / wall), "received_per_s": round(received / wall),
        "expected_per_s": round(streams / scheduler.ptime),
        "lost_by_rtp_stats": lost,
        "ticks": ticks, "late_wakeups": scheduler.late_wakeups - late_start,
        "send_error_ms_p50": round(1000 * _percentile(errors, 0.50), 3),
        "send_error_ms_p99": round(1000 * _percentile(errors, 0.99), 3),
        "send_error_ms_max": round(1000 * max(errors, default=float("nan")), 3),
        "cpu_s": round(cpu, 3), "cpu_per_wall_s": round(cpu / wall, 3),
        "cpu_us_per_packet": round(1e6 * cpu / max(1, sent), 2),
        "phases": scheduler.phases,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
    }


TARGET_P99_MS = 5.0


def run(quick: bool = False, workdir: str | None = None, options: dict | None = None
        ) -> list[Any]:
    """Rows for ``python -m bench``: streams sent and received in one process."""
    from . import Row
    from ._support import run_on_reactor

    options = options or {}
    seconds = float(options.get("seconds") or (1 if quick else 5))
    counts = [25] if quick else [100, 250, 500, 750, 1000]

    async def sweep() -> list[dict[str, Any]]:
        results = []
        for count in counts:
            result = await measure(count, seconds, "each")
            results.append(result)
            results.append(await measure(count, seconds, "none"))
            if result["send_error_ms_p99"] > TARGET_P99_MS:
                break
        return results

    results = run_on_reactor(sweep)
    both_ends = [r for r in results if r["receivers"] == "each"]
    good = [r for r in both_ends if r["send_error_ms_p99"] <= TARGET_P99_MS]
    best = good[-1] if good else both_ends[0]
    notes = [_note(r) for r in results]
    print(f"  media: {results}", file=sys.stderr)
    return [Row("RTP streams in one process (both ends), p99 send error <= 5 ms",
                best["streams"] if good else None, "streams",
                target=">= 1000 streams (50,000 packets/s)",
                met=(best["streams"] >= 1000 and bool(good)) if not quick else None,
                reference=None, reference_label="none", notes=notes)]


def _note(r: dict[str, Any]) -> str:
    to = {"each": "a receiving endpoint each", "one": "one receiving endpoint",
          "none": "one bare counting socket (no RTP receive side)"}[r["receivers"]]
    return (f"{r['streams']} streams to {to}: {r['sent_per_s']} sent/s, "
            f"{r['received_per_s']} received/s; send error p50/p99/max "
            f"{r['send_error_ms_p50']}/{r['send_error_ms_p99']}/{r['send_error_ms_max']} ms; "
            f"CPU {r['cpu_per_wall_s']} of a core ({r['cpu_us_per_packet']} us/packet); "
            f"load {r['loadavg_before'][0]} -> {r['loadavg_after'][0]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.media", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--receivers", choices=("each", "one", "none"), default="each",
                        help="an RtpEndpoint per stream (default), one shared RtpEndpoint, "
                             "or a bare counting socket")
    parser.add_argument("--json", action="store_true", help="print one JSON line only")
    options = parser.parse_args(argv)

    from twisted.internet import defer, reactor

    result: dict[str, Any] = {}

    def start() -> None:
        d = defer.Deferred.fromCoroutine(measure(options.streams, options.seconds,
                                             options.receivers))
        d.addCallback(result.update)
        d.addErrback(lambda failure: (result.update(error=failure.getTraceback()), None))
        d.addBoth(lambda _: reactor.stop())  # type: ignore[attr-defined]

    reactor.callWhenRunning(start)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    if "error" in result:
        print(result["error"], file=sys.stderr)
        return 1
    if options.json:
        print(json.dumps(result))
    else:
        width = max(len(key) for key in result)
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
