"""Who watches the messages of an instance: observers (ladders, reports, the flow engine)
and the message log.

Kept apart from the datagram path: per message the instance only tests its `observers`
list and the `log_messages` flag, and calls `notify` when somebody listens, so a quiet
instance pays nothing more.
"""

from __future__ import annotations

from typing import Callable, Protocol

from twisted.logger import Logger

from twsip.interfaces import TimeSource
from twsip.sip.digest import mask_credentials
from twsip.sip.message import Message, Request, Response
from twsip.sip.noise import printable
from twsip.sip.uri import Address

__all__ = ["MessageEvent", "MessageObservers", "Observer", "summary"]

log = Logger(namespace="twsip.instance")


class Instance(Protocol):
    """What an event says of the instance that saw the message (a `SipInstance`)."""

    @property
    def dn(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


def summary(message: Message) -> str:
    """A message in a few words: its method, or its status and reason."""
    if isinstance(message, Request):
        return message.method
    if isinstance(message, Response):
        return f"{message.status} {message.reason}"
    return type(message).__name__


class MessageEvent:
    """One SIP message seen at an instance, for observers (ladders, reports, logs)."""

    __slots__ = ("direction", "instance", "message", "peer", "time", "data")

    def __init__(self, direction: str, instance: Instance, message: Message,
                 peer: Address, time: float, data: bytes | None = None) -> None:
        self.direction = direction  # "in" or "out"
        self.instance = instance
        self.message = message
        self.peer = peer
        self.time = time
        # The datagram itself, for captures (pcap) that must show the exact bytes; None
        # when whoever made the event had only the parsed message.
        self.data = data

    @property
    def wire(self) -> bytes:
        """The message's bytes: as received or sent when known, else serialised again."""
        return self.data if self.data is not None else self.message.to_bytes()

    @property
    def summary(self) -> str:
        return summary(self.message)


Observer = Callable[[MessageEvent], None]


class MessageObservers:
    """The observers of one instance and its logging switches.

    `log_messages` logs one info line per SIP message; `trace_messages` adds its full text
    at debug level (twistd prints every level, so that is a separate switch). An observer
    that raises is logged and does not stop the others or the datagram.
    """

    __slots__ = ("instance", "clock", "observers", "log_messages", "trace_messages")

    def __init__(self, instance: Instance, clock: TimeSource, log_messages: bool,
                 trace_messages: bool) -> None:
        self.instance = instance
        self.clock = clock
        self.observers: list[Observer] = []
        self.log_messages = log_messages or trace_messages
        self.trace_messages = trace_messages

    def notify(self, direction: str, message: Message, peer: Address,
               data: bytes | None = None) -> None:
        if self.log_messages:
            # "DN 200 -> 200 OK to ...": the DN is labelled, so that it cannot be read as
            # a status code (the old "-> 200 200 OK" could).
            out = direction == "out"
            log.info("DN {dn} {direction} {summary} {preposition} {peer_host}:{peer_port} "
                     "Call-ID {call_id}", direction="->" if out else "<-",
                     preposition="to" if out else "from", dn=self.instance.dn,
                     summary=printable(summary(message)), peer_host=peer[0],
                     peer_port=peer[1], call_id=printable(message.get("call-id")))
            if self.trace_messages:
                log.debug("{text}", text=mask_credentials(str(message)))
        if self.observers:
            event = MessageEvent(direction, self.instance, message, peer,
                                 self.clock.seconds(), data)
            for observer in list(self.observers):
                try:
                    observer(event)
                except Exception:
                    log.failure("message observer failed")
