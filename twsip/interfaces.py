"""What twsip needs of a reactor, as typing Protocols.

Twisted declares IReactorTime, IDelayedCall and IReactorUDP as zope interfaces; these
Protocols say the part twsip uses in a form every type checker reads, and the reactor,
`twisted.internet.task.Clock`, `twsip.testing.FakeNetwork` and their DelayedCalls all
satisfy them structurally.

The manager binds ports and the instances and the engine set timers; nothing else of the
reactor is used. Saying so in types lets a `twisted.internet.task.Clock` (time only) or a
`twsip.testing.FakeNetwork` (UDP and time, in memory) stand in for the real reactor, and
lets a type checker say which one a piece of code accepts.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from twisted.internet.protocol import DatagramProtocol

__all__ = ["DelayedCall", "ListeningPort", "TimeSource", "UDPReactor", "cancel_call"]


class DelayedCall(Protocol):
    """What twsip does with a timer it set (IDelayedCall)."""

    def active(self) -> bool: ...

    def cancel(self) -> None: ...

    def getTime(self) -> float: ...  # noqa: N802 (Twisted's name)


def cancel_call(call: DelayedCall | None) -> None:
    """Cancel `call` if it is still pending (cancelling a fired or cancelled one raises)."""
    if call is not None and call.active():
        call.cancel()


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
