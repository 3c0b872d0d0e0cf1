"""UDP ports without Twisted's per-port log lines.

Twisted's UDP port logs "<Protocol> starting on N" when it binds and "(UDP Port N Closed)"
when it closes. twsip binds one port per instance and one per call (RTP): under load that
is two lines per call even with ``--quiet``, and the instance manager already says which
DN listens where. Binding and closing are done here as Twisted does them, minus those two
lines; reading and writing are Twisted's own. In-memory reactors (`twsip.testing`) log
nothing anyway and get the plain `listenUDP`.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet import base, udp
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorFDSet
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import DatagramProtocol

from twsip.interfaces import ListeningPort, UDPReactor

__all__ = ["listen_udp", "QuietPort"]


class QuietPort(udp.Port):
    def _bindSocket(self) -> None:  # noqa: N802 (Twisted's name)
        try:
            sock = self.createInternetSocket()
            sock.bind((self.interface, self.port))
        except OSError as exc:
            raise CannotListenError(self.interface, self.port, exc) from exc
        self._realPortNumber = sock.getsockname()[1]
        self.connected = 1
        self.socket = sock
        self.fileno = sock.fileno  # type: ignore[method-assign]

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        self._realPortNumber = None
        self.maxThroughput = -1
        base.BasePort.connectionLost(self, reason)
        self.protocol.doStop()
        self.socket.close()
        del self.socket
        del self.fileno
        if hasattr(self, "d"):
            self.d.callback(None)
            del self.d


def listen_udp(reactor: UDPReactor, port: int, protocol: DatagramProtocol, interface: str,
               max_packet_size: int = 8192, *,
               port_type: type[QuietPort] | None = None) -> ListeningPort:
    """`reactor.listenUDP`, quietly when the reactor is a real one (with a `port_type`
    of the caller's, a subclass of `QuietPort`, if given)."""
    if IReactorFDSet.providedBy(reactor) and isinstance(reactor, PosixReactorBase):
        listening = (port_type or QuietPort)(port, protocol, interface, max_packet_size,
                                             reactor)
        listening.startListening()
        return cast(ListeningPort, listening)
    return reactor.listenUDP(port, protocol, interface=interface, maxPacketSize=max_packet_size)
