"""The RTP read mux on the real reactor: RTP ports are read through one reactor reader,
one datagram per readiness, with nothing left unread when a socket holds several; a
failing handler does not stop the others; closing the last port (or the reactor's
shutdown) takes the mux off the reactor. Waits on Deferreds, never sleeps."""

from __future__ import annotations

import socket
from typing import Any

import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.main import CONNECTION_LOST
from twisted.internet.protocol import DatagramProtocol
from twisted.python.failure import Failure

from twsip.media.mux import RtpPort, RtpReadMux, mux_for, mux_ports
from twsip.media.net import listen_rtp


class Collect(DatagramProtocol):
    """Fires `done` once `expected` datagrams have arrived; `fail` raises on each."""

    def __init__(self, expected: int, fail: bool = False) -> None:
        self.got: list[bytes] = []
        self.expected = expected
        self.fail = fail
        self.stopped = False
        self.done: defer.Deferred[list[bytes]] = defer.Deferred()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.got.append(datagram)
        if len(self.got) == self.expected and not self.done.called:
            self.done.callback(self.got)
        if self.fail:
            raise RuntimeError("handler failure")

    def stopProtocol(self) -> None:
        self.stopped = True


def send(port: int, datagrams: list[bytes]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for datagram in datagrams:
            sender.sendto(datagram, ("127.0.0.1", port))


@pytest_twisted.ensureDeferred
async def test_rtp_ports_are_read_through_one_reader_and_leave_it_on_close() -> None:
    mux = mux_for(reactor)
    assert isinstance(mux, RtpReadMux)
    protocols = [Collect(3), Collect(3, fail=True), Collect(3)]
    ports = [listen_rtp(reactor, protocol) for protocol in protocols]
    try:
        assert all(isinstance(port, RtpPort) for port in ports)
        assert set(mux_ports(reactor)) >= set(ports)
        assert mux in reactor.getReaders()
        assert not set(ports) & set(reactor.getReaders())
        # Three datagrams wait in each socket before the reactor looks: each poll of the
        # mux reads one per socket, the next poll finds the rest.
        for protocol, port in zip(protocols, ports):
            send(port.getHost().port, [b"%d" % n for n in range(3)])
        got = await defer.gatherResults([p.done for p in protocols]).addTimeout(5, reactor)
    finally:
        for port in ports:
            await port.stopListening()
    assert got == [[b"0", b"1", b"2"]] * 3  # in order; the failing handler stopped nothing
    assert all(p.stopped for p in protocols)
    await task.deferLater(reactor, 0, lambda: None)
    assert mux_ports(reactor) == [] and mux not in reactor.getReaders()


@pytest_twisted.ensureDeferred
async def test_shutdown_passes_connection_lost_to_every_port() -> None:
    """What the reactor does to its readers at shutdown, the mux does to its ports."""
    mux = RtpReadMux(reactor)  # a mux of its own, so the global one is left alone
    protocols = [Collect(1), Collect(1)]
    ports = [RtpPort(0, protocol, "127.0.0.1", 8192, reactor) for protocol in protocols]
    for port in ports:
        port._bindSocket()
        port.protocol.makeConnection(port)
        mux.add(port)
    assert mux in reactor.getReaders() and len(mux.ports()) == 2
    reactor.removeReader(mux)  # as reactor.removeAll() does first
    mux.connectionLost(Failure(CONNECTION_LOST))
    assert mux.ports() == [] and all(p.stopped for p in protocols)
    assert mux not in reactor.getReaders()
