"""The SIPp-load path without sockets: twsip's own CPU per call, and what a call leaves behind.

One `SipInstance` (auto-answer) on a fake datagram transport is fed, call after call, the
exact messages SIPp's built-in uac sends (INVITE with SDP, ACK, BYE, same headers and
sizes); its answers (100, 180, 200, 200) are collected and the To tag read back from the
200. Time advances by 1/rate per call on a heap-based clock, so transaction timers are
created, cancelled and fired as they would be under that load (Timer L and J linger 32 s).

Figures: CPU microseconds per call spent inside `datagramReceived` (parse, transactions,
dialog, responses, serialisation; the kernel's sendto/recvfrom are not in it), the garbage
collector's longest pause, and the GC-tracked objects each finished call keeps alive while
its transactions linger. The UDP socket costs come on top, on the SIPp benchmark.
"""

from __future__ import annotations

import gc
import heapq
import sys
import time
from typing import Any, Callable

from . import Row

INVITE = (
    "INVITE sip:service@127.0.0.1:{port} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-4242-{n}-0\r\n"
    "From: sipp <sip:sipp@127.0.0.1:5070>;tag=4242SIPpTag00{n}\r\n"
    "To: service <sip:service@127.0.0.1:{port}>\r\n"
    "Call-ID: {n}-4242@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: sip:sipp@127.0.0.1:5070\r\n"
    "Max-Forwards: 70\r\n"
    "Subject: Performance Test\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length:   129\r\n"
    "\r\n"
    "v=0\r\n"
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 6004 RTP/AVP 0\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
)
IN_DIALOG = (
    "{method} sip:service@127.0.0.1:{port} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-4242-{n}-{b}\r\n"
    "From: sipp <sip:sipp@127.0.0.1:5070>;tag=4242SIPpTag00{n}\r\n"
    "To: service <sip:service@127.0.0.1:{port}>;tag={tag}\r\n"
    "Call-ID: {n}-4242@127.0.0.1\r\n"
    "CSeq: {cseq} {method}\r\n"
    "Contact: sip:sipp@127.0.0.1:5070\r\n"
    "Max-Forwards: 70\r\n"
    "Subject: Performance Test\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)
PEER = ("127.0.0.1", 5070)


class HeapClock:
    """An IReactorTime on a heap, as a reactor keeps its timers (Clock sorts a list)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, Any]] = []
        self._seq = 0
        self.fired = 0

    def seconds(self) -> float:
        return self.now

    def callLater(self, delay: float, fn: Callable[..., Any], *args: Any, **kw: Any):  # noqa: N802
        from twisted.internet.base import DelayedCall

        call = DelayedCall(self.now + delay, fn, args, kw, lambda c: None, self._reset,
                           self.seconds)
        self._seq += 1
        heapq.heappush(self._heap, (call.time, self._seq, call))
        return call

    def _reset(self, call: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (call.time, self._seq, call))

    def getDelayedCalls(self) -> list:  # noqa: N802
        return [c for _, _, c in self._heap if c.active()]

    def advance(self, seconds: float) -> None:
        self.now += seconds
        heap = self._heap
        while heap and heap[0][0] <= self.now:
            _, _, call = heapq.heappop(heap)
            if call.cancelled or call.called or call.time > self.now:
                continue
            call.called = 1
            call.func(*call.args, **call.kw)
            self.fired += 1

    def pending(self) -> int:
        return sum(1 for _, _, c in self._heap if c.active())


class FakeTransport:
    def __init__(self, port: int) -> None:
        self.port = port
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def getHost(self) -> Any:  # noqa: N802
        from twisted.internet.address import IPv4Address

        return IPv4Address("UDP", "127.0.0.1", self.port)


def _to_tag(data: bytes) -> str:
    start = data.index(b"\r\nTo: ")
    end = data.index(b"\r\n", start + 2)
    line = data[start:end]
    return line[line.index(b";tag=") + 5:].split(b";")[0].decode()


class Driver:
    def __init__(self) -> None:
        from twsip.sip.instance import SipInstance

        self.clock = HeapClock()
        self.transport = FakeTransport(5060)
        self.ua = SipInstance("100", reactor=self.clock)  # type: ignore[arg-type]
        self.ua.makeConnection(self.transport)
        self.ua.start_serving(auto_answer=True)
        self.n = 0
        self.busy = 0.0

    def call(self) -> None:
        """One SIPp call, as its messages arrive; the time inside twsip is added to busy."""
        self.n += 1
        n, port, ua, sent = self.n, self.transport.port, self.ua, self.transport.sent
        invite = INVITE.format(n=n, port=port).encode()
        t0 = time.perf_counter()
        ua.datagramReceived(invite, PEER)
        t1 = time.perf_counter()
        if len(sent) != 3:
            raise AssertionError(f"INVITE {n}: expected 100, 180, 200; got {sent!r}")
        tag = _to_tag(sent[2][0])
        sent.clear()
        ack = IN_DIALOG.format(method="ACK", n=n, b=5, port=port, tag=tag, cseq=1).encode()
        bye = IN_DIALOG.format(method="BYE", n=n, b=7, port=port, tag=tag, cseq=2).encode()
        t2 = time.perf_counter()
        ua.datagramReceived(ack, PEER)
        ua.datagramReceived(bye, PEER)
        t3 = time.perf_counter()
        if len(sent) != 1 or not sent[0][0].startswith(b"SIP/2.0 200 OK"):
            raise AssertionError(f"BYE {n}: expected 200; got {sent!r}")
        sent.clear()
        self.busy += (t1 - t0) + (t3 - t2)

    def close(self) -> None:
        self.ua.transactions.close()
        for session in list(self.ua.calls):
            session._end("cleanup")


class _GcWatch:
    def __init__(self) -> None:
        self.longest = 0.0
        self.total = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            took = time.perf_counter() - self._start
            self.total += took
            self.longest = max(self.longest, took)


def measure(calls: int, rate: float) -> dict:
    driver = Driver()
    for _ in range(200):  # warm up
        driver.call()
    driver.busy = 0.0
    gc.collect()
    objects_before = len(gc.get_objects())
    watch = _GcWatch()
    gc.callbacks.append(watch)
    step = 1.0 / rate
    try:
        for _ in range(calls):
            driver.call()
            driver.clock.advance(step)
    finally:
        gc.callbacks.remove(watch)
    busy = driver.busy
    lingering = min(calls, int(32 * rate))
    gc.collect()
    per_call_objects = (len(gc.get_objects()) - objects_before) / max(lingering, 1)
    timers = driver.clock.pending()
    driver.close()
    return {"us_per_call": busy / calls * 1e6, "gc_longest_ms": watch.longest * 1000,
            "gc_total_s": watch.total, "objects_per_call": per_call_objects,
            "timers": timers, "calls": calls, "lingering": lingering,
            "simulated_s": calls / rate}


def run(quick: bool = False, workdir: str | None = None, options: dict | None = None
        ) -> list[Row]:
    options = options or {}
    calls = int(options.get("calls") or (2000 if quick else 60_000))
    rate = float(options.get("rate") or 3000)
    m = measure(calls, rate)
    print(f"  uas_path: {m}", file=sys.stderr)
    budget = 1e6 / 3000
    return [
        Row("UAS path CPU per call, no sockets (SIPp's messages)", m["us_per_call"], "us",
            target=f"report (3000/s leaves {budget:.0f} us per call, sockets included)",
            notes=[f"{calls:,} calls at a simulated {rate:g}/s ({m['simulated_s']:.0f} s); "
                   f"GC total {m['gc_total_s']:.2f} s, longest pause "
                   f"{m['gc_longest_ms']:.0f} ms; {m['timers']} live timers at the end"]),
        Row("GC-tracked objects kept per finished call (32 s linger)", m["objects_per_call"],
            "objects", target="report",
            notes=[f"{m['lingering']:,} calls' transactions lingering when counted"]),
    ]
