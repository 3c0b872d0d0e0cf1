"""SIP over TCP to a PBX (twsip.sip.stream): Content-Length framing, no retransmission
timers towards a reliable peer (§17), and an instance registering over a real loopback
connection to a test-owned TCP registrar that also sends requests back over it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater

from twsip.config import SipInstanceConfig
from twsip.manager import InstanceManager, RegistrationFailed
from twsip.sip.message import Request, Response, parse, request_headers
from twsip.sip.stream import FramingError, StreamFramer
from twsip.sip.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    TransactionLayer,
)

PBX = ("127.0.0.1", 5070)


def message(body: bytes = b"", length: str | None = None, compact: bool = False) -> bytes:
    name = "l" if compact else "Content-Length"
    value = str(len(body)) if length is None else length
    return (b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKx"
            b"\r\n" + f"{name}: {value}".encode() + b"\r\n\r\n" + body)


# -- framing (§18.3) --------------------------------------------------------------------------

def test_framer_cuts_by_content_length_whatever_the_chunks() -> None:
    one, two = message(b"hello"), message(b"", compact=True)
    stream = b"\r\n\r\n" + one + b"\r\n" + two  # keep-alive CRLFs between messages
    framer = StreamFramer()
    assert framer.feed(stream) == [one, two]
    framer = StreamFramer()
    frames = [frame for byte in stream for frame in framer.feed(bytes([byte]))]
    assert frames == [one, two]


@pytest.mark.parametrize("data, why", [
    (message(length="12x"), "bad Content-Length"),
    (message(length="-1"), "bad Content-Length"),
    (b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n", "without Content-Length"),
    (message(length="70000"), "at most"),
    (b"X" * 70000, "no end of headers"),
])
def test_framer_refuses_what_cannot_be_framed(data: bytes, why: str) -> None:
    with pytest.raises(FramingError, match=why) as info:
        StreamFramer().feed(message(b"ok") + data)
    assert info.value.frames == [message(b"ok")]  # what came before is still delivered


# -- §17 on a reliable transport --------------------------------------------------------------

class User:
    def __init__(self) -> None:
        self.responses: list[Response] = []

    def receive_response(self, response: Response) -> None:
        self.responses.append(response)

    def timed_out(self) -> None:
        raise AssertionError("timed out")


def request(method: str, branch: str) -> Request:
    headers = request_headers(method, 1, via=f"SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK{branch}",
                              from_="<sip:a@127.0.0.1>;tag=1", to="<sip:b@127.0.0.1>",
                              call_id="c")
    return Request(method, "sip:b@127.0.0.1", headers)


def reliable_layer() -> tuple[TransactionLayer, Clock, list[bytes]]:
    clock, sent = Clock(), []
    layer = TransactionLayer(lambda data, addr, msg: sent.append(data), clock)
    layer.reliable.add(PBX)
    return layer, clock, sent


def test_client_transactions_never_retransmit_and_linger_zero() -> None:
    layer, clock, sent = reliable_layer()
    user = User()
    ClientNonInviteTransaction(layer, request("REGISTER", "r"), PBX, user)
    invite = request("INVITE", "i")
    ClientInviteTransaction(layer, invite, PBX, user)
    clock.advance(31.0)  # A and E would have fired many times over UDP
    assert len(sent) == 2
    layer.match_response(request("REGISTER", "r").response(200, to_tag="t"))
    layer.match_response(invite.response(486, to_tag="t"))  # ACKed once, Timer D zero
    clock.advance(0)
    assert len(layer) == 0 and not clock.getDelayedCalls()
    assert [r.status for r in user.responses] == [200, 486]
    assert sent[-1].startswith(b"ACK ")


def test_server_transactions_never_retransmit_and_linger_zero() -> None:
    layer, clock, sent = reliable_layer()
    bye = ServerNonInviteTransaction(layer, request("BYE", "b"), PBX)
    bye.respond(request("BYE", "b").response(200))
    invite = request("INVITE", "s")
    tx = ServerInviteTransaction(layer, invite, PBX)
    tx.respond(invite.response(486, to_tag="t"))
    clock.advance(0)
    assert len(layer) == 1  # the INVITE waits for its ACK (Timer H), without Timer G
    clock.advance(10.0)
    assert len(sent) == 2
    ack = request("ACK", "s")
    assert layer.match_request(ack)
    clock.advance(0)  # Timer I zero
    assert len(layer) == 0 and not clock.getDelayedCalls()


# -- a real loopback connection to a test-owned TCP registrar -----------------------------------

class TcpRegistrar(Protocol):
    """Answers REGISTER 200 (binding the Contact), and records all it gets."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.framer = StreamFramer()

    def connectionMade(self) -> None:  # noqa: N802
        self.server.connections.append(self)

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        for frame in self.framer.feed(data):
            msg = parse(frame)
            self.server.received.append(msg)
            if isinstance(msg, Request) and msg.method == "REGISTER":
                response = msg.response(200, to_tag="reg")
                response.set("contact", f"{msg.get('contact')};expires={msg.get('expires')}")
                self.transport.write(response.to_bytes())  # type: ignore[union-attr]
            waiter, self.server.waiter = self.server.waiter, None
            if waiter is not None:
                waiter.callback(msg)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        if not self.server.closed.called:
            self.server.closed.callback(None)


