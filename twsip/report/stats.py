"""Live counters of a serving process, from the messages its instances see.

Under SIPp load a tester wants to know, while it runs, whether calls are answered, how
many fail and how, and whether retransmissions appear (the first sign of overload). All
of it can be read from the messages on the wire, so the counters are one message observer
per instance, and cost nothing when ``--stats`` is off.

A retransmission is a message whose transaction (top Via, CSeq, and for a response its
status) the same instance already saw in the same direction. Those keys are remembered
for `REMEMBER` to twice that many seconds, which covers every retransmission but the last
ones of a transaction that lives its full 32 s (Timer B/F/H), and keeps the memory for
thousands of calls a second to a few tens of megabytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields

from twsip.sip.message import Request, Response
from twsip.sip.observers import MessageEvent

__all__ = ["CallCounters", "Counts", "REMEMBER"]

REMEMBER = 16.0


@dataclass
class Counts:
    """What happened since some moment; `failed` by class: {"4xx": n, ...}."""

    calls_in: int = 0
    calls_out: int = 0
    answered: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    retrans_sent: int = 0
    retrans_received: int = 0
    messages: int = 0

    def minus(self, earlier: Counts) -> Counts:
        delta = Counts(**{f.name: getattr(self, f.name) - getattr(earlier, f.name)
                          for f in fields(self) if f.name != "failed"})
        delta.failed = {k: v - earlier.failed.get(k, 0) for k, v in self.failed.items()
                        if v - earlier.failed.get(k, 0)}
        return delta

    def copy(self) -> Counts:
        copied = Counts(**{f.name: getattr(self, f.name) for f in fields(self)})
        copied.failed = dict(self.failed)
        return copied

    def line(self, active: int, seconds: float) -> str:
        failed = " ".join(f"{k} {v}" for k, v in sorted(self.failed.items())) or "0"
        rate = self.messages / seconds if seconds > 0 else 0.0
        return (f"calls in {self.calls_in} out {self.calls_out}, answered {self.answered}, "
                f"failed {failed}, active {active}, retransmissions sent "
                f"{self.retrans_sent} received {self.retrans_received}, "
                f"{rate:.1f} msg/s")


class CallCounters:
    """Counts calls and retransmissions of every instance it observes.

    `observe` is the message observer; `active` is asked for the number of live calls
    (the instances know it better than the messages do).
    """

    def __init__(self, clock: Callable[[], float], active: Callable[[], int]) -> None:
        self.clock = clock
        self.active = active
        self.total = Counts()
        # the instances' own addresses (whoever attaches `observe` adds them)
        self.addresses: set[tuple[str, int]] = set()
        self._seen: set[int] = set()
        self._older: set[int] = set()
        self._rotated = clock()

    def observe(self, event: MessageEvent) -> None:
        total = self.total
        total.messages += 1
        message = event.message
        out = event.direction == "out"
        try:
            branch = message.get("via") or ""
            cseq = message.get("cseq") or ""
        except Exception:  # a header that does not parse is not a retransmission
            return
        key: tuple[object, ...]
        if isinstance(message, Request):
            key = (id(event.instance), out, message.method, branch, cseq)
        elif isinstance(message, Response):
            key = (id(event.instance), out, message.status, branch, cseq)
        else:
            return
        if self._repeat(key, event.time):
            if out:
                total.retrans_sent += 1
            else:
                total.retrans_received += 1
            return
        if isinstance(message, Request):
            if message.method == "INVITE" and message.to.tag is None:
                if out:
                    total.calls_out += 1
                else:
                    total.calls_in += 1
        elif message.status >= 200 and cseq.endswith("INVITE") and (
                out or (event.peer[0], event.peer[1]) not in self.addresses):
            # Once per call: at the side that answered, or when the answer came from
            # outside (another of the instances counted its own answer when it sent it).
            self._final(message.status)

    def _final(self, status: int) -> None:
        if 200 <= status < 300:
            self.total.answered += 1
        else:
            kind = f"{status // 100}xx"
            self.total.failed[kind] = self.total.failed.get(kind, 0) + 1

    def _repeat(self, key: tuple[object, ...], now: float) -> bool:
        if now - self._rotated >= REMEMBER:
            self._older, self._seen = self._seen, set()
            self._rotated = now
        hashed = hash(key)  # an int costs far less than the tuple at thousands a second
        if hashed in self._seen or hashed in self._older:
            return True
        self._seen.add(hashed)
        return False
