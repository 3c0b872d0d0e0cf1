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
PBX reaches the instance over the connection it already has.

With ``--transport udp,tcp`` the router also listens on TCP at the instance's own port
number (`StreamRouter.listen`) and keeps each accepted connection (`PeerConnection`) as
the way back to its peer, under the peer's address and the addresses it names for itself
(top Via, Contact): SIPp ``-t t1`` opens one connection and expects everything, its
responses and our in-dialog requests, on it.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.protocol import ClientFactory, Factory
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

__all__ = ["FramingError", "StreamFramer", "StreamRouter", "PbxConnection", "PeerConnection",
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
    # The header of the message whose Content-Length is the fault, so that it can still
    # be answered 400 (as the same message over UDP would be) before the connection goes.
    head: bytes | None = None


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
                error = FramingError(f"bad Content-Length "
                                     f"{printable(match.group(1).decode('latin-1'))!r}")
                error.head = head + b"\r\n\r\n"
                raise error
            total = end + 4 + length
            if total > self.limit:
                error = FramingError(f"a message of {total} bytes (at most {self.limit})")
                error.head = head + b"\r\n\r\n"
                raise error
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


class _StreamOwner(Protocol):
    """Who a connection's frames go to: a `PbxConnection` or a `PeerConnection`."""

    def opened(self, stream: _SipStream) -> None: ...
    def deliver(self, frame: bytes) -> None: ...
    def framing_failed(self, stream: _SipStream, exc: FramingError) -> None: ...
    def lost(self, stream: _SipStream, reason: Failure | None) -> None: ...


class _SipStream(TwistedProtocol):
    """One connection's bytes: framed, then handed to its owner."""

    def __init__(self, owner: _StreamOwner) -> None:
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
        self.owner.opened(self)
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
    A connection the PBX closes is reopened by the next send, once (§18.1.1 lets a client
    open a new connection): what is sent meanwhile waits for it, and a PBX that refuses
    the new connection fails those requests' transactions as 503 (§8.1.3.1) with one
    warning each; the next send tries once more, so a PBX that comes back is reached
    again without a retry loop hammering one that is down. `close()` fires once the
    connection is gone.
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
        self._waiting: list[tuple[bytes, Message]] = []  # sent while reconnecting

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
        if exc.head is not None:  # its 400, if answerable, as over UDP
            self.deliver(exc.head)
        if stream.transport is not None:
            stream.transport.loseConnection()

    def opened(self, stream: _SipStream) -> None:
        """Nothing to learn here: `connect` hears of the connection through its Deferred."""

    def lost(self, stream: _SipStream, reason: Failure | None) -> None:
        if stream is not self.stream:
            return
        self.stream = None
        if not self.closing:  # the PBX stays reliable: the next send reconnects
            log.warn("DN {dn}: the TCP connection to {pbx} closed "
                     "({why}); the next request to it reconnects",
                     dn=self.router.ua.dn, pbx=self.where,
                     why=reason.getErrorMessage() if reason is not None else "")
        gone, self._gone = self._gone, None
        if gone is not None:
            gone.callback(None)

    # -- to the stream -------------------------------------------------------------------
    def send(self, data: bytes, message: Message) -> bytes | None:
        """Write `message` (rewritten for this connection); returns what went, or None
        when it waits for the connection to be reopened."""
        stream, local = self.stream, self.local
        if stream is None or local is None or stream.transport is None:
            if self.closing or local is None:  # closed by us, or never opened
                raise SendFailed(summary(message), self.pbx, "the TCP connection to the "
                                 "PBX is closed", False)
            self._reconnect(data, message)
            return None
        data = self.router.rewrite(message, data, local)
        stream.transport.write(data)
        return data

    def _reconnect(self, data: bytes, message: Message) -> None:
        self._waiting.append((data, message))
        if self._connecting is not None:
            return
        log.info("DN {dn}: reconnecting to {pbx} over TCP", dn=self.router.ua.dn,
                 pbx=self.where)

        def flush(_: object) -> None:
            waiting, self._waiting = self._waiting, []
            for data, message in waiting:
                try:
                    self.router.send(data, self.pbx, message)
                except SendFailed as exc:
                    self._failed(message, exc)

        def refused(failure: Failure) -> None:
            waiting, self._waiting = self._waiting, []
            for _, message in waiting:
                self._failed(message, SendFailed(summary(message), self.pbx,
                                                 failure.getErrorMessage(), False))

        self.connect().addCallbacks(flush, refused)

    def _failed(self, message: Message, exc: SendFailed) -> None:
        """A message that waited for a reconnection could not go: its client transaction
        fails as 503 (which warns); anything else (a response, an ACK) is only said."""
        if not self.router.ua.transactions.fail_request(message, exc):
            log.warn("DN {dn}: could not send {what}: {error}", dn=self.router.ua.dn,
                     what=exc.what, error=exc.error)

    def close(self) -> Deferred[None]:
        self.closing = True
        self.router.ua.transactions.reliable.discard(self.pbx)
        if self._connecting is not None:
            self._connecting.cancel()
        stream = self.stream
        if stream is None or stream.transport is None:
            return succeed(None)
        d = self._gone = Deferred()
        stream.transport.loseConnection()
        return d


_VIA_TCP = re.compile(rb"^(?:via|v)[ \t]*:[ \t]*SIP/2\.0/TCP[ \t]+([0-9.]+):([0-9]+)", re.I | re.M)
_CONTACT = re.compile(rb"^(?:contact|m)[ \t]*:[^\r\n]*?sips?:(?:[^@\r\n>]*@)?([0-9.]+):([0-9]+)",
                      re.I | re.M)


def _named_addresses(frame: bytes) -> list[Address]:
    """The loopback addresses a peer names for itself in a message it sent over its
    connection: the top Via's sent-by and the Contact. Messages for them later (a BYE to
    the Contact) go back over that connection, as §18.2.2 and §18.1.1 have a UA reuse it."""
    found: list[Address] = []
    head = frame[:frame.find(b"\r\n\r\n")]
    for pattern in (_VIA_TCP, _CONTACT):
        match = pattern.search(head)
        if match is not None:
            host, port = match.group(1).decode("ascii"), int(match.group(2))
            if is_loopback(host) and 0 < port < 65536:
                found.append((host, port))
    return found


class PeerConnection:
    """A connection a peer opened to the instance's TCP port (§18.2.1, SIPp ``-t t1``).

    Its messages go up the instance's ordinary receive path with the peer's address as
    the way back, so responses, and requests to the addresses the peer names for itself,
    leave over this connection (with a ``SIP/2.0/TCP`` Via): the peer may have no TCP
    port of its own to be reached at. A message that cannot be framed is answered 400
    when it can be (as over UDP), then the connection closes: it can never wedge.
    """

    def __init__(self, router: StreamRouter) -> None:
        self.router = router
        self.stream: _SipStream | None = None
        self.peer: Address | None = None
        self.names: set[Address] = set()  # the peer's address, and those it names
        self._gone: Deferred[None] | None = None

    def opened(self, stream: _SipStream) -> None:
        self.stream = stream
        peer: Any = stream.transport.getPeer()  # type: ignore[union-attr]
        self.peer = (peer.host, peer.port)
        self.router.attach(self, self.peer)

    def deliver(self, frame: bytes) -> None:
        if self.peer is None:
            return
        for name in _named_addresses(frame):
            if name not in self.names:
                self.router.attach(self, name)
        self.router.ua.datagramReceived(frame, self.peer)

    def framing_failed(self, stream: _SipStream, exc: FramingError) -> None:
        log.warn("DN {dn}: closing the TCP connection from {peer}: {error}",
                 dn=self.router.ua.dn, peer=self.peer, error=str(exc))
        if exc.head is not None and self.peer is not None:
            self.router.ua.datagramReceived(exc.head, self.peer)  # its 400, if answerable
        if stream.transport is not None:
            stream.transport.loseConnection()  # after what was written

    def lost(self, stream: _SipStream, reason: Failure | None) -> None:
        self.stream = None
        self.router.detach(self)
        gone, self._gone = self._gone, None
        if gone is not None:
            gone.callback(None)

    def send(self, data: bytes, message: Message) -> bytes:
        stream = self.stream
        if stream is None or stream.transport is None or self.peer is None:
            raise SendFailed(summary(message), self.peer or ("", 0),
                             "the TCP connection from the peer is closed", False)
        ua = self.router.ua
        data = self.router.rewrite(message, data, (ua.host, ua.port))
        stream.transport.write(data)
        return data

    def close(self) -> Deferred[None]:
        stream = self.stream
        if stream is None or stream.transport is None:
            return succeed(None)
        d = self._gone = Deferred()
        stream.transport.loseConnection()
        return d


class _Accepting(Factory):
    """Builds a `PeerConnection` for each connection to the instance's TCP port. Quiet,
    as a thousand instances must not log a thousand "Starting factory" lines."""

    noisy = False

    def __init__(self, router: StreamRouter) -> None:
        self.router = router

    def buildProtocol(self, addr: object) -> _SipStream:  # noqa: N802
        return _SipStream(PeerConnection(self.router))


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
        # peer address (and each address it names for itself) -> its accepted connection
        self.accepted: dict[Address, PeerConnection] = {}
        self.listening: Any = None  # the instance's TCP port, once `listen` opened it

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
        return addr in self.connections or addr in self.accepted

    def listen(self, reactor: Any) -> Any:
        """Accept TCP on the instance's own port number (its UDP port's), so a peer such
        as SIPp ``-t t1`` can call it over TCP (§18.2.1); returns the listening port,
        which `close` stops. Raises CannotListenError when the number is taken for TCP."""
        self.listening = reactor.listenTCP(self.ua.port, _Accepting(self),
                                           interface=self.ua.host)
        return self.listening

    def attach(self, peer: PeerConnection, addr: Address) -> None:
        """Messages for `addr` go over `peer` from now on, with no retransmission timers."""
        self.accepted[addr] = peer
        peer.names.add(addr)
        self.ua.transactions.reliable.add(addr)

    def detach(self, peer: PeerConnection) -> None:
        for addr in peer.names:
            if self.accepted.get(addr) is peer:
                del self.accepted[addr]
                self.ua.transactions.reliable.discard(addr)
        peer.names.clear()

    def connect(self, pbx: Address, reactor: Any, timeout: float = 5.0) -> Deferred[None]:
        connection = self.connections.get(pbx)
        if connection is None:
            connection = self.connections[pbx] = PbxConnection(self, pbx, reactor, timeout)
        return connection.connect()

    def send(self, data: bytes, addr: Address, message: Message) -> None:
        connection: PbxConnection | PeerConnection | None = self.connections.get(addr)
        if connection is None:
            connection = self.accepted.get(addr)
        if connection is None:
            self.udp_send(data, addr, message)
            return
        sent = connection.send(data, message)
        if sent is None:  # waits for a reconnection; told when it goes
            return
        data = sent
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
        """Stop listening and close every connection; fires once all are gone."""
        connections: list[PbxConnection | PeerConnection] = list(self.connections.values())
        self.connections.clear()
        connections += list(dict.fromkeys(self.accepted.values()))  # each once
        closing = [c.close() for c in connections]
        listening, self.listening = self.listening, None
        if listening is not None:
            closing.append(maybeDeferred(listening.stopListening))
        return DeferredList(closing, consumeErrors=True)
