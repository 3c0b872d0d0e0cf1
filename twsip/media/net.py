"""Where RTP may go and where it listens: the loopback rule and port binding.

Local mode sends only to 127.0.0.0/8 and never looks a name up (a name would make
`sendto` call the resolver, blocking the reactor). The media layer imports nothing from
twsip.sip; the rule itself is twsip.lexical's, shared with SIP. RTP ports are bound
like the SIP ports: the port asked for, else +2, +4, ... on `CannotListenError`, as
`mux.RtpPort`s (read through the reactor's one `RtpReadMux`).
"""

from __future__ import annotations

from typing import cast

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorUDP
from twisted.internet.protocol import DatagramProtocol

from twsip.lexical import Address, is_loopback
from twsip.media.mux import RtpPort
from twsip.interfaces import UDPReactor
from twsip.quiet_udp import listen_udp

__all__ = ["Address", "is_loopback", "listen_rtp", "RtpPortError"]


class RtpPortError(RuntimeError):
    """No UDP port could be bound for RTP; `ports` lists every one tried."""

    def __init__(self, host: str, ports: list[int], last_error: Exception | None) -> None:
        tried = ", ".join(str(p) for p in ports)
        super().__init__(f"no free RTP port on {host}: tried {tried} ({last_error})")
        self.host = host
        self.ports = ports


def listen_rtp(reactor: IReactorUDP, protocol: DatagramProtocol, port: int = 0, *,
               host: str = "127.0.0.1", max_retries: int = 50) -> IListeningPort:
    """Bind `protocol` on host:port, else port+2, +4, ... (`max_retries` more tries).

    Port 0 lets the system pick (one try). RTP ports are even by habit (RFC 3550 §11), so
    the steps of 2 keep the parity of the port asked for. `RtpPortError` if nothing binds.
    """
    if port == 0:
        try:
            return cast(IListeningPort, listen_udp(cast(UDPReactor, reactor), 0, protocol, host,
                                                   port_type=RtpPort))
        except CannotListenError as exc:
            raise RtpPortError(host, [0], exc) from None
    tried: list[int] = []
    last_error: Exception | None = None
    for candidate in range(port, min(65535, port + 2 * max_retries) + 1, 2):
        tried.append(candidate)
        try:
            return cast(IListeningPort,
                        listen_udp(cast(UDPReactor, reactor), candidate, protocol, host,
                                   port_type=RtpPort))
        except CannotListenError as exc:
            last_error = exc
    raise RtpPortError(host, tried, last_error)