class Server(Factory):
    def __init__(self) -> None:
        self.connections: list[TcpRegistrar] = []
        self.received: list[Any] = []
        self.waiter: Deferred[Any] | None = None
        self.closed: Deferred[None] = Deferred()

    def buildProtocol(self, addr: Any) -> TcpRegistrar:  # noqa: N802
        return TcpRegistrar(self)

    def next(self) -> Deferred[Any]:
        self.waiter = Deferred()
        return self.waiter


@pytest.fixture
def server() -> Iterator[tuple[Server, int]]:
    factory = Server()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        yield factory, port.getHost().port
    finally:
        port.stopListening()


def tcp_config(port: int) -> SipInstanceConfig:
    return SipInstanceConfig(id="a", label="a", dn="100", pbx_host="127.0.0.1", pbx_port=port,
                             pbx_transport="TCP")


@pytest_twisted.ensureDeferred
async def test_register_over_tcp_and_answer_requests_on_the_connection(
        server: tuple[Server, int]) -> None:
    factory, port = server
    manager = InstanceManager(base_port=0, media=False)
    created = manager.create_instances([tcp_config(port)])
    try:
        await manager.register(created)
        register = factory.received[0]
        assert register.top_via.transport == "TCP"
        local = factory.connections[0].transport.getPeer()  # type: ignore[union-attr]
        assert (register.top_via.host, register.top_via.port) == (local.host, local.port)
        assert register.get("contact") == f"<sip:100@127.0.0.1:{local.port};transport=tcp>"
        assert manager.registrations["a"].registered
        ua = created[0].ua
        assert ua.transactions.reliable == {("127.0.0.1", port)}
        # the PBX sends a request back over the connection: answered over it
        options = request("OPTIONS", "o")
        answered = factory.next()
        factory.connections[0].transport.write(options.to_bytes())  # type: ignore
        response = await answered
        assert isinstance(response, Response) and response.status == 200
        # a stream that cannot be framed is closed, not wedged, and the instance lives on
        factory.connections[0].transport.write(  # type: ignore[union-attr]
            b"OPTIONS sip:x SIP/2.0\r\nVia: x\r\n\r\n")
        await factory.closed
        connection = manager.streams["a"].connections[("127.0.0.1", port)]
        while connection.stream is not None:  # until our side has seen the close too
            await deferLater(reactor, 0.01, lambda: None)
        # the next send reconnects, once, and the refresh goes over the new connection
        assert ua.transactions.reliable == {("127.0.0.1", port)}
        await manager.registrations["a"].register()
        assert len(factory.connections) == 2
        assert factory.received[-1].method == "REGISTER"
    finally:
        await manager.cleanup()
    assert not manager.streams


@pytest_twisted.ensureDeferred
async def test_cleanup_unregisters_and_closes_the_connection(
        server: tuple[Server, int]) -> None:
    factory, port = server
    manager = InstanceManager(base_port=0, media=False)
    created = manager.create_instances([tcp_config(port)])
    await manager.register(created)
    await manager.cleanup()
    assert factory.received[-1].get("expires") == "0"
    await factory.closed  # the connection is gone once cleanup has fired
    assert not created[0].ua.transactions.reliable


@pytest_twisted.ensureDeferred
async def test_a_pbx_that_refuses_the_connection_fails_the_registration() -> None:
    factory = Server()
    listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
    port = listening.getHost().port
    await listening.stopListening()  # nothing listens there now
    manager = InstanceManager(base_port=0, media=False)
    created = manager.create_instances([tcp_config(port)])
    try:
        with pytest.raises(RegistrationFailed, match="503.*TCP connection"):
            await manager.register(created)
    finally:
        await manager.cleanup()


@pytest_twisted.ensureDeferred
async def test_a_refused_reconnect_fails_the_request_as_503_with_one_warning(
        log_events: list[dict[str, Any]]) -> None:
    factory = Server()
    listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
    port = listening.getHost().port
    manager = InstanceManager(base_port=0, media=False)
    created = manager.create_instances([tcp_config(port)])
    try:
        await manager.register(created)
        await listening.stopListening()  # the PBX goes away...
        factory.connections[0].transport.loseConnection()  # type: ignore[union-attr]
        await factory.closed
        connection = manager.streams["a"].connections[("127.0.0.1", port)]
        while connection.stream is not None:  # until our side has seen the close too
            await deferLater(reactor, 0.01, lambda: None)
        del log_events[:]
        with pytest.raises(RegistrationFailed, match="503"):
            await manager.registrations["a"].register()  # ...and refuses the reconnect
        warnings = [e for e in log_events if e["log_level"].name == "warn"]
        assert len(warnings) == 1, warnings
        assert "503" in warnings[0]["log_format"] or "503" in str(warnings[0])
    finally:
        await manager.cleanup()
    assert not manager.streams and not created[0].ua.transactions.reliable
