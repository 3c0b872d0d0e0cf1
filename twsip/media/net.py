"""Where RTP may go and where it listens: the loopback rule and port binding.

Local mode sends only to 127.0.0.0/8 and never looks a name up (a name would make
`sendto` call the resolver, blocking the reactor). The media layer imports nothing from
twsip.sip, so the SIP layer's rule is restated here in a few lines. RTP ports are bound
like the SIP ports: the port asked for, else +2, +4, ... on `CannotListenError`.
"""

from __future__ import annotations

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorUDP
from twisted.internet.protocol import DatagramProtocol

__all__ = ["Address", "is_loopback", "listen_rtp", "RtpPortError"]

Address = tuple[str, int]


def is_loopback(host: str) -> bool:
    """True for an ASCII dotted quad in 127.0.0.0/8 without leading zeros that names one
    host (not 127.0.0.0 or 127.255.255.255, where a send fails with EACCES)."""
    if not host.isascii():
        return False
    parts = host.split(".")
    if len(parts) != 4 or parts[0] != "127":
        return False
    octets = []
    for part in parts:
        if not part.isdigit() or len(part) > 3 or (len(part) > 1 and part[0] == "0"):
            return False
        value = int(part)
        if value > 255:
            return False
        octets.append(value)
    return octets[1:] not in ([0, 0, 0], [255, 255, 255])


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
            return reactor.listenUDP(0, protocol, interface=host, maxPacketSize=8192)
        except CannotListenError as exc:
            raise RtpPortError(host, [0], exc) from None
    tried: list[int] = []
    last_error: Exception | None = None
    for candidate in range(port, min(65535, port + 2 * max_retries) + 1, 2):
        tried.append(candidate)
        try:
            return reactor.listenUDP(candidate, protocol, interface=host,
                                     maxPacketSize=8192)
        except CannotListenError as exc:
            last_error = exc
    raise RtpPortError(host, tried, last_error)
