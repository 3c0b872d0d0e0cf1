"""One SIP user agent on one UDP port: the UA core of RFC 3261 §8 as a DatagramProtocol.

A datagram walks up: parse -> transaction match (retransmissions stop there) -> dialog
match -> the core's checks (§8.2) -> the application (`incoming` queue, session Deferreds).
Nothing that arrives can escape `datagramReceived`, and nothing leaves except towards
127.0.0.0/8: responses go where their request came from (§18.2.2 received, RFC 3581 rport),
whatever the headers say.
"""

from __future__ import annotations

import itertools
import os
import socket
from typing import Any, Callable

from twisted.internet.defer import Deferred, DeferredList, DeferredQueue, QueueOverflow, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from twsip.sip.dialog import (
    ALLOWED_METHODS,
    CallFailed,
    ClientSession,
    ServerSession,
    Session,
)
from twsip.sip.message import Message, Request, Response, SipParseError, parse
from twsip.sip.transaction import (
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    TimerSettings,
    TransactionLayer,
)
from twsip.sip.uri import SUPPORTED_SCHEMES, Address, is_loopback, loopback_address, uri_scheme
from twsip.sip import sdp

__all__ = ["SipInstance", "MessageEvent", "KNOWN_METHODS"]

log = Logger(namespace="twsip.instance")

# The socket's receive buffer (the kernel caps it at net.core.rmem_max). It only costs memory
# while datagrams wait, and lets them wait out a pause of this process (a full garbage
# collection with tens of thousands of calls in Timer L/J takes a few hundred ms under load)
# instead of being dropped and retransmitted by the peer.
RECEIVE_BUFFER = 4 * 1024 * 1024
# is_loopback() per destination host seen, since every datagram sent asks.
_loopback_hosts: dict[str, bool] = {}


# Methods this UA knows but does not serve: 405 with Allow (§8.2.1). Others get 501.
KNOWN_METHODS = frozenset({
    "REGISTER", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "INFO", "UPDATE", "PRACK",
    "PUBLISH",
})
ACCEPTED_BODIES = ("application/sdp",)
ALLOW = ", ".join(ALLOWED_METHODS)


class MessageEvent:
    """One SIP message seen at an instance, for observers (ladders, reports, logs)."""

    __slots__ = ("direction", "instance", "message", "peer", "time")

    def __init__(self, direction: str, instance: "SipInstance", message: Message,
                 peer: Address, time: float) -> None:
        self.direction = direction  # "in" or "out"
        self.instance = instance
        self.message = message
        self.peer = peer
        self.time = time

    @property
    def summary(self) -> str:
        return _summary(self.message)


def _summary(message: Message) -> str:
    if isinstance(message, Request):
        return message.method
    return f"{message.status} {message.reason}"


def _warning(reason: str) -> str:
    """A Warning value (RFC 3261 §20.43) carrying a human reason; quotes and backslashes
    are replaced so the quoted-string stays well formed."""
    return '399 twsip "{}"'.format(reason.replace("\\", "/").replace('"', "'"))


