"""SIP over TCP to a PBX (RFC 3261 §18): one client connection per instance and PBX.

An instance that registers with ``pbxTransport: TCP`` opens a connection to its PBX before
its first REGISTER, and everything it sends to the PBX's address from then on goes over
that connection: requests, responses, ACKs. What arrives on it (responses, and the
requests the PBX sends back over the same connection) is framed by Content-Length (§18.3)
and handed to the instance's ordinary receive path, so the transaction layer and the
dialogs see it as they see a datagram. The layer is told the PBX is reached reliably, so
§17's retransmission timers (A, E, G) stay off and D, I, J, K are zero.

Kept out of `SipInstance` (near its size limit, and on the UDP hot path): a
`StreamRouter` takes the instance's send function and forwards to UDP whatever is not for
a connection. Requests leave with a ``SIP/2.0/TCP`` Via naming the connection's local
address, and the instance's Contact becomes that address with ``transport=tcp``, so the
PBX reaches the instance over the connection it already has (no listening TCP port).
"""

from __future__ import annotations

import re
from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.protocol import ClientFactory
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from twsip.lexical import wire_number
from twsip.sip.message import MAX_DATAGRAM, Message, Request
from twsip.sip.noise import printable
from twsip.sip.observers import summary
from twsip.sip.transaction import TransactionLayer
from twsip.sip.uri import Address, is_loopback
from twsip.sip.wire import SendFailed

__all__ = ["FramingError", "StreamFramer", "StreamRouter", "PbxConnection",
           "ConnectFailed", "MAX_STREAM_MESSAGE"]

log = Logger(namespace="twsip.stream")

# The largest message accepted from a stream: a UDP datagram's size is already far beyond
# what a SIP message needs; past it the peer is not speaking SIP (or lies about a length).
MAX_STREAM_MESSAGE = MAX_DATAGRAM

_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.I | re.M)

SendFunction = Callable[[bytes, Address, Message], None]


class FramingError(Exception):
    """The stream cannot be cut into messages any more (§18.3): a missing or bad
    Content-Length, or a message too large. The connection has to go; `frames` are the
    whole messages cut before the fault, still to be delivered."""

    frames: list[bytes] = []


class StreamFramer:
    """Cuts a byte stream into whole SIP messages by their Content-Length (§18.3).

    CRLFs between messages (keep-alives, §7.5) are skipped. A header without the end of
    its headers within `limit` bytes, a missing or non-numeric Content-Length, or a body
    beyond `limit` raise `FramingError`; what came before it was delivered already.
    """

    def __init__(self, limit: int = MAX_STREAM_MESSAGE) -> None:
        self.limit = limit
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames: list[bytes] = []
        try:
            self._cut(frames)
        except FramingError as exc:
            exc.frames = frames
            raise
        return frames

    def _cut(self, frames: list[bytes]) -> None:
        buffer = self._buffer
        while True:
            start = 0
            while buffer[start:start + 2] == b"\r\n":
                start += 2
            if start:
                del buffer[:start]
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > self.limit:
                    raise FramingError(f"no end of headers within {self.limit} bytes")
                return
            head = bytes(buffer[:end])
            match = _LENGTH.search(head)
            if match is None:
                raise FramingError("a message without Content-Length (a stream needs one, "
                                   "RFC 3261 §18.3)")
            length = wire_number(match.group(1).strip().decode("ascii", "replace"))
            if length is None:
                raise FramingError(f"bad Content-Length "
                                   f"{printable(match.group(1).decode('latin-1'))!r}")
            total = end + 4 + length
            if total > self.limit:
                raise FramingError(f"a message of {total} bytes (at most {self.limit})")
            if len(buffer) < total:
                return
            frames.append(bytes(buffer[:total]))
            del buffer[:total]


class StreamUA(Protocol):
    """What the router needs of its instance (a `SipInstance`)."""

    dn: str
    host: str
    port: int

    @property
    def contact(self) -> str: ...
    @property
    def transactions(self) -> TransactionLayer: ...
    def datagramReceived(self, data: bytes, addr: Address) -> None: ...  # noqa: N802


class ConnectFailed(Exception):
    """The TCP connection to the PBX could not be opened."""


