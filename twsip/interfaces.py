"""What twsip needs of a reactor, as typing Protocols.

The manager binds ports and the instances and the engine set timers; nothing else of the
reactor is used. Saying so in types lets a `twisted.internet.task.Clock` (time only) or a
`twsip.testing.FakeNetwork` (UDP and time, in memory) stand in for the real reactor, and
lets a type checker say which one a piece of code accepts.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from twisted.internet.protocol import DatagramProtocol

__all__ = ["DelayedCall", "ListeningPort", "TimeSource", "UDPReactor"]


class DelayedCall(Protocol):
    """What twsip does with a timer it set (IDelayedCall)."""

    def active(self) -> bool: ...

    def cancel(self) -> None: ...


class TimeSource(Protocol):
    """The part of IReactorTime that twsip's timers use."""

    def seconds(self) -> float: ...

    def callLater(self, delay: float, callable: Callable[..., object],  # noqa: N802
                  *args: object, **kw: object) -> DelayedCall: ...


class ListeningPort(Protocol):
    """What the manager does with a bound UDP port (IListeningPort, and Twisted's
    `maxPacketSize` attribute, which it raises to the UDP maximum)."""

    maxPacketSize: int  # noqa: N815 (Twisted's spelling)

    def getHost(self) -> Any: ...  # noqa: N802

    def stopListening(self) -> Any: ...  # noqa: N802 (a Deferred or None)


class UDPReactor(TimeSource, Protocol):
    """IReactorUDP and IReactorTime together: what an `InstanceManager` runs on."""

    def listenUDP(self, port: int, protocol: DatagramProtocol,  # noqa: N802
                  interface: str = ..., maxPacketSize: int = ...) -> ListeningPort: ...