class SipInstance(DatagramProtocol):
    """A SIP phone: places calls (`invite`) and queues received ones (`incoming`).

    `log_messages` logs one info line per SIP message; `trace_messages` adds its full
    text at debug level (twistd prints every level, so that is a separate switch).
    """

    noisy = False  # a thousand instances must not log a thousand "starting on" lines

    def __init__(self, dn: str = "100", *, host: str = "127.0.0.1",
                 codecs: tuple[str, ...] | list[str] = ("PCMU", "PCMA"),
                 reactor: IReactorTime | None = None, timers: TimerSettings | None = None,
                 queue_size: int = 64, log_messages: bool = False,
                 trace_messages: bool = False) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor
            reactor = global_reactor  # type: ignore[assignment]
        self.dn = dn
        self.host = host
        self.port = 0
        self.codecs = tuple(codecs)
        self.clock: IReactorTime = reactor  # type: ignore[assignment]
        self.transactions = TransactionLayer(self._send, self.clock, timers)
        self.incoming: DeferredQueue[ServerSession] = DeferredQueue(size=queue_size)
        self.serving = False
        self.log_messages = log_messages or trace_messages
        self.trace_messages = trace_messages
        self.dialogs: dict[tuple[str, str, str | None], Session] = {}
        self.calls: set[Session] = set()
        self.observers: list[Callable[[MessageEvent], None]] = []
        self._prefix = os.urandom(4).hex()
        self._counter = itertools.count(1)
        self._auto_answer: Deferred | None = None

    # -- identity --------------------------------------------------------------------
    def startProtocol(self) -> None:
        self.port = self.transport.getHost().port
        sock = getattr(self.transport, "socket", None)
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            except OSError:
                pass

    @property
    def address(self) -> Address:
        return (self.host, self.port)

    @property
    def uri(self) -> str:
        return f"sip:{self.dn}@{self.host}:{self.port}"

    @property
    def contact(self) -> str:
        return self.uri

    def new_branch(self) -> str:
        return f"z9hG4bK{self._prefix}{next(self._counter):x}"

    def new_via(self) -> str:
        """The Via of a new request from here: a fresh branch, and rport (RFC 3581) so the
        answer comes back to the port we sent from."""
        return f"SIP/2.0/UDP {self.host}:{self.port};branch={self.new_branch()};rport"

    def new_tag(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"

    def new_call_id(self) -> str:
        return f"{self._prefix}{next(self._counter):x}@{self.host}"

    def media_port(self) -> int:
        return self.port + 10000 if self.port < 55000 else self.port - 10000

    # -- the wire ------------------------------------------------------------------------
    def _send(self, data: bytes, addr: Address, message: Message) -> None:
        host = addr[0]
        loopback = _loopback_hosts.get(host)
        if loopback is None:
            loopback = is_loopback(host)
            if len(_loopback_hosts) < 256:
                _loopback_hosts[host] = loopback
        if not loopback:
            log.warn("local mode: not sending {what} to {peer}, outside 127.0.0.0/8",
                     what=_summary(message), peer=addr[0])
            return
        transport = self.transport
        if transport is None:
            return
        # The address is a checked IPv4 literal, so Twisted's per-write address checks
        # (three isIPAddress calls, a fifth of the send cost under load) add nothing:
        # send on the socket directly and leave only errors to Twisted's handling.
        sock = getattr(transport, "socket", None)
        if sock is None:
            transport.write(data, addr)
        else:
            try:
                sock.sendto(data, addr)
            except OSError:
                transport.write(data, addr)
        if self.observers or self.log_messages:
            self._observe("out", message, addr)

    def send_message(self, message: Message, addr: Address) -> None:
        self._send(message.to_bytes(), addr, message)

    def _observe(self, direction: str, message: Message, peer: Address) -> None:
        if self.log_messages:
            log.info("{direction} {dn} {summary} {peer_host}:{peer_port} call-id={call_id}",
                     direction="->" if direction == "out" else "<-", dn=self.dn,
                     summary=_summary(message), peer_host=peer[0], peer_port=peer[1],
                     call_id=message.get("call-id"))
            if self.trace_messages:
                log.debug("{text}", text=message)
        if self.observers:
            event = MessageEvent(direction, self, message, peer, self.clock.seconds())
            for observer in list(self.observers):
                try:
                    observer(event)
                except Exception:
                    log.failure("message observer failed")

    def datagramReceived(self, data: bytes, addr: Address) -> None:  # noqa: N802
        try:
            try:
                message = parse(data)
            except SipParseError as exc:
                self._malformed(exc, addr)
                return
            if self.observers or self.log_messages:
                self._observe("in", message, addr)
            if isinstance(message, Request):
                self._receive_request(message, addr)
            else:
                self._receive_response(message)
        except SipParseError as exc:  # a header read lazily turned out malformed
            self._malformed(exc, addr)
        except Exception:
            log.failure("dropped a datagram from {peer} after an internal error", peer=addr)

    def _malformed(self, exc: SipParseError, addr: Address) -> None:
        request = exc.message
        if not isinstance(request, Request) or request.method == "ACK" \
                or "via" not in request.headers or "cseq" not in request.headers:
            # Without Via and CSeq no answer could ever be matched by its sender (§17.1.3).
            log.info("dropped malformed message from {peer}: {reason}", peer=addr,
                     reason=exc.reason)
            return
        response = request.response(exc.status, to_tag=self.new_tag())
        response.set("warning", _warning(exc.reason))
        log.info("answered malformed {method} from {peer} with {status}: {reason}",
                 method=request.method, peer=addr, status=exc.status, reason=exc.reason)
        self.send_message(response, addr)

    def _receive_response(self, response: Response) -> None:
        if not self.transactions.match_response(response):
            log.debug("dropped a response matching no transaction: {status} {call_id}",
                      status=response.status, call_id=response.get("call-id"))

    # -- requests (§8.2) -------------------------------------------------------------------
    def _receive_request(self, request: Request, addr: Address) -> None:
        via = request.top_via
        changed = False
        if via.host != addr[0]:
            via.set_param("received", addr[0])
            changed = True
        if "rport" in via.params and not via.params["rport"]:
            via.set_param("rport", str(addr[1]))
            changed = True
        if changed:
            request.update_top_via()
        if self.transactions.match_request(request):
            return
        method = request.method
        if method == "ACK":
            self._receive_ack(request)
            return
        if method == "INVITE":
            tx: Any = ServerInviteTransaction(self.transactions, request, addr)
        else:
            tx = ServerNonInviteTransaction(self.transactions, request, addr)
        refusal = self._screen(request)
        if refusal is not None:
            tx.respond(refusal)
            return
        if method == "CANCEL":
            self._receive_cancel(request, tx)
            return
        if request.to.tag is not None:
            session = self.dialogs.get((request.call_id, request.to.tag, request.from_.tag))
            if session is None:
                tx.respond(request.response(481))
            else:
                session.peer = addr
                session.receive_request(request, tx)
            return
        if method == "INVITE":
            self._receive_invite(request, tx, addr)
        elif method == "OPTIONS":
            tx.respond(self._options_response(request))
        else:  # BYE outside any dialog
            tx.respond(request.response(481))

    def _screen(self, request: Request) -> Response | None:
        """§8.2.1-8.2.3: method, URI scheme, Require, body; None when all is well."""
        method = request.method
        if method not in ALLOWED_METHODS:
            if method in KNOWN_METHODS:
                response = request.response(405, to_tag=self.new_tag())
                response.set("allow", ALLOW)
                return response
            return request.response(501, to_tag=self.new_tag())
        if uri_scheme(request.uri) not in SUPPORTED_SCHEMES:
            return request.response(416, to_tag=self.new_tag())
        if method == "CANCEL":
            return None
        if method == "INVITE":
            try:
                request.contact  # the remote target of the dialog this would create (§12.1.1)
            except SipParseError as exc:
                response = request.response(400, to_tag=self.new_tag())
                response.set("warning", _warning(exc.reason))
                return response
        required = request.require
        if required:
            response = request.response(420, to_tag=self.new_tag())
            response.set("unsupported", required)
            return response
        if request.body:
            ctype = request.content_type
            if ctype not in ACCEPTED_BODIES:
                response = request.response(415, to_tag=self.new_tag())
                response.set("accept", "application/sdp")
                return response
            encoding = request.get("content-encoding")
            if encoding and encoding.lower() != "identity":
                response = request.response(415, to_tag=self.new_tag())
                response.set("accept-encoding", "identity")
                return response
        if method == "INVITE" and "accept" in request.headers:
            accepted = {v.partition(";")[0].strip().lower() for v in request.get_all("accept")}
            if accepted and not accepted & {"application/sdp", "application/*", "*/*", ""}:
                response = request.response(406, to_tag=self.new_tag())
                response.set("accept", "application/sdp")
                return response
        return None

    def _options_response(self, request: Request) -> Response:
        response = request.response(200, to_tag=self.new_tag())
        response.set("allow", ALLOW)
        response.set("accept", "application/sdp")
        response.set("supported", "")
        response.set("contact", f"<{self.contact}>")
        return response

    def _receive_ack(self, ack: Request) -> None:
        session = self.dialogs.get((ack.call_id, ack.to.tag or "", ack.from_.tag))
        if isinstance(session, ServerSession):
            session.ack_received(ack)
        else:
            log.debug("dropped an ACK matching no dialog: {call_id}", call_id=ack.call_id)

    def _receive_cancel(self, cancel: Request, tx: ServerNonInviteTransaction) -> None:
        invite_tx = self.transactions.invite_for_cancel(cancel)
        if invite_tx is None:
            tx.respond(cancel.response(481))
            return
        tx.respond(cancel.response(200, to_tag=getattr(invite_tx.tu, "local_tag", None)))
        session = invite_tx.tu
        if isinstance(session, ServerSession):
            session.remote_cancel()
        elif not invite_tx.answered:
            invite_tx.respond(invite_tx.request.response(487, to_tag=self.new_tag()))

    def _receive_invite(self, invite: Request, tx: ServerInviteTransaction,
                        addr: Address) -> None:
        if invite.body:
            try:
                sdp.answer(invite.body, self.codecs, self.host, 0)
            except sdp.SdpError as exc:
                response = invite.response(488, to_tag=self.new_tag())
                response.set("warning", f'304 twsip "{exc}"')
                tx.respond(response)
                return
        if not self.serving:
            tx.respond(invite.response(480, "Temporarily Unavailable (not serving yet)",
                                       to_tag=self.new_tag()))
            return
        tx.respond(invite.response(100))
        session = ServerSession(self, invite, tx, addr)
        try:
            self.incoming.put(session)
        except QueueOverflow:
            log.warn("{dn}: incoming queue full ({size}), answering 486 to {call_id}",
                     dn=self.dn, size=self.incoming.size, call_id=invite.call_id)
            session.reject(486, "Busy Here")

    # -- dialog registry (used by sessions) --------------------------------------------------
    def register_dialog(self, session: Session) -> None:
        self.dialogs[session.dialog_id] = session
        self.calls.add(session)

    def unregister_dialog(self, session: Session) -> None:
        if self.dialogs.get(session.dialog_id) is session:
            del self.dialogs[session.dialog_id]
        self.calls.discard(session)
        if isinstance(session, ServerSession) and not session.answered:
            try:  # a call that ended while queued is never handed out
                self.incoming.pending.remove(session)
            except ValueError:
                pass

    # -- the application's API --------------------------------------------------------------
    def start_serving(self, auto_answer: bool = False) -> None:
        """Accept new calls into `incoming` (before this they are answered 480).

        With `auto_answer`, the instance takes each call from its own queue, rings and
        answers it, and lets the caller hang up: what a phone on auto-answer does.
        """
        self.serving = True
        if auto_answer and self._auto_answer is None:
            self._next_auto_answer()

    @property
    def auto_answering(self) -> bool:
        return self._auto_answer is not None

    def stop_auto_answer(self) -> None:
        """Leave new calls in `incoming` for the application again (still serving)."""
        if self._auto_answer is not None:
            pending, self._auto_answer = self._auto_answer, None
            pending.cancel()

    def _next_auto_answer(self) -> None:
        d = self.incoming.get()
        self._auto_answer = d
        d.addCallbacks(self._auto_answer_call, lambda _: None)

    def _auto_answer_call(self, session: ServerSession) -> None:
        session.ringing()
        session.answer().addErrback(
            lambda f: log.info("{dn}: auto-answered call {call_id} failed: {why}",
                               dn=self.dn, call_id=session.call_id, why=f.getErrorMessage()))
        self._next_auto_answer()

    def dial(self, target: str, timeout: float | None = None) -> ClientSession:
        """Start a call and return its session at once (see `invite` for the usual API)."""
        addr = loopback_address(target)
        if addr is None:
            raise CallFailed(503, f"local mode calls only sip: URIs on 127.0.0.0/8, not {target!r}")
        session = ClientSession(self, target, addr, self.new_call_id(), timeout)
        self.calls.add(session)
        session.when_ended().addCallback(lambda _: self.calls.discard(session))
        return session

    def invite(self, target: str, timeout: float | None = 32.0) -> Deferred[ClientSession]:
        """Call `target`; fires with the established `ClientSession`.

        Fails with `CallFailed` (status 3xx-6xx, 408 on timeout); cancelling the Deferred
        before the final response sends CANCEL and fails it with 487.
        """
        try:
            session = self.dial(target, timeout)
        except CallFailed as exc:
            return fail(exc)
        return session.when_answered()

    def options(self, target: str) -> Deferred[Response]:
        """Send OPTIONS to `target`; fires with the final response."""
        addr = loopback_address(target)
        if addr is None:
            return fail(CallFailed(503, f"not a loopback sip: URI: {target!r}"))
        request = Request("OPTIONS", target, {
            "via": [self.new_via()],
            "max-forwards": ["70"],
            "from": [f"<{self.uri}>;tag={self.new_tag()}"],
            "to": [f"<{target}>"],
            "call-id": [self.new_call_id()],
            "cseq": ["1 OPTIONS"],
            "accept": ["application/sdp"],
        })
        d: Deferred[Response] = Deferred()

        def on_response(response: Response) -> None:
            if response.status >= 200 and not d.called:
                d.callback(response)

        def on_timeout() -> None:
            if not d.called:
                d.errback(CallFailed(408, "no response to OPTIONS"))

        ClientNonInviteTransaction(self.transactions, request, addr, on_response, on_timeout)
        return d

    def cleanup(self, grace: float = 0.5) -> Deferred[None]:
        """End every call (BYE, CANCEL or 480), wait up to `grace` s, cancel every timer."""
        self.serving = False
        self.stop_auto_answer()
        byes = []
        for session in list(self.calls):
            if isinstance(session, ServerSession) and not session.answered:
                session.reject(480, "Temporarily Unavailable (shutting down)")
            else:  # BYE, or CANCEL for an outgoing call not answered yet
                byes.append(session.hangup().addErrback(lambda _: None))
        while self.incoming.pending:
            self.incoming.pending.pop()
        for waiting in list(self.incoming.waiting):
            waiting.cancel()
        done: Deferred = DeferredList(byes) if byes else Deferred()
        if not byes:
            done.callback(None)
        else:
            done.addTimeout(grace, self.clock)  # type: ignore[arg-type]
        done.addErrback(lambda _: None)

        def finish(_: object) -> None:
            for session in list(self.calls):
                session._end("cleanup")
            self.calls.clear()
            self.dialogs.clear()
            self.transactions.close()

        done.addCallback(finish)
        return done
