"""An in-memory datagram network on a `Clock`, for testing code built on twsip.

In the spirit of `treq.testing`: no socket is opened, no real time passes, and everything
that happens can be replayed. Instances are attached to a `FakeNetwork`, each gets a fake
transport (``getHost()``, ``write()``), and datagrams they write are queued until the
test delivers them with `FakeNetwork.pump` or lets time pass with `FakeNetwork.advance`::

    network = FakeNetwork()
    alice, bob = network.add_instance("100"), network.add_instance("200")
    bob.start_serving(auto_answer=True)
    d = alice.invite(bob.uri)
    network.advance(1)
    call = network.result(d)          # the established ClientSession
    network.run(call.hangup())
    network.run(network.cleanup())
    assert not network.clock.getDelayedCalls()

The network is also a reactor as far as twsip needs one: it provides ``listenUDP``
(IReactorUDP) and the clock (IReactorTime, delegated to its `Clock`), so the manager and
the engine run whole flows on it, the way ``treq.testing`` runs a real ``Agent`` in memory::

    network = FakeNetwork()
    manager = InstanceManager(base_port=5060, reactor=network)
    result = network.run(Engine(manager, reactor=network).run(graph))

Each direction between two addresses can be impaired (`Impairment`: loss, duplication,
reordering) from a seeded random generator, so a failure seen once is seen every time.
Datagrams held back for reordering live in the network, not on the Clock, so a test can
still assert that the instances left no DelayedCall behind.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence, TypeVar

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IReactorTime,
    IReactorUDP,
    IUDPTransport,
)
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from twsip.sip.instance import SipInstance
from twsip.sip.transaction import TimerSettings
from twsip.sip.uri import Address, is_loopback

__all__ = [
    "FakeNetwork",
    "FakeDatagramTransport",
    "Impairment",
    "Endpoint",
    "Datagram",
    "NetworkTimeout",
    "LoggedFailures",
]

T = TypeVar("T")

UDP_MAX = 65535  # the largest datagram a write may carry


@implementer(ILogObserver)
class LoggedFailures:
    """Collect failures that twsip caught and logged (``log.failure``) while active.

    `datagramReceived` never lets an exception escape, so an internal error shows only in
    the log; a test can use this to fail on one::

        with LoggedFailures() as failures:
            ...
        assert failures.events == [], failures.summary()
    """

    def __init__(self, namespace: str = "twsip") -> None:
        self.namespace = namespace
        self.events: list[LogEvent] = []

    def __call__(self, event: LogEvent) -> None:
        if event.get("log_failure") is not None and \
                str(event.get("log_namespace", "")).startswith(self.namespace):
            self.events.append(event)

    def __enter__(self) -> "LoggedFailures":
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        globalLogPublisher.removeObserver(self)

    def summary(self) -> str:
        return "\n".join(str(event["log_failure"].getTraceback()) for event in self.events)


class NetworkTimeout(AssertionError):
    """`FakeNetwork.run` gave up: the Deferred had not fired after the allotted time."""


@dataclass(frozen=True)
class Datagram:
    """One datagram as the network saw it."""

    source: Address
    destination: Address
    data: bytes
    time: float


@dataclass
class Impairment:
    """What happens to datagrams in one direction; decisions come from `random.Random(seed)`.

    - `drop`: probability that a datagram is lost.
    - `duplicate`: probability that a delivered datagram arrives twice.
    - `reorder`: probability that a datagram is held back for up to `max_delay` seconds, so
      that datagrams sent after it overtake it (duplicates are held the same way).
    """

    drop: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    max_delay: float = 0.2
    seed: int | str | None = 0
    seen: int = field(default=0, init=False)
    dropped: int = field(default=0, init=False)
    duplicated: int = field(default=0, init=False)
    delayed: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        for name in ("drop", "duplicate", "reorder"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability from 0 to 1, not {value!r}")
        if self.max_delay < 0:
            raise ValueError(f"max_delay must not be negative, not {self.max_delay!r}")
        self._random = random.Random(self.seed)

    def decide(self) -> list[float]:
        """The delays (seconds) at which copies of the next datagram arrive; [] means lost."""
        self.seen += 1
        rnd = self._random
        if self.drop and rnd.random() < self.drop:
            self.dropped += 1
            return []
        copies = 1
        if self.duplicate and rnd.random() < self.duplicate:
            self.duplicated += 1
            copies = 2
        delays = []
        for _ in range(copies):
            if self.reorder and rnd.random() < self.reorder:
                self.delayed += 1
                delays.append(rnd.uniform(0.0, self.max_delay) or self.max_delay)
            else:
                delays.append(0.0)
        return delays


@implementer(IUDPTransport, IListeningPort)
class FakeDatagramTransport:
    """The transport a protocol attached to a `FakeNetwork` writes to (IUDPTransport-like),
    and the listening port that `FakeNetwork.listenUDP` returns (getHost, stopListening).

    Like a real port, it hands the protocol at most `maxPacketSize` bytes of a datagram.
    """

    def __init__(self, network: "FakeNetwork", protocol: DatagramProtocol,
                 address: Address) -> None:
        self.network = network
        self.protocol = protocol
        self.address = address
        self.connected = True
        self.maxPacketSize = 65535  # noqa: N815 (Twisted's spelling)

    def getHost(self) -> IPv4Address:  # noqa: N802
        return IPv4Address("UDP", *self.address)

    def write(self, data: bytes, addr: Address | None = None) -> None:
        if addr is None:
            raise ValueError("FakeDatagramTransport.write needs a destination address")
        if not isinstance(data, bytes):
            raise TypeError(f"datagrams are bytes, not {type(data).__name__}")
        if len(data) > UDP_MAX:
            raise ValueError(f"datagram of {len(data)} bytes is larger than a UDP datagram")
        self.network._send(self.address, (addr[0], int(addr[1])), data)

    def stopListening(self) -> None:  # noqa: N802
        self.network.detach(self.protocol)

    loseConnection = stopListening  # noqa: N815

    def startListening(self) -> None:  # noqa: N802
        """Attached ports listen from the start (IListeningPort)."""

    def connect(self, host: str, port: int) -> None:
        raise NotImplementedError("FakeNetwork ports send with write(data, addr), unconnected")

    def getBroadcastAllowed(self) -> bool:  # noqa: N802
        return False  # local mode never broadcasts

    def setBroadcastAllowed(self, enabled: bool) -> None:  # noqa: N802
        if enabled:
            raise NotImplementedError("local mode never broadcasts")

    def __repr__(self) -> str:
        return f"<FakeDatagramTransport {self.address[0]}:{self.address[1]}>"


class Endpoint(DatagramProtocol):
    """A bare datagram endpoint for tests that speak raw SIP: records what it receives."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, Address]] = []

    def datagramReceived(self, data: bytes, addr: Address) -> None:  # noqa: N802
        self.received.append((data, addr))

    @property
    def address(self) -> Address:
        assert self.transport is not None, "the endpoint is not attached to a network"
        host = self.transport.getHost()
        return (host.host, host.port)

    def send(self, data: bytes, addr: Address) -> None:
        assert self.transport is not None, "the endpoint is not attached to a network"
        self.transport.write(data, addr)

    def take(self) -> list[tuple[bytes, Address]]:
        """Everything received since the last call."""
        received, self.received = self.received, []
        return received


