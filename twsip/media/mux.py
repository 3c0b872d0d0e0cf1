"""Reading every RTP socket of a reactor through one reader, one datagram per readiness.

Each call has an RTP socket of its own, receiving 50 datagrams a second. Read the Twisted
way, each datagram costs the reactor's dispatch of a ready descriptor (a logging context
per event, ~3 us here) and a second `recvfrom` that fails with EAGAIN (an exception, ~2 us)
on top of the one that reads it: at 1000 calls, 50,000 of each a second, a quarter of a
core before the datagram is even looked at.

`RtpReadMux` is one `IReadDescriptor` for all of them: an epoll set of its own, whose
descriptor the reactor watches like any socket's. When it is readable, `doRead` asks the
set which sockets are ready (one system call for all) and reads exactly one datagram from
each, handing it to the port's protocol. Both epolls are level-triggered, so a socket that
still holds datagrams is simply reported again by the next `poll`: nothing waits on an
EAGAIN to learn that a socket is empty. A few rounds are read per wake-up (a busy shared
socket is read once per round), then the reactor gets its turn (timers, other sockets).

Only `RtpPort`s on a reactor that can watch a descriptor (Linux epoll, a POSIX reactor) use
it; elsewhere an RTP port reads the Twisted way. Its ports do not show in
`reactor.getReaders()`; `mux_ports(reactor)` lists them. At reactor shutdown, the mux passes
`connectionLost` on to every port, as the reactor would have done itself.
"""

from __future__ import annotations

import select
import weakref
from typing import Any, Callable

from twisted.internet.interfaces import IReactorFDSet
from twisted.internet.posixbase import PosixReactorBase
from twisted.logger import Logger
from twisted.python.failure import Failure

from twsip.quiet_udp import QuietPort

__all__ = ["RtpReadMux", "RtpPort", "mux_for", "mux_ports", "ROUNDS"]

log = Logger()

ROUNDS = 16  # polls of the set per wake-up: up to 16 datagrams from one busy socket

_Entry = tuple[Callable[[int], tuple[bytes, Any]], int, Callable[[bytes, Any], None], "RtpPort"]

_muxes: weakref.WeakKeyDictionary[Any, RtpReadMux] = weakref.WeakKeyDictionary()


def mux_for(reactor: Any) -> RtpReadMux | None:
    """The reactor's mux, created on first use; None where there is no epoll to build it
    on or the reactor cannot watch a descriptor (test fakes)."""
    mux = _muxes.get(reactor)
    if mux is None:
        if not (hasattr(select, "epoll") and IReactorFDSet.providedBy(reactor)
                and isinstance(reactor, PosixReactorBase)):
            return None
        mux = _muxes[reactor] = RtpReadMux(reactor)
    return mux


def mux_ports(reactor: Any) -> list[RtpPort]:
    """The ports the reactor's mux reads (none if it has no mux)."""
    mux = _muxes.get(reactor)
    return mux.ports() if mux is not None else []


class RtpReadMux:
    """One reactor reader for many UDP ports; see the module docstring for why."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self._epoll = select.epoll()
        self._table: dict[int, _Entry] = {}
        self._registered = False  # with the reactor
        self.wakeups = 0  # doRead calls, for statistics
        self.datagrams = 0  # datagrams read, for statistics

    def fileno(self) -> int:
        return self._epoll.fileno()

    def logPrefix(self) -> str:  # noqa: N802 (Twisted's name)
        return "RtpReadMux"

    def ports(self) -> list[RtpPort]:
        return [entry[3] for entry in self._table.values()]

    def add(self, port: RtpPort) -> None:
        """Start reading `port` (its `startReading`)."""
        fd = port.fileno()
        if fd in self._table:
            return
        port.mux_fd = fd  # the socket may be closed by the time it is removed
        port.mux = self
        self._table[fd] = (port.socket.recvfrom, port.maxPacketSize,
                           port.protocol.datagramReceived, port)
        self._epoll.register(fd, select.EPOLLIN)
        if not self._registered:
            self._registered = True
            self.reactor.addReader(self)

    def remove(self, port: RtpPort) -> None:
        """Stop reading `port` (its `stopReading`); unknown ports are ignored."""
        fd = port.mux_fd
        if fd is None or fd not in self._table or self._table[fd][3] is not port:
            return
        port.mux_fd = None
        port.mux = None
        del self._table[fd]
        try:
            self._epoll.unregister(fd)
        except OSError:  # already closed: the kernel dropped it from the set itself
            pass
        if not self._table and self._registered:
            self._registered = False
            self.reactor.removeReader(self)

    def doRead(self) -> None:  # noqa: N802 (Twisted's name)
        """One datagram from every ready socket, for up to `ROUNDS` rounds."""
        self.wakeups += 1
        table = self._table
        poll = self._epoll.poll
        count = 0
        for _ in range(ROUNDS):
            events = poll(0)
            if not events:
                break
            for fd, _mask in events:
                entry = table.get(fd)
                if entry is None:
                    continue
                recvfrom, size, received, _port = entry
                try:
                    data, addr = recvfrom(size)
                except OSError:
                    # EAGAIN (read meanwhile), ECONNREFUSED (an ICMP error of an earlier
                    # send): what Twisted ignores on an unconnected port. Nothing else
                    # happens to a loopback UDP socket; one socket must not stop the rest.
                    continue
                count += 1
                try:
                    received(data, addr)
                except Exception:
                    log.failure("RTP datagram handler failed")
        self.datagrams += count

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802 (Twisted's name)
        """The reactor shuts down: every port loses its connection, as it would have (and
        leaves the mux, which leaves the reactor with the last)."""
        for entry in list(self._table.values()):
            entry[3].connectionLost(reason)


class RtpPort(QuietPort):
    """A quiet UDP port that reads through its reactor's `RtpReadMux` when there is one."""

    mux: RtpReadMux | None = None  # the mux reading this port, while one does
    mux_fd: int | None = None  # the descriptor the mux knows it by

    def startReading(self) -> None:  # noqa: N802 (Twisted's name)
        mux = mux_for(self.reactor)
        if mux is None:
            super().startReading()
        else:
            mux.add(self)

    def stopReading(self) -> None:  # noqa: N802 (Twisted's name)
        if self.mux is not None:
            self.mux.remove(self)
        else:
            super().stopReading()
