"""What the stack needs of a reactor's time, as a typing Protocol.

Twisted declares `IReactorTime` and `IDelayedCall` as zope interfaces, which mypy reads as
classes whose methods lack `self`; these two Protocols say the same thing in a form the type
checker understands, and the reactor, `twisted.internet.task.Clock` and their DelayedCalls
all satisfy them structurally.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

__all__ = ["Clock", "DelayedCall", "cancel_call"]


class DelayedCall(Protocol):
    def active(self) -> bool: ...
    def cancel(self) -> None: ...
    def getTime(self) -> float: ...  # noqa: N802 (Twisted's name)


class Clock(Protocol):
    def seconds(self) -> float: ...
    def callLater(self, delay: float, callable: Callable[..., Any],  # noqa: N802
                  *args: Any, **kw: Any) -> DelayedCall: ...


def cancel_call(call: DelayedCall | None) -> None:
    """Cancel `call` if it is still pending (a fired or cancelled one raises if cancelled)."""
    if call is not None and call.active():
        call.cancel()