@implementer(IReactorUDP, IReactorTime)
class FakeNetwork:
    """Datagram delivery between protocols in memory, driven by a `Clock`.

    `write` only queues; nothing is delivered until `pump`, `advance` or `run`. Delivery
    happens in the order datagrams were sent, except where an `Impairment` says otherwise.
    Every datagram sent is kept in `log` (set `keep_log=False` for long runs); datagrams for
    an address nobody listens on are counted in `undeliverable`, and any addressed outside
    127.0.0.0/8 also in `stray` (local mode must never send one).
    """

    def __init__(self, clock: Clock | None = None, *, host: str = "127.0.0.1",
                 first_port: int = 5060, keep_log: bool = True) -> None:
        self.clock = clock if clock is not None else Clock()
        self.host = host
        self.keep_log = keep_log
        self.log: list[Datagram] = []
        self.stray: list[Datagram] = []
        self.undeliverable = 0
        self.sent = 0
        self.delivered = 0
        self._ports = itertools.count(first_port, 2)
        self._endpoints: dict[Address, DatagramProtocol] = {}
        self._impairments: dict[tuple[Address, Address], Impairment] = {}
        self._default_impairment: Impairment | None = None
        self._queue: deque[tuple[Address, Address, bytes]] = deque()
        self._held: list[tuple[float, int, Address, Address, bytes]] = []
        self._order = itertools.count()
        self.instances: list[SipInstance] = []

    # -- attaching protocols ---------------------------------------------------------------
    def attach(self, protocol: DatagramProtocol, port: int | None = None,
               host: str | None = None) -> FakeDatagramTransport:
        """Give `protocol` a fake transport at host:port (a fresh port by default)."""
        host = host or self.host
        if port is None:
            port = next(self._ports)
            while (host, port) in self._endpoints:
                port = next(self._ports)
        address = (host, port)
        if address in self._endpoints:
            raise ValueError(f"{host}:{port} is already taken on this network")
        transport = FakeDatagramTransport(self, protocol, address)
        self._endpoints[address] = protocol
        protocol.makeConnection(transport)
        return transport

    def listenUDP(self, port: int, protocol: DatagramProtocol,  # noqa: N802
                  interface: str = "", maxPacketSize: int = 8192,  # noqa: N803
                  ) -> FakeDatagramTransport:
        """IReactorUDP: bind `protocol` at interface:port (port 0: a free one); a taken
        address raises CannotListenError, as the real reactor does."""
        host = interface or self.host
        if port and (host, port) in self._endpoints:
            raise CannotListenError(host, port,
                                    OSError(errno.EADDRINUSE, "Address already in use"))
        transport = self.attach(protocol, port or None, host)
        transport.maxPacketSize = maxPacketSize
        return transport

    # -- IReactorTime, on the network's Clock ----------------------------------------------
    def seconds(self) -> float:
        return self.clock.seconds()

    def callLater(self, delay: float, callable: Callable[..., object],  # noqa: N802
                  *args: object, **kw: object) -> IDelayedCall:
        return self.clock.callLater(delay, callable, *args, **kw)

    def getDelayedCalls(self) -> Sequence[IDelayedCall]:  # noqa: N802
        return self.clock.getDelayedCalls()

    def detach(self, protocol: DatagramProtocol) -> None:
        """Take `protocol` off the network (what stopListening does on a real port)."""
        for address, attached in list(self._endpoints.items()):
            if attached is protocol:
                del self._endpoints[address]
                protocol.doStop()
                transport = protocol.transport
                if isinstance(transport, FakeDatagramTransport):
                    transport.connected = False

    def add_instance(self, dn: str = "100", *, timers: TimerSettings | None = None,
                     port: int | None = None, **kwargs: Any) -> SipInstance:
        """A `SipInstance` on this network (its clock for timers, its ports for each call's
        RTP), attached at a fresh port."""
        instance = SipInstance(dn, host=self.host, reactor=self, timers=timers, **kwargs)
        self.attach(instance, port)
        self.instances.append(instance)
        return instance

    def endpoint(self, port: int | None = None) -> Endpoint:
        """A raw `Endpoint` attached to the network."""
        endpoint = Endpoint()
        self.attach(endpoint, port)
        return endpoint

    # -- impairments -----------------------------------------------------------------------
    def impair(self, source: DatagramProtocol | Address, destination: DatagramProtocol | Address,
               impairment: Impairment) -> Impairment:
        """Impair datagrams from `source` to `destination` (one direction only)."""
        key = (self._address_of(source), self._address_of(destination))
        self._impairments[key] = impairment
        return impairment

    def impair_all(self, impairment: Impairment | None) -> None:
        """Impair every direction that has no impairment of its own (None to stop)."""
        self._default_impairment = impairment

    @property
    def impairments(self) -> list[Impairment]:
        found = list(self._impairments.values())
        if self._default_impairment is not None:
            found.append(self._default_impairment)
        return found

    def _address_of(self, what: DatagramProtocol | Address) -> Address:
        if isinstance(what, tuple):
            return (what[0], int(what[1]))
        for address, protocol in self._endpoints.items():
            if protocol is what:
                return address
        raise ValueError(f"{what!r} is not attached to this network")

    # -- sending and delivering ------------------------------------------------------------
    def _send(self, source: Address, destination: Address, data: bytes) -> None:
        self.sent += 1
        datagram = None
        if self.keep_log or not is_loopback(destination[0]):
            datagram = Datagram(source, destination, data, self.clock.seconds())
        if self.keep_log:
            self.log.append(datagram)  # type: ignore[arg-type]
        if not is_loopback(destination[0]):
            self.stray.append(datagram)  # type: ignore[arg-type]
        impairment = self._impairments.get((source, destination), self._default_impairment)
        if impairment is None:
            self._queue.append((source, destination, data))
            return
        now = self.clock.seconds()
        for delay in impairment.decide():
            if delay <= 0:
                self._queue.append((source, destination, data))
            else:
                heapq.heappush(self._held,
                               (now + delay, next(self._order), source, destination, data))

    def send(self, data: bytes, source: Address, destination: DatagramProtocol | Address) -> None:
        """Inject a datagram as if `source` had sent it (no endpoint needed there)."""
        self._send((source[0], int(source[1])), self._address_of(destination), data)

    def inject(self, data: bytes, source: Address, destination: DatagramProtocol | Address) -> None:
        """Hand a datagram straight to `destination`'s datagramReceived, bypassing the queue."""
        protocol = self._endpoints[self._address_of(destination)]
        protocol.datagramReceived(data, (source[0], int(source[1])))

    @property
    def pending(self) -> int:
        """Datagrams queued or held back, not delivered yet."""
        return len(self._queue) + len(self._held)

    def pump(self, limit: int = 1_000_000) -> int:
        """Deliver queued datagrams (and any they cause) until none is left; no time passes.

        Returns how many were delivered. `limit` guards against two endpoints that answer
        each other forever.
        """
        count = 0
        queue = self._queue
        endpoints = self._endpoints
        while queue:
            if count >= limit:
                raise RuntimeError(f"pump: more than {limit} datagrams without time passing")
            source, destination, data = queue.popleft()
            protocol = endpoints.get(destination)
            if protocol is None:
                self.undeliverable += 1
                continue
            count += 1
            self.delivered += 1
            limit = getattr(protocol.transport, "maxPacketSize", UDP_MAX)
            protocol.datagramReceived(data[:limit], source)
        return count

    def _next_event(self) -> float | None:
        calls = self.clock.getDelayedCalls()
        times = [min(c.getTime() for c in calls)] if calls else []
        if self._held:
            times.append(self._held[0][0])
        return min(times) if times else None

    def _release_held(self) -> None:
        now = self.clock.seconds()
        held = self._held
        while held and held[0][0] <= now:
            _, _, source, destination, data = heapq.heappop(held)
            self._queue.append((source, destination, data))

    def advance(self, seconds: float = 0.0) -> None:
        """Let `seconds` pass: deliver, run each timer when due, deliver what it sent, ..."""
        if seconds < 0:
            raise ValueError("time does not run backwards")
        clock = self.clock
        end = clock.seconds() + seconds
        self.pump()
        while True:
            when = self._next_event()
            if when is None or when > end:
                break
            clock.advance(max(0.0, when - clock.seconds()))
            self._release_held()
            self.pump()
        if end > clock.seconds():
            clock.advance(end - clock.seconds())
        self._release_held()
        self.pump()

    def run(self, d: "Deferred[T]", timeout: float = 120.0, step: float | None = None) -> T:
        """Advance time until `d` fires (at most `timeout` seconds) and return its result.

        A failure is raised; a Deferred still waiting afterwards raises `NetworkTimeout`.
        Time moves event by event (or by `step` seconds), so `d` is seen as soon as it fires.
        """
        box: list[Any] = []
        d.addBoth(box.append)
        clock = self.clock
        end = clock.seconds() + timeout
        self.pump()
        while not box:
            when = self._next_event()
            if step is not None:
                when = min(when, clock.seconds() + step) if when is not None \
                    else clock.seconds() + step
            if when is None or when > end:
                break
            clock.advance(max(0.0, when - clock.seconds()))
            self._release_held()
            self.pump()
        if not box:
            raise NetworkTimeout(f"Deferred {d!r} did not fire within {timeout:g} s")
        result = box[0]
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def result(self, d: "Deferred[T]") -> T:
        """The result of a Deferred that has already fired (like ``successResultOf``).

        Nothing is delivered and no time passes; a failure is raised.
        """
        box: list[Any] = []
        d.addBoth(box.append)
        if not box:
            raise NetworkTimeout(f"Deferred {d!r} has not fired")
        if isinstance(box[0], Failure):
            box[0].raiseException()
        return box[0]

    def settle(self, limit: float = 3600.0) -> None:
        """Advance until no timer and no held datagram is left (at most `limit` seconds)."""
        end = self.clock.seconds() + limit
        while True:
            when = self._next_event()
            if when is None or when > end:
                break
            self.advance(max(0.0, when - self.clock.seconds()))
        self.pump()

    def cleanup(self) -> "Deferred[None]":
        """`cleanup()` every instance added with `add_instance`; fires when all are done."""
        d = DeferredList([instance.cleanup() for instance in self.instances])
        return d.addCallback(lambda _: None)

    def datagrams(self, source: Address | None = None,
                  destination: Address | None = None) -> Iterator[Datagram]:
        """The logged datagrams, optionally only those from or to one address."""
        for datagram in self.log:
            if source is not None and datagram.source != source:
                continue
            if destination is not None and datagram.destination != destination:
                continue
            yield datagram

    def __repr__(self) -> str:
        return (f"<FakeNetwork t={self.clock.seconds():g} endpoints={len(self._endpoints)} "
                f"pending={self.pending}>")
