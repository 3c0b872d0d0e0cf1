"""An instance accepts TCP on its own port number (RFC 3261 §18.2.1, issue 11): requests
over an accepted connection are answered over it, requests to the addresses its peer
names go back over it, a message that cannot be framed gets 400 and the connection closes,
and cleanup leaves no connection and no listening port behind. Real loopback sockets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python import usage

from twsip.cli.pbx_options import listens_tcp
from twsip.config import SipInstanceConfig
from twsip.manager import InstanceManager
from twsip.sip.message import Message, Request, Response, parse, request_headers
from twsip.service import Options, makeService
from twsip.sip.stream import StreamFramer

from sipp_helper import kill_leftovers, requires_sipp, run_sipp


class Peer(Protocol):
    """A TCP peer of the instance: frames what it gets, hands out each message."""

    def __init__(self) -> None:
        self.framer = StreamFramer()
        self.received: list[Message] = []
        self.waiter: Deferred[Message] | None = None
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        for frame in self.framer.feed(data):
            message = parse(frame)
            self.received.append(message)
            waiter, self.waiter = self.waiter, None
            if waiter is not None:
                waiter.callback(message)

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        self.closed.callback(None)

    def next(self) -> Deferred[Message]:
        self.waiter = Deferred()
        return self.waiter

    def send(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


def options(port: int, branch: str, contact_port: int = 5999) -> Request:
    headers = request_headers(
        "OPTIONS", 1, via=f"SIP/2.0/TCP 127.0.0.1:{contact_port};branch=z9hG4bK{branch}",
        from_="<sip:peer@127.0.0.1>;tag=1", to="<sip:100@127.0.0.1>", call_id=branch)
    request = Request("OPTIONS", f"sip:100@127.0.0.1:{port}", headers)
    request.set("contact", f"<sip:peer@127.0.0.1:{contact_port};transport=tcp>")
    return request


async def connect(port: int) -> Peer:
    peer = Peer()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), peer)
    return peer


async def started(**kw: Any) -> tuple[InstanceManager, int]:
    manager = InstanceManager(base_port=0, media=False, listen_tcp=True, **kw)
    created = manager.create_instances([SipInstanceConfig(id="a", label="a", dn="100")])
    manager.start_serving()
    return manager, created[0].port


@pytest_twisted.ensureDeferred
async def test_requests_over_an_accepted_connection_are_answered_over_it() -> None:
    manager, port = await started()
    ua = manager.get_instance("a").ua
    try:
        peer = await connect(port)
        answered = peer.next()
        peer.send(options(port, "one").to_bytes())
        response = await answered
        assert isinstance(response, Response) and response.status == 200
        assert response.top_via.transport == "TCP"
        assert ua.transactions.reliable >= {("127.0.0.1", 5999)}
        # a request to the address the peer named goes over its connection, Via TCP
        arriving = peer.next()
        asked = ua.options("sip:peer@127.0.0.1:5999")
        request = await arriving
        assert isinstance(request, Request) and request.method == "OPTIONS"
        assert request.top_via.transport == "TCP"
        assert (request.top_via.host, request.top_via.port) == ("127.0.0.1", port)
        peer.send(request.response(200, to_tag="p").to_bytes())
        assert (await asked).status == 200
    finally:
        await manager.cleanup()
    await peer.closed  # cleanup closed the connection
    router = next(iter(manager.streams.values()), None)
    assert router is None and not ua.transactions.reliable


@pytest_twisted.ensureDeferred
async def test_a_bad_content_length_gets_400_then_the_connection_closes() -> None:
    manager, port = await started()
    try:
        peer = await connect(port)
        answered = peer.next()
        bad = options(port, "bad").to_bytes().replace(b"Content-Length: 0",
                                                      b"Content-Length: 12x")
        peer.send(bad + b"more bytes that can never be framed")
        response = await answered
        assert isinstance(response, Response) and response.status == 400
        await peer.closed
        # the instance lives on: a new connection is answered
        again = await connect(port)
        answered = again.next()
        again.send(options(port, "two").to_bytes())
        assert (await answered).status == 200  # type: ignore[union-attr]
    finally:
        await manager.cleanup()
    await again.closed


@pytest_twisted.ensureDeferred
async def test_cleanup_stops_listening_on_tcp() -> None:
    manager, port = await started()
    await manager.cleanup()
    try:
        await connect(port)
    except Exception as exc:
        assert "refused" in str(exc).lower()
    else:
        raise AssertionError("the TCP port still accepts")


@requires_sipp
@pytest_twisted.ensureDeferred
async def test_sipp_uac_over_tcp_calls_an_instance(tmp_path: Path) -> None:
    """``sipp -sn uac -t t1`` (one TCP connection) calls an auto-answering instance that
    accepts TCP: 20 calls, all successful, and no connection left after cleanup."""
    manager, port = await started()
    manager.start_serving(auto_answer=True)
    ua = manager.get_instance("a").ua
    try:
        result = await run_sipp(["-sn", "uac", "-t", "t1", f"127.0.0.1:{port}",
                                 "-m", "20", "-r", "10"], tmp_path / "uac", timeout=20)
        assert not result.killed, result.describe()
        assert result.exit_code == 0, result.describe()
        assert (result.successful, result.failed) == (20, 0), result.describe()
        assert result.retransmissions == 0, result.describe()
    finally:
        await kill_leftovers()
        await manager.cleanup()
    assert not ua.transactions.reliable and not manager.streams


def test_the_transport_option_of_twistd() -> None:
    """``--transport udp,tcp`` turns TCP on in the service's manager; udp alone is the
    default, and TCP without UDP (or anything else) is a usage error."""
    options = Options()
    options.parseOptions(["--transport", "UDP, tcp", "--no-demo"])
    assert listens_tcp(options)
    assert makeService(options).listen_tcp
    options = Options()
    options.parseOptions(["--no-demo"])
    assert not listens_tcp(options) and not makeService(options).listen_tcp
    for bad in ("tcp", "udp,sctp", ""):
        with pytest.raises(usage.UsageError):
            Options().parseOptions(["--transport", bad])