class _SipStream(TwistedProtocol):
    """One connection's bytes: framed, then handed to the `PbxConnection`."""

    def __init__(self, owner: PbxConnection) -> None:
        self.owner = owner
        self.framer = StreamFramer()
        self.made: Deferred[_SipStream] | None = None  # fired once connected

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        try:
            frames = self.framer.feed(data)
        except FramingError as exc:
            for frame in exc.frames:
                self.owner.deliver(frame)
            self.owner.framing_failed(self, exc)
            return
        for frame in frames:
            self.owner.deliver(frame)

    def connectionMade(self) -> None:  # noqa: N802
        made, self.made = self.made, None
        if made is not None and not made.called:
            made.callback(self)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]  # noqa: N802
        self.owner.lost(self, reason)


class _OneConnection(ClientFactory):
    """Opens one connection for `stream`; `made` fires with it or fails. Quiet: a
    thousand instances must not log a thousand "Starting factory" lines."""

    noisy = False

    def __init__(self, stream: _SipStream) -> None:
        self.stream = stream
        self.connector: Any = None
        self.made: Deferred[_SipStream] = Deferred(self._cancel)
        stream.made = self.made

    def _cancel(self, _: object) -> None:
        if self.connector is not None:
            self.connector.disconnect()  # stops a connection attempt, or closes

    def buildProtocol(self, addr: object) -> _SipStream:  # noqa: N802
        return self.stream

    def clientConnectionFailed(self, connector: object, reason: Failure) -> None:  # noqa: N802
        if not self.made.called:
            self.made.errback(reason)


class PbxConnection:
    """The TCP connection from one instance to one PBX.

    `connect()` fires once it is up (fails with `ConnectFailed` within `timeout` s).
    A connection the PBX closes is not reopened: later sends fail as a transport error
    (the transaction ends 503, §8.1.3.1) and one warning says so; the registration's next
    refresh then fails the same way, which is what a test of a PBX should see.
    `close()` fires once the connection is gone.
    """

    def __init__(self, router: StreamRouter, pbx: Address, reactor: Any,
                 timeout: float = 5.0) -> None:
        if not is_loopback(pbx[0]):  # local mode: never a name, never off the machine
            raise ValueError(f"local mode connects only to 127.0.0.0/8, not {pbx[0]!r}")
        self.router = router
        self.pbx = pbx
        self.reactor = reactor
        self.timeout = timeout
        self.stream: _SipStream | None = None
        self.local: Address | None = None
        self.closing = False
        self._connecting: Deferred[Any] | None = None
        self._gone: Deferred[None] | None = None

    @property
    def where(self) -> str:
        return f"{self.pbx[0]}:{self.pbx[1]}"

    def connect(self) -> Deferred[None]:
        if self.stream is not None:
            return succeed(None)
        factory = _OneConnection(_SipStream(self))
        d: Deferred[Any] = factory.made
        self._connecting = d
        factory.connector = self.reactor.connectTCP(self.pbx[0], self.pbx[1], factory,
                                                    timeout=self.timeout)

        def up(stream: _SipStream) -> None:
            self._connecting = None
            self.stream = stream
            host: Any = stream.transport.getHost()  # type: ignore[union-attr]
            self.local = (host.host, host.port)
            self.router.ua.transactions.reliable.add(self.pbx)
            log.info("DN {dn}: connected to {pbx} over TCP from {local}",
                     dn=self.router.ua.dn, pbx=self.where, local=f"{host.host}:{host.port}")

        def failed(failure: Failure) -> None:
            self._connecting = None
            raise ConnectFailed(f"no TCP connection to {self.where}: "
                                f"{failure.getErrorMessage()}")

        d.addCallbacks(up, failed)
        return d

    # -- from the stream ---------------------------------------------------------------
    def deliver(self, frame: bytes) -> None:
        self.router.ua.datagramReceived(frame, self.pbx)

    def framing_failed(self, stream: _SipStream, exc: FramingError) -> None:
        log.warn("DN {dn}: closing the TCP connection to {pbx}: {error}",
                 dn=self.router.ua.dn, pbx=self.where, error=str(exc))
        if stream.transport is not None:
            stream.transport.loseConnection()

    def lost(self, stream: _SipStream, reason: Failure | None) -> None:
        if stream is not self.stream:
            return
        self.stream = None
        self.router.ua.transactions.reliable.discard(self.pbx)
        if not self.closing:
            log.warn("DN {dn}: the TCP connection to {pbx} closed "
                     "({why}); requests to it now fail",
                     dn=self.router.ua.dn, pbx=self.where,
                     why=reason.getErrorMessage() if reason is not None else "")
        gone, self._gone = self._gone, None
        if gone is not None:
            gone.callback(None)

    # -- to the stream -------------------------------------------------------------------
    def send(self, data: bytes, message: Message) -> bytes:
        """Write `message` (rewritten for this connection); returns what went."""
        stream, local = self.stream, self.local
        if stream is None or local is None or stream.transport is None:
            raise SendFailed(summary(message), self.pbx, "the TCP connection to the PBX is "
                             "closed", False)
        data = self.router.rewrite(message, data, local)
        stream.transport.write(data)
        return data

    def close(self) -> Deferred[None]:
        self.closing = True
        if self._connecting is not None:
            self._connecting.cancel()
        stream = self.stream
        if stream is None or stream.transport is None:
            return succeed(None)
        d = self._gone = Deferred()
        stream.transport.loseConnection()
        return d


