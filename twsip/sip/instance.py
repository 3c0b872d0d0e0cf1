"""One SIP user agent on one UDP port: the UA core of RFC 3261 §8 as a DatagramProtocol.

A datagram walks up: parse -> transaction match (retransmissions stop there) -> dialog
match -> the core's checks (§8.2) -> the application (`incoming` queue, session Deferreds).
Nothing that arrives can escape `datagramReceived`, and nothing leaves except towards
127.0.0.0/8: responses go where their request came from (§18.2.2 received, RFC 3581 rport),
whatever the headers say.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any, Callable, cast

from twisted.internet.defer import Deferred, DeferredQueue, QueueOverflow, fail
from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from twsip.sip.autoanswer import AnswerMode, AutoAnswer, answerer
from twsip.sip.call_media import MediaFactory
from twsip.sip.cancel import receive_cancel
from twsip.interfaces import TimeSource, UDPReactor
from twsip.sip.identity import Identity
from twsip.sip.dialog import CallFailed, ClientSession, ServerSession, Session
from twsip.sip.limits import DEFAULT_MAX_CALLS, CallLimits
from twsip.sip.message import (
    MAX_DATAGRAM,
    Message,
    Request,
    Response,
    SipParseError,
    parse,
)
from twsip.sip.noise import NoiseSummary, printable
from twsip.sip.observers import MessageEvent, MessageObservers, Observer, summary
from twsip.sip.overload import OverloadControl, OverloadSettings
from twsip.sip.registry import DialogId, DialogRegistry
from twsip.sip.replaces import take_over
from twsip.sip.screening import (
    KNOWN_METHODS,
    malformed_response,
    options_response,
    screen,
    screen_offer,
)
from twsip.sip.shedding import Shedder
from twsip.sip.shutdown import abandon, end_calls, send_options
from twsip.sip.stream import StreamRouter
from twsip.sip.transaction import (
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    TimerSettings,
    TransactionLayer,
)
from twsip.sip.transfer import Transfers
from twsip.sip.uri import Address, loopback_address
from twsip.sip.wire import (
    LOOPBACK_HOSTS,
    SendFailed,
    may_send_to,
    send_failure,
    stamp_received,
)

# MessageEvent and KNOWN_METHODS live in observers and screening; named here too for the
# layers above, which import them from the instance.
__all__ = ["SipInstance", "MessageEvent", "KNOWN_METHODS", "CallClaim"]

log = Logger(namespace="twsip.instance")
# A stateless 503 has no message object: this one names it in a send failure's log line.
_SHED = Response(503, "Service Unavailable")
_SHEDDABLE = frozenset((b"INVI", b"ACK "))  # what `Shedder.take` may answer or drop

# The socket's receive buffer (the kernel caps it at net.core.rmem_max). It only costs memory
# while datagrams wait, and lets them wait out a pause of this process (a full garbage
# collection with tens of thousands of calls in Timer L/J takes a few hundred ms under load)
# instead of being dropped and retransmitted by the peer.
RECEIVE_BUFFER = 4 * 1024 * 1024

# Asked, while the instance auto-answers, whether a new call (its INVITE and where it came
# from) is someone else's to take from `incoming` (a flow running on the instance).
CallClaim = Callable[[Request, Address], bool]


class SipInstance(Identity, DatagramProtocol):
    """A SIP phone: places calls (`invite`) and queues received ones (`incoming`).

    The datagram end and the UA core's routing of requests; the §8.2 checks are in
    `screening`, calls and dialogs in a `DialogRegistry`, who watches the messages in
    `MessageObservers`, shedding new calls when behind in `overload`. `log_messages` logs a
    line per SIP message, `trace_messages` its text too (debug). Garbage, stray responses
    and overload are counted and summarised by `noise`, whatever the switches say. While
    auto-answering, `claim` (None by default) may keep some calls for whoever reads
    `incoming` (a flow sharing the instance claims its own; other callers are answered).
    """

    noisy = False  # a thousand instances must not log a thousand "starting on" lines

    def __init__(self, dn: str = "100", *, host: str = "127.0.0.1",
                 codecs: tuple[str, ...] | list[str] = ("PCMU", "PCMA"),
                 reactor: IReactorTime | None = None, timers: TimerSettings | None = None,
                 queue_size: int = 64, log_messages: bool = False,
                 trace_messages: bool = False, media: bool = True,
                 record_dir: str | None = None, max_calls: int = DEFAULT_MAX_CALLS,
                 overload: OverloadSettings | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as global_reactor
            reactor = global_reactor
        Identity.__init__(self, dn, host)
        self.codecs = tuple(codecs)
        # IReactorTime is a zope interface, which mypy cannot match against a Protocol.
        self.clock: TimeSource = cast(TimeSource, reactor)
        self.transactions = TransactionLayer(self._send, self.clock, timers)
        self.incoming: DeferredQueue[ServerSession] = DeferredQueue(size=queue_size)
        self.serving = False
        self.noise = NoiseSummary(self.clock, log, f"DN {dn}")
        self.registry = DialogRegistry(self.noise)
        self.limits = CallLimits(self.noise, max_calls)  # see twsip.sip.limits
        self.overload = OverloadControl(self, overload)  # 503 to new calls when behind
        # ... answered from their bytes, without a transaction (the cheap way to say no)
        self.shedder = Shedder(self.overload, self.transactions.has_server, self._send_shed,
                               self._unobserved)
        self.dialogs: dict[DialogId, Session] = self.registry.dialogs
        self.calls: set[Session] = self.registry.calls
        self.watchers = MessageObservers(self, self.clock, log_messages, trace_messages)
        self.observers: list[Observer] = self.watchers.observers
        self._auto_answer: AutoAnswer | None = None
        self.stream_router: StreamRouter | None = None  # TCP to a PBX, when one is used
        self.claim: CallClaim | None = None
        self.transfers = Transfers(self)  # REFER and NOTIFY in this UA's dialogs
        # Each call's RTP endpoint, when the reactor can bind UDP (a bare Clock cannot).
        self.media_factory = (MediaFactory(cast(UDPReactor, reactor), host, dn, record_dir)
                              if media and hasattr(reactor, "listenUDP") else None)

    # -- identity --------------------------------------------------------------------
    def startProtocol(self) -> None:  # noqa: N802
        transport: Any = self.transport
        self.port = transport.getHost().port
        sock = getattr(transport, "socket", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)

    # -- the wire ------------------------------------------------------------------------
    def _send(self, data: bytes, addr: Address, message: Message) -> None:
        """Every send of the instance and its transactions: over a PBX connection when a
        `StreamRouter` (twsip.sip.stream) has one for `addr`, else over UDP."""
        router = self.stream_router
        if router is not None and router.takes(addr):
            router.send(data, addr, message)
        else:
            self.send_udp(data, addr, message)

    def send_udp(self, data: bytes, addr: Address, message: Message) -> None:
        if not LOOPBACK_HOSTS.get(addr[0]) and not may_send_to(addr[0]):
            log.warn("local mode: not sending {what} to {peer}, outside 127.0.0.0/8",
                     what=summary(message), peer=printable(addr[0]))
            return
        # Typed Any: IUDPTransport is a zope interface, whose methods mypy reads wrongly.
        transport: Any = self.transport
        if transport is None:
            return
        if len(data) > MAX_DATAGRAM:
            raise SendFailed(summary(message), addr, "larger than a UDP datagram", True)
        # The address is a checked IPv4 literal, so Twisted's per-write address checks
        # (three isIPAddress calls, a fifth of the send cost under load) add nothing:
        # send on the socket directly and leave only errors to Twisted's handling.
        sock = getattr(transport, "socket", None)
        try:
            if sock is None:
                transport.write(data, addr)
            else:
                try:
                    sock.sendto(data, addr)
                except OSError:
                    transport.write(data, addr)
        except (OSError, MessageLengthError, ValueError) as exc:
            raise send_failure(exc, summary(message), addr) from exc
        if self.observers or self.watchers.log_messages:
            self.watchers.notify("out", message, addr, data)

    def send_message(self, message: Message, addr: Address, data: bytes | None = None
                     ) -> None:
        """Send outside any transaction (ACKs, 2xx retransmissions, answers to garbage):
        a failure is logged and changes nothing else. `data`: the message serialised
        already, by a caller that keeps those bytes anyway."""
        try:
            self._send(message.to_bytes() if data is None else data, addr, message)
        except SendFailed as exc:
            log.warn("{dn}: could not send {what}: {error}", dn=self.dn, what=exc.what,
                     error=printable(exc))

    def _unobserved(self) -> bool:
        return not (self.observers or self.watchers.log_messages)

    def _send_shed(self, data: bytes, addr: Address) -> None:
        """A stateless 503 (twsip.sip.shedding), sent as any message outside a transaction."""
        self.send_message(_SHED, addr, data)

    def datagramReceived(self, data: bytes, addr: Address) -> None:  # noqa: N802
        try:
            if data[:4] in _SHEDDABLE and self.shedder.take(data, addr):
                return
            try:
                message = parse(data)
            except SipParseError as exc:
                if not self.overload.echo(data):  # our own echo is no garbage
                    self._malformed(exc, addr)
                return
            if self.observers or self.watchers.log_messages:
                self.watchers.notify("in", message, addr, data)
            if isinstance(message, Request):
                self._receive_request(message, addr)
            elif not self.transactions.match_response(message):
                self.noise.stray(message, addr)
        except SipParseError as exc:  # a header read lazily turned out malformed
            self._malformed(exc, addr)
        except Exception:
            log.failure("dropped a datagram from {peer} after an internal error", peer=addr)

    def _malformed(self, exc: SipParseError, addr: Address) -> None:
        response = malformed_response(exc, self.new_tag)
        self.noise.malformed(exc.status if response else None, exc.reason, addr)
        if response is not None:
            self.send_message(response, addr)

    # -- requests (§8.2) -------------------------------------------------------------------
    def _receive_request(self, request: Request, addr: Address) -> None:
        stamp_received(request, addr)
        if self.transactions.match_request(request):
            return
        method = request.method
        if method == "ACK":
            self.registry.deliver_ack(request)
            return
        tx: ServerInviteTransaction | ServerNonInviteTransaction
        if method == "INVITE":
            tx = ServerInviteTransaction(self.transactions, request, addr)
        else:
            tx = ServerNonInviteTransaction(self.transactions, request, addr)
        try:
            self._handle_request(request, tx, addr)
        except Exception:  # never leave the transaction in Proceeding without an answer
            log.failure("{dn}: internal error on {method} from {peer}; answering 500",
                        dn=self.dn, method=method, peer=addr)
            abandon(tx, request)

    def _handle_request(self, request: Request,
                        tx: ServerInviteTransaction | ServerNonInviteTransaction,
                        addr: Address) -> None:
        method = request.method
        refusal = screen(request, self.new_tag)
        if refusal is not None:
            tx.respond(refusal)
        elif method == "CANCEL":
            receive_cancel(self.transactions, request, tx, self.new_tag)
        elif request.to.tag is not None:
            self.registry.deliver(request, tx, addr)
        elif isinstance(tx, ServerInviteTransaction):
            self._receive_invite(request, tx, addr)
        elif method == "OPTIONS":
            tx.respond(options_response(request, self.new_tag(), self.contact))
        else:  # BYE, NOTIFY or UPDATE outside any dialog: 481; REFER: 403 (RFC 3515 §2.4.2)
            tx.respond(request.response(403 if method == "REFER" else 481))

    def _receive_invite(self, invite: Request, tx: ServerInviteTransaction,
                        addr: Address) -> None:
        refusal = (self.overload.refusal(invite, self.new_tag)
                   or self.limits.refusal(invite, len(self.calls), self.new_tag)
                   or screen_offer(invite, self.codecs, self.host, self.new_tag))
        if refusal is not None:
            tx.respond(refusal)
            return
        if not self.serving:
            tx.respond(invite.response(480, "Temporarily Unavailable (not serving yet)",
                                       to_tag=self.new_tag()))
            return
        tx.respond(invite.response(100))
        if "replaces" in invite.headers:  # attended transfer: no ringing, no queue
            return take_over(self, invite, tx, addr)
        session = ServerSession(self, invite, tx, addr)
        auto = self._auto_answer
        if auto is not None and (self.claim is None or not self.claim(invite, addr)):
            auto.take(session)
            return
        try:
            self.incoming.put(session)
        except QueueOverflow:
            self.noise.overload(self.incoming.size, invite.call_id)
            session.reject(486, "Busy Here")

    # -- dialog registry (used by sessions) --------------------------------------------------
    def register_dialog(self, session: Session) -> None:
        self.registry.add(session)

    def unregister_dialog(self, session: Session) -> None:
        self.registry.remove(session)
        if isinstance(session, ServerSession) and not session.answered:
            try:  # a call that ended while queued is never handed out
                self.incoming.pending.remove(session)
            except ValueError:
                pass

    # -- the application's API --------------------------------------------------------------
    def start_serving(self, auto_answer: bool | str | AnswerMode = False,
                      max_call_seconds: float | None = None) -> None:
        """Accept new calls into `incoming` (before this they are answered 480).

        With `auto_answer` (an `AnswerMode` or its name: "busy", "delay:500"; True keeps
        the mode set before, else answers), the instance treats each new call (and those
        queued already) itself; only calls that `claim` keeps go to `incoming`. Those it
        answers end with BYE after `max_call_seconds` (0: never; None: as set before).
        """
        if max_call_seconds is not None:
            self.limits.max_call_seconds = max_call_seconds
        self.serving = True
        self.noise.open()
        if auto_answer:
            auto = self._auto_answer = answerer(self._auto_answer, self.dn, self.limits,
                                                auto_answer)
            for session in list(self.incoming.pending):  # calls queued before: ours now
                if self.claim is None or not self.claim(session.invite, session.peer):
                    self.incoming.pending.remove(session)
                    auto.take(session)

    @property
    def auto_answering(self) -> bool:
        return self._auto_answer is not None

    def stop_auto_answer(self) -> None:
        """Leave new calls in `incoming` for the application again (still serving)."""
        self._auto_answer = None

    def dial(self, target: str, timeout: float | None = None) -> ClientSession:
        """Start a call and return its session at once (see `invite` for the usual API)."""
        addr = loopback_address(target)
        if addr is None:
            raise CallFailed(503, f"local mode calls only sip: URIs on 127.0.0.0/8, not {target!r}")
        session = ClientSession(self, target, addr, self.new_call_id(), timeout)
        self.calls.add(session)  # until it ends: its end unregisters it (registry.remove)
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
        return send_options(self, target)

    def cleanup(self, grace: float = 0.5) -> Deferred[None]:
        """End every call (BYE, CANCEL or 480), wait up to `grace` s, cancel every timer.

        Never fails and never stops half-way: a call that cannot be ended is logged and
        dropped, and the timers go whatever happened before."""
        self.serving = False
        self.stop_auto_answer()
        self.noise.close()
        self.overload.close()
        return end_calls(self, grace)
