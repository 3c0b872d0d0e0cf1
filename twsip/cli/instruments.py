"""What a run or a serving process watches besides its calls: a pcap capture and the live
counters, attached to every instance as it is created and closed at the end.

Shared by ``python -m twsip run --pcap`` and ``twistd sipinstances --pcap/--stats``, so
that both write the same file and count the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from twsip.config import SipInstanceConfig
from twsip.manager import InstanceManager, ManagedInstance
from twsip.media.endpoint import rtp_taps
from twsip.report.pcap import PcapCapture, PcapWriter
from twsip.report.stats import CallCounters, Counts
from twsip.sip.autoanswer import AnswerMode

__all__ = ["Instruments", "ObservedManager", "serve_with_modes"]

log = Logger(namespace="twsip.stats")


class ObservedManager(InstanceManager):
    """An `InstanceManager` that hands each instance it creates to `on_instance`, before
    the instance can send anything: a flow's first INVITE leaves in the same turn of the
    reactor as the instance is created, and a capture must not miss it."""

    def __init__(self, *args: Any, on_instance: Callable[[ManagedInstance], None],
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_instance = on_instance

    def create_instance(self, config: SipInstanceConfig) -> ManagedInstance:
        managed = super().create_instance(config)
        self.on_instance(managed)
        return managed


def serve_with_modes(manager: InstanceManager, auto_answer: bool,
                     modes: Mapping[str, AnswerMode], default: AnswerMode | None) -> None:
    """Serve every instance; auto-answering ones by their DN's mode, else `default`."""
    manager.start_serving(auto_answer=False)
    for managed in manager.instances.values():
        mode = modes.get(managed.config.dn, default)
        if auto_answer or managed.config.dn in modes:
            managed.ua.start_serving(auto_answer=mode if mode is not None else True)


class Instruments:
    """A pcap capture (`pcap` path) and call counters (`stats`: seconds between lines, or
    None) for the instances handed to `attach`; `close` ends both."""

    def __init__(self, reactor: Any, *, pcap: str | None = None,
                 stats: float | None = None,
                 emit: Callable[[str], None] | None = None) -> None:
        self.reactor = reactor
        self.capture: PcapCapture | None = None
        if pcap is not None:
            self.capture = PcapCapture(PcapWriter(pcap), reactor)
            rtp_taps(reactor).append(self.capture.rtp)
        self.instances: list[ManagedInstance] = []
        self.counters: CallCounters | None = None
        self.emit = emit or (lambda line: log.info("{line}", line=line))
        self._loop: LoopingCall | None = None
        self.interval = stats
        self._last = Counts()
        self._started = reactor.seconds()
        if stats is not None:
            self.counters = CallCounters(reactor.seconds, self.active)
            self._loop = LoopingCall(self.tick)
            self._loop.clock = reactor
            self._loop.start(stats, now=False)

    @property
    def wanted(self) -> bool:
        return self.capture is not None or self.counters is not None

    def attach(self, managed: ManagedInstance) -> None:
        ua = managed.ua
        self.instances.append(managed)
        if self.capture is not None:
            ua.observers.append(self.capture.sip)
        if self.counters is not None:
            ua.observers.append(self.counters.observe)
            self.counters.addresses.add((ua.host, managed.port))

    def active(self) -> int:
        return sum(len(m.ua.calls) for m in self.instances)

    def tick(self) -> None:
        """One line: what happened in the last interval, and how many calls are up."""
        assert self.counters is not None and self.interval is not None
        total = self.counters.total
        delta = total.minus(self._last)
        self._last = total.copy()
        self.emit(f"stats (last {self.interval:g} s): "
                  f"{delta.line(self.active(), self.interval)}")

    def close(self) -> None:
        """Stop the counters (with a totals line) and finish the pcap file."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self.counters is not None:
            seconds = self.reactor.seconds() - self._started
            self.emit(f"stats total ({seconds:.1f} s): "
                      f"{self.counters.total.line(self.active(), seconds)}")
            self.counters = None
        if self.capture is not None:
            try:
                rtp_taps(self.reactor).remove(self.capture.rtp)
            except ValueError:
                pass
            self.capture.writer.close()
            self.capture = None