class StreamRouter:
    """An instance's sends, split between its UDP port and its connections.

    `install` makes the router the instance's `stream_router`: the instance asks it
    (`takes`) for every message it and its transactions send, so that every message for a
    PBX reached over TCP takes the connection, and all others the UDP socket as before.
    """

    def __init__(self, ua: StreamUA, udp_send: SendFunction) -> None:
        self.ua = ua
        self.udp_send = udp_send
        self.connections: dict[Address, PbxConnection] = {}

    @classmethod
    def install(cls, ua: Any) -> StreamRouter:
        router = getattr(ua, "stream_router", None)
        if isinstance(router, StreamRouter):
            return router
        router = cls(ua, ua.send_udp)
        ua.stream_router = router
        return router

    def takes(self, addr: Address) -> bool:
        """Whether a message for `addr` goes over one of the connections."""
        return addr in self.connections

    def connect(self, pbx: Address, reactor: Any, timeout: float = 5.0) -> Deferred[None]:
        connection = self.connections.get(pbx)
        if connection is None:
            connection = self.connections[pbx] = PbxConnection(self, pbx, reactor, timeout)
        return connection.connect()

    def send(self, data: bytes, addr: Address, message: Message) -> None:
        connection = self.connections.get(addr)
        if connection is None:
            self.udp_send(data, addr, message)
            return
        data = connection.send(data, message)
        watchers = getattr(self.ua, "watchers", None)
        if watchers is not None and (watchers.observers or watchers.log_messages):
            watchers.notify("out", message, addr, data)

    def rewrite(self, message: Message, data: bytes, local: Address) -> bytes:
        """`message` as it must leave over a connection from `local`: our top Via says
        TCP and the connection's address (§18.1.1), our Contact names that address with
        transport=tcp, so the PBX answers and calls back over this connection."""
        ua = self.ua
        changed = False
        if isinstance(message, Request):
            vias = message.headers.get("via")
            ours = f"SIP/2.0/UDP {ua.host}:{ua.port};"
            if vias and vias[0].startswith(ours):
                message.set("via", [f"SIP/2.0/TCP {local[0]}:{local[1]};"
                                    f"{vias[0][len(ours):]}", *vias[1:]])
                changed = True
        contacts = message.headers.get("contact")
        if contacts:
            mine = f"<{ua.contact}>"
            tcp = f"<sip:{ua.dn}@{local[0]}:{local[1]};transport=tcp>"
            if any(mine in value for value in contacts):
                message.set("contact", [value.replace(mine, tcp) for value in contacts])
                changed = True
        return message.to_bytes() if changed else data

    def close(self) -> Deferred[Any]:
        """Close every connection; fires once all are gone."""
        connections = list(self.connections.values())
        self.connections.clear()
        return DeferredList([c.close() for c in connections], consumeErrors=True)
