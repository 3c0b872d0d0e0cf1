"""RFC 3261 §17 transactions over UDP, with the RFC 6026 "Accepted" state.

Four small state machines. Each one's docstring is its transition table; the code below it
reads the same way, and tests/test_transaction_tables.py drives every row. None of them
touches a socket: the `TransactionLayer` is handed a `send(data, addr, message)` callable
and a `TimeSource` (the reactor in service, `twisted.internet.task.Clock` in tests). What a
transaction reports goes to its transaction user through a declared Protocol
(`ClientTransactionUser`, `InviteServerUser`), which the dialog layer implements.

Timers live in three slots per transaction (retransmit: A/E/G, timeout: B/F/H, linger:
D/I/J/K/L/M), and every transition that leaves a state cancels the timers of that state: a
terminated transaction owns none. The linger timers, which only end a transaction that
waits out retransmissions (32 s under load for every call), are not a DelayedCall each:
the layer keeps them in one first-in-first-out queue per delay, behind a single DelayedCall
set for the earliest deadline, so they fire at exactly the same times for a fraction of the
cost and memory (see `TransactionLayer._linger_until`).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Callable, Hashable, Protocol

from twisted.logger import Logger

from twsip.interfaces import DelayedCall, TimeSource, cancel_call
from twsip.sip.message import (
    Message,
    Request,
    Response,
    SipParseError,
    Via,
    parse,
    request_headers,
)
from twsip.sip.uri import Address
from twsip.sip.wire import SendFailed

__all__ = [
    "TransactionState",
    "ClientTransactionUser",
    "InviteServerUser",
    "NO_USER",
    "TimerSettings",
    "TransactionLayer",
    "ClientInviteTransaction",
    "ClientNonInviteTransaction",
    "ServerInviteTransaction",
    "ServerNonInviteTransaction",
    "server_key",
    "via_key",
    "MAGIC_COOKIE",
]

MAGIC_COOKIE = "z9hG4bK"

SendFunction = Callable[[bytes, Address, Message], None]

log = Logger(namespace="twsip.transaction")

# What an answer copies from the request it answers (§8.2.6): all a fallback answer keeps.
_COPIED = ("via", "from", "to", "call-id", "cseq")


class TransactionState(enum.Enum):
    """The states of the four machines (each uses the ones its table names)."""

    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


# Module-level names for the members: the hot path reads a global, not a class attribute.
CALLING = TransactionState.CALLING
TRYING = TransactionState.TRYING
PROCEEDING = TransactionState.PROCEEDING
ACCEPTED = TransactionState.ACCEPTED
COMPLETED = TransactionState.COMPLETED
CONFIRMED = TransactionState.CONFIRMED
TERMINATED = TransactionState.TERMINATED


class ClientTransactionUser(Protocol):
    """What a client transaction reports to its transaction user (the dialog layer)."""

    def receive_response(self, response: Response) -> None:
        """A response the TU must see: 1xx and the final one, and 2xx retransmissions in
        Accepted (the TU ACKs each 2xx itself, §13.2.2.4)."""

    def timed_out(self) -> None:
        """No final response in 64*T1 (Timer B or F); the transaction has terminated."""


class InviteServerUser(Protocol):
    """What a server INVITE transaction may need from its TU after handing it the INVITE.

    A CANCEL that arrives for the INVITE is answered 200 with the TU's To tag and passed
    on (§9.2), even after the call was answered; an error response that is never ACKed
    (Timer H) is reported.
    """

    @property
    def local_tag(self) -> str: ...

    def remote_cancel(self) -> None:
        """The peer CANCELled the INVITE (a no-op once the INVITE is answered)."""

    def timed_out(self) -> None:
        """Timer H: the peer never ACKed our error response."""

    def transport_error(self, status: int, reason: str) -> None:
        """Our response could not be sent (§17.2.4); the transaction answered `status`
        instead where that fitted. Either way the INVITE is answered and the call over."""


class _NoUser:
    """The TU of a transaction whose results nobody wants (a CANCEL's, or a transaction
    after its last report): one shared object, so letting go of a TU costs nothing."""

    __slots__ = ()

    def receive_response(self, response: Response) -> None:
        pass

    def timed_out(self) -> None:
        pass


NO_USER = _NoUser()


@dataclass(frozen=True)
class TimerSettings:
    """RFC 3261 timer values (seconds). Timer D is ">= 32 s" for UDP, not a T1 multiple."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_d: float = 32.0

    @property
    def timeout(self) -> float:
        """Timers B, F, H, J, L and M are all 64*T1."""
        return 64 * self.t1


def via_key(via: Via, method: str) -> tuple[Hashable, ...]:
    """The §17.2.3 key of a request whose top Via has an RFC 3261 branch."""
    return (via.branch, via.host.lower(), via.port or 5060, method)


def server_key(request: Request, method: str | None = None) -> tuple[Hashable, ...]:
    """The §17.2.3 matching key; RFC 2543 requests (no magic cookie) use the old rule.

    An ACK matches its INVITE, so ACK keys use method INVITE. `method` overrides the
    request's own, which is how a CANCEL finds the INVITE it cancels.
    """
    if method is None:
        method = "INVITE" if request.method == "ACK" else request.method
    via = request.top_via
    branch = via.branch
    if branch and branch.startswith(MAGIC_COOKIE) and len(branch) > 7:
        return via_key(via, method)
    return ("2543", request.uri, request.from_.tag, request.call_id,
            request.cseq.number, via.host.lower(), via.port, via.branch, method)


class _Transaction:
    """What all four machines share.

    A transaction lets go of what its remaining states cannot use: once it only lingers to
    absorb or answer retransmissions (up to 32 s after every call under load), `request`
    becomes None, and the TU is replaced by `NO_USER` once it can no longer be called (a
    client transaction after a final response, except an INVITE's 2xx, whose
    retransmissions the TU still ACKs; the TU itself may then `replace_user` with a smaller
    object). Under load this is the difference between a few objects and a hundred
    per call for the garbage collector to walk.
    """

    __slots__ = ("layer", "key", "request", "addr", "state", "_retransmit", "_timeout",
                 "_linger", "_interval", "_wire")

    def __init__(self, layer: "TransactionLayer", key: tuple[Hashable, ...],
                 request: Request, addr: Address, state: TransactionState) -> None:
        self.layer = layer
        self.key = key
        self.request: Request | None = request
        self.addr = addr
        self.state = state
        self._retransmit: DelayedCall | None = None
        self._timeout: DelayedCall | None = None
        self._linger: float | None = None  # deadline of D/I/J/K/L/M, queued in the layer
        self._interval = layer.timers.t1
        self._wire: tuple[bytes, Message | None] | None = None

    def _send(self, message: Message) -> None:
        data = message.wire = message.to_bytes()
        self._wire = (data, message)
        self.layer.send(data, self.addr, message)

    def _resend(self) -> bool:
        """Send the last message again; False when it could not leave (the transaction
        has then failed, and its timers must not go on)."""
        if self._wire is not None:
            data, message = self._wire
            if message is None:  # let go of on completion; rebuilt for the send hook
                message = _reparse(data)
            try:
                self.layer.send(data, self.addr, message)
            except SendFailed as exc:
                self._send_failed(exc)
                return False
        return True

    def _send_failed(self, exc: SendFailed) -> None:
        """A retransmission could not leave: later ones would not either, so end here."""
        log.warn("could not send {what} again ({error}): transaction ended",
                 what=exc.what, error=exc.error)
        self.terminate()

    def _send_answer(self, response: Response) -> Response | None:
        """Send a server transaction's response; if it cannot leave, answer 513 (too
        large) or 500 with only the copied headers instead. Returns what was sent, or
        None when nothing could be (the transaction has then ended); `_failed` then
        says what the TU is to hear once the transaction has moved on."""
        try:
            self._send(response)
            return response
        except SendFailed as exc:
            status = 513 if exc.too_large else 500
            fallback = Response(status, None, {key: list(response.headers[key])
                                               for key in _COPIED if key in response.headers})
            try:
                self._send(fallback)
            except SendFailed:
                log.warn("could not send {what} ({error}), nor a {status} instead: "
                         "transaction ended", what=exc.what, error=exc.error, status=status)
                self.terminate()
                return None
            log.warn("could not send {what} ({error}): answered {status} instead",
                     what=exc.what, error=exc.error, status=status)
            return fallback

    def _later(self, delay: float, fn: Callable[[], None]) -> DelayedCall:
        return self.layer.clock.callLater(delay, fn)

    def _linger_for(self, delay: float) -> None:
        """Terminate after `delay` seconds (Timers D, I, J, K, L, M)."""
        if self._linger is not None:
            self.layer._linger_cancelled()
        self._linger = self.layer._linger_until(self, delay)

    def _stop_timers(self) -> None:
        self._stop_retransmit()
        if self._linger is not None:
            self._linger = None
            self.layer._linger_cancelled()

    def _stop_retransmit(self) -> None:
        """Leave an active state: its retransmit and timeout timers stop (A/B, E/F, G/H)."""
        cancel_call(self._retransmit)
        cancel_call(self._timeout)
        self._retransmit = self._timeout = None

    def terminate(self) -> None:
        if self.state is not TERMINATED:
            self.state = TERMINATED
            self._stop_timers()
            self.layer._forget(self)

    def __repr__(self) -> str:
        method = self.request.method if self.request is not None else self.key[-1]
        return f"<{type(self).__name__} {method} {self.state.value}>"


class ClientInviteTransaction(_Transaction):
    """§17.1.1 with RFC 6026.

    | state      | input             | action                          | next       |
    |------------|-------------------|---------------------------------|------------|
    | calling    | Timer A           | resend INVITE, A doubles        | calling    |
    | calling    | Timer B           | TU: timeout                     | terminated |
    | calling/proceeding | 1xx       | TU: response                    | proceeding |
    | calling/proceeding | 2xx       | TU: response, start Timer M     | accepted   |
    | calling/proceeding | 300-699   | send ACK, TU: response, Timer D | completed  |
    | accepted   | 2xx               | TU: response (it re-ACKs)       | accepted   |
    | completed  | 300-699           | resend ACK                      | completed  |
    | accepted/completed | Timer M/D |                                 | terminated |
    """

    __slots__ = ("user", "_ack")

    def __init__(self, layer: "TransactionLayer", request: Request, addr: Address,
                 user: ClientTransactionUser) -> None:
        super().__init__(layer, (request.top_via.branch, "INVITE"), request, addr, CALLING)
        self.user = user
        self._ack: bytes | None = None
        layer._client[self.key] = self
        if addr not in layer.reliable:  # §17.1.1.2: no Timer A on a reliable transport
            self._retransmit = self._later(self._interval, self._timer_a)
        self._timeout = self._later(layer.timers.timeout, self._timer_b)
        try:
            self._send(request)
        except SendFailed as exc:
            self._send_failed(exc)

    def replace_user(self, user: ClientTransactionUser) -> None:
        """Hand what is left to report (2xx retransmissions in Accepted) to `user`: a TU
        that has ended passes a small object, so that it is not kept for Timer M."""
        self.user = user

    def _timer_a(self) -> None:
        if self._resend():
            self._interval *= 2
            self._retransmit = self._later(self._interval, self._timer_a)

    def _send_failed(self, exc: SendFailed) -> None:
        _fail_client(self, exc)

    def _send_ack(self, data: bytes, ack: Message) -> None:
        try:
            self.layer.send(data, self.addr, ack)
        except SendFailed as exc:
            log.warn("could not send {what} ({error})", what=exc.what, error=exc.error)

    def _timer_b(self) -> None:
        self._timeout = None
        self.terminate()
        self.user.timed_out()

    def receive(self, response: Response) -> None:
        status = response.status
        state = self.state
        if state is CALLING or state is PROCEEDING:
            if status < 200:
                if state is CALLING:
                    self.state = PROCEEDING
                    self._stop_retransmit()
                self.user.receive_response(response)
            elif status < 300:
                self.state = ACCEPTED
                self._stop_retransmit()
                # Accepted only passes 2xx retransmissions up: no INVITE to resend, no
                # ACK to build (the TU ACKs a 2xx), no Timer B.
                self.request = None
                self._wire = None
                self._linger_for(self.layer.timers.timeout)
                self.user.receive_response(response)
            else:
                self.state = COMPLETED
                self._stop_retransmit()
                request = self.request
                assert request is not None  # kept until a final response
                ack = build_ack(request, response)
                self._ack = ack.to_bytes()
                self._send_ack(self._ack, ack)
                self._linger_for(self.layer.linger(self.addr, self.layer.timers.timer_d))
                user, self.user = self.user, NO_USER  # Completed reports nothing more
                user.receive_response(response)
        elif state is ACCEPTED:
            if 200 <= status < 300:
                self.user.receive_response(response)
        elif state is COMPLETED and status >= 300 and self._ack is not None:
            assert self.request is not None
            self._send_ack(self._ack, build_ack(self.request, response))


class ClientNonInviteTransaction(_Transaction):
    """§17.1.2.

    | state            | input     | action                               | next       |
    |------------------|-----------|--------------------------------------|------------|
    | trying           | Timer E   | resend, E = min(2E, T2)              | trying     |
    | proceeding       | Timer E   | resend, E = T2                       | proceeding |
    | trying/proceeding| Timer F   | TU: timeout                          | terminated |
    | trying/proceeding| 1xx       | TU: response                         | proceeding |
    | trying/proceeding| 200-699   | TU: response, Timer K                | completed  |
    | completed        | Timer K   |                                      | terminated |
    """

    __slots__ = ("user",)

    def __init__(self, layer: "TransactionLayer", request: Request, addr: Address,
                 user: ClientTransactionUser) -> None:
        super().__init__(layer, (request.top_via.branch, request.method), request, addr,
                         TRYING)
        self.user = user
        layer._client[self.key] = self
        if addr not in layer.reliable:  # §17.1.2.2: no Timer E on a reliable transport
            self._retransmit = self._later(self._interval, self._timer_e)
        self._timeout = self._later(layer.timers.timeout, self._timer_f)
        try:
            self._send(request)
        except SendFailed as exc:
            self._send_failed(exc)

    def _timer_e(self) -> None:
        if not self._resend():
            return
        t2 = self.layer.timers.t2
        self._interval = t2 if self.state is PROCEEDING else min(2 * self._interval, t2)
        self._retransmit = self._later(self._interval, self._timer_e)

    def _send_failed(self, exc: SendFailed) -> None:
        _fail_client(self, exc)

    def _timer_f(self) -> None:
        self._timeout = None
        self.terminate()
        self.user.timed_out()

    def receive(self, response: Response) -> None:
        if self.state is not TRYING and self.state is not PROCEEDING:
            return
        if response.status < 200:
            self.state = PROCEEDING
            self.user.receive_response(response)
            return
        self.state = COMPLETED
        self._stop_retransmit()
        self._linger_for(self.layer.linger(self.addr, self.layer.timers.t4))
        # Timer K only absorbs retransmitted responses: nothing is sent or reported.
        self.request = None
        self._wire = None
        user, self.user = self.user, NO_USER
        user.receive_response(response)


class ServerInviteTransaction(_Transaction):
    """§17.2.1 with RFC 6026.

    | state      | input              | action                           | next       |
    |------------|--------------------|----------------------------------|------------|
    | proceeding | INVITE again       | resend last provisional          | proceeding |
    | proceeding | TU sends 1xx       | send                             | proceeding |
    | proceeding | TU sends 2xx       | send, Timer L                    | accepted   |
    | proceeding | TU sends 300-699   | send, Timers G and H             | completed  |
    | accepted   | INVITE again       | absorb (the UAS core resends 2xx)| accepted   |
    | accepted   | ACK (RFC 2543 peer)| pass to the UAS core             | accepted   |
    | completed  | INVITE again       | resend final                     | completed  |
    | completed  | Timer G            | resend final, G = min(2G, T2)    | completed  |
    | completed  | Timer H            | TU: no ACK                       | terminated |
    | completed  | ACK                | Timer I                          | confirmed  |
    | confirmed  | Timer I            |                                  | terminated |
    | accepted   | Timer L            |                                  | terminated |
    """

    __slots__ = ("user", "to_tag")

    def __init__(self, layer: "TransactionLayer", request: Request, addr: Address,
                 user: InviteServerUser | None = None) -> None:
        super().__init__(layer, layer.new_key(request), request, addr, PROCEEDING)
        # None while the UA core answers by itself (a refusal, 480 before serving), and
        # once the call has ended: then nobody needs to hear about a CANCEL or Timer H.
        self.user = user
        self.to_tag: str | None = None  # our To tag, kept once the call has ended
        layer._server[self.key] = self

    def replace_user(self, user: InviteServerUser | None) -> None:
        """Give the transaction its TU (a new call)."""
        self.user = user

    def call_ended(self, to_tag: str) -> None:
        """The call is over: keep only the To tag a late CANCEL is answered with (§9.2).
        The transaction lingers up to 32 s (Timer L or H) after every call; a string is
        all it then holds, so the session and its INVITE go as soon as the call ends."""
        self.user = None
        self.to_tag = to_tag

    def receive_request(self, request: Request) -> bool:
        """Handle a retransmission or ACK; False means the UAS core should see it."""
        state = self.state
        if request.method == "ACK":
            if state is COMPLETED:
                self.state = CONFIRMED
                self._stop_retransmit()
                self._linger_for(self.layer.linger(self.addr, self.layer.timers.t4))
                return True
            return state is not ACCEPTED
        if state is PROCEEDING or state is COMPLETED:
            self._resend()
        return True

    def respond(self, response: Response) -> None:
        if self.state is not PROCEEDING:
            return
        sent = self._send_answer(response)
        if sent is not response:
            self._answer_failed(sent)
            return
        status = sent.status
        if status < 200:
            return
        self._answered(status)

    def _answered(self, status: int) -> None:
        # Answered: what is left to do (absorb retransmissions, resend the final response,
        # wait for the ACK) needs neither the request nor, once Accepted, the response.
        self.request = None
        if status < 300:
            self.state = ACCEPTED
            self._wire = None  # never resent from Accepted: the UAS core resends the 2xx
            self._linger_for(self.layer.timers.timeout)
        else:
            self.state = COMPLETED
            if self.addr not in self.layer.reliable:  # §17.2.1: no Timer G when reliable
                self._retransmit = self._later(self._interval, self._timer_g)
            self._timeout = self._later(self.layer.timers.timeout, self._timer_h)

    @property
    def answered(self) -> bool:
        """A final response has been sent."""
        return self.state is not PROCEEDING

    def _timer_g(self) -> None:
        if self._resend():
            self._interval = min(2 * self._interval, self.layer.timers.t2)
            self._retransmit = self._later(self._interval, self._timer_g)

    def _answer_failed(self, sent: Response | None) -> None:
        """Our response did not leave: complete with the fallback error answer (if one
        went), then tell the TU, whose call is over either way."""
        if sent is not None:
            self._answered(sent.status)
        user = self.user
        if user is not None:
            status = sent.status if sent is not None else 500
            user.transport_error(status, f"{status} sent instead of our response"
                                 if sent is not None else "no response could be sent")

    def _timer_h(self) -> None:
        self._timeout = None
        self.terminate()
        if self.user is not None:
            self.user.timed_out()


class ServerNonInviteTransaction(_Transaction):
    """§17.2.2.

    | state      | input            | action              | next       |
    |------------|------------------|---------------------|------------|
    | trying     | request again    | absorb              | trying     |
    | trying/proceeding | TU sends 1xx | send            | proceeding |
    | trying/proceeding | TU sends final | send, Timer J | completed  |
    | proceeding/completed | request again | resend last | same       |
    | completed  | Timer J          |                     | terminated |
    """

    __slots__ = ()

    def __init__(self, layer: "TransactionLayer", request: Request, addr: Address) -> None:
        super().__init__(layer, layer.new_key(request), request, addr, TRYING)
        layer._server[self.key] = self

    def receive_request(self, request: Request) -> bool:
        if self.state is not TRYING:
            self._resend()
        return True

    def respond(self, response: Response) -> None:
        if self.state is COMPLETED or self.state is TERMINATED:
            return
        sent = self._send_answer(response)
        if sent is None:
            return
        if sent.status < 200:
            self.state = PROCEEDING
        else:
            self.state = COMPLETED
            # Only the response's bytes are resent from now on (32 s of Timer J): keep
            # those, not the request nor the response's objects.
            self.request = None
            self._wire = (self._wire[0], None) if self._wire is not None else None
            self._linger_for(self.layer.linger(self.addr, self.layer.timers.timeout))


class _LingerQueue:
    """One FIFO of lingering transactions, as two parallel deques (deadline, transaction):
    no tuple per entry, which would be one more object per call for the GC to walk."""

    __slots__ = ("deadlines", "txs")

    def __init__(self) -> None:
        self.deadlines: deque[float] = deque()
        self.txs: deque[_Transaction] = deque()


def _fail_client(tx: ClientInviteTransaction | ClientNonInviteTransaction,
                 exc: SendFailed) -> None:
    """A client transaction's request could not leave: §8.1.3.1 reads that as a 503. The
    TU hears it on the next turn of the clock (in the retransmit timer's slot, so that
    close() cancels it), never from inside the call that created the transaction."""
    log.warn("could not send {what} ({error}): the request fails as 503",
             what=exc.what, error=exc.error)
    tx._stop_retransmit()
    tx._timeout = tx.layer.clock.callLater(0, _report_503, tx, exc)


def _report_503(tx: ClientInviteTransaction | ClientNonInviteTransaction,
                exc: SendFailed) -> None:
    tx._timeout = None
    request = tx.request
    tx.terminate()
    user, tx.user = tx.user, NO_USER
    if request is not None:
        user.receive_response(request.response(503, f"Service Unavailable (not sent: "
                                                    f"{exc.error})"))


def _reparse(data: bytes) -> Message:
    """The message of bytes this layer sent itself (for a retransmission's send hook)."""
    try:
        return parse(data)
    except SipParseError:  # cannot happen for what we serialised; keep the status anyway
        head = data.split(b"\r\n", 1)[0].decode("utf-8", "replace").split(" ", 2)
        return Response(int(head[1]), head[2] if len(head) > 2 else "")


ServerTransaction = ServerInviteTransaction | ServerNonInviteTransaction
ClientTransaction = ClientInviteTransaction | ClientNonInviteTransaction


class TransactionLayer:
    """Owns every live transaction of one user agent and matches messages to them."""

    def __init__(self, send: SendFunction, clock: TimeSource,
                 timers: TimerSettings | None = None) -> None:
        self.send = send
        self.clock = clock
        self.timers = timers or TimerSettings()
        self._server: dict[Hashable, ServerTransaction] = {}
        self._client: dict[Hashable, ClientTransaction] = {}
        # Linger timers: delay -> FIFO of (deadline, transaction). Deadlines in one FIFO
        # only grow, so its head is its earliest; one DelayedCall waits for the earliest
        # head of all. An entry is live while its transaction's `_linger` is that very
        # deadline object; cancelled entries are skipped when they reach the head.
        self._lingering: dict[float, _LingerQueue] = {}
        self._lingering_live = 0
        self._linger_call: DelayedCall | None = None
        # Peers reached over a connection (TCP, twsip.sip.stream): §17 runs no
        # retransmission timers towards them and Timers D, I, J and K are zero.
        self.reliable: set[Address] = set()
        # The last request `match_request` found no transaction for, with its key.
        self._unmatched: tuple[Request | None, tuple[Hashable, ...]] = (None, ())

    def linger(self, addr: Address, delay: float) -> float:
        """`delay` for Timers D, I, J, K towards `addr`: zero over a reliable transport."""
        return 0.0 if addr in self.reliable else delay

    def __len__(self) -> int:
        return len(self._server) + len(self._client)

    def match_request(self, request: Request) -> bool:
        """Give a request to its server transaction; True when it was absorbed there."""
        key = server_key(request)
        tx = self._server.get(key)
        if tx is None:
            self._unmatched = (request, key)
            return False
        return tx.receive_request(request)

    def new_key(self, request: Request) -> tuple[Hashable, ...]:
        """The key of a new server transaction: usually the request just looked up in
        vain by `match_request`, whose key is not computed twice."""
        request_then, key = self._unmatched
        return key if request_then is request else server_key(request)

    def match_response(self, response: Response) -> bool:
        """Give a response to its client transaction (§17.1.3); False when none matches."""
        tx = self._client.get((response.top_via.branch, response.cseq.method))
        if tx is None:
            return False
        tx.receive(response)
        return True

    def has_server(self, key: tuple[Hashable, ...]) -> bool:
        """Whether a server transaction with this key exists (it would absorb a request)."""
        return key in self._server

    def invite_for_cancel(self, cancel: Request) -> ServerInviteTransaction | None:
        """The INVITE transaction a CANCEL names (§9.2): same key, method INVITE."""
        tx = self._server.get(server_key(cancel, "INVITE"))
        return tx if isinstance(tx, ServerInviteTransaction) else None

    def fail_request(self, message: Message, exc: SendFailed) -> bool:
        """A request whose send failed after the send returned (it waited for a TCP
        connection that could not be reopened): its client transaction fails as 503, as
        if the send had raised. False when no client transaction sent it."""
        if not isinstance(message, Request) or message.method == "ACK":
            return False
        tx = self._client.get((message.top_via.branch, message.method))
        if tx is None:
            return False
        _fail_client(tx, exc)
        return True

    def _forget(self, tx: _Transaction) -> None:
        table: dict[Hashable, ClientTransaction] | dict[Hashable, ServerTransaction] = \
            self._client if isinstance(
                tx, (ClientInviteTransaction, ClientNonInviteTransaction)) else self._server
        if table.get(tx.key) is tx:
            del table[tx.key]

    def close(self) -> None:
        """Terminate everything, cancelling every timer; used by cleanup."""
        live: list[_Transaction] = [*self._server.values(), *self._client.values()]
        for tx in live:
            tx.terminate()
        for queue in list(self._lingering.values()):
            for tx in list(queue.txs):
                tx.terminate()
        self._lingering_live = 0
        self._lingering.clear()
        cancel_call(self._linger_call)
        self._linger_call = None

    # -- linger timers (D, I, J, K, L, M) --------------------------------------------------
    def _linger_until(self, tx: _Transaction, delay: float) -> float:
        """Queue `tx` to terminate `delay` s from now; returns the deadline (its token)."""
        deadline = self.clock.seconds() + delay
        queue = self._lingering.get(delay)
        if queue is None:
            queue = self._lingering[delay] = _LingerQueue()
        queue.deadlines.append(deadline)
        queue.txs.append(tx)
        self._lingering_live += 1
        call = self._linger_call
        if call is None:
            self._linger_call = self.clock.callLater(delay, self._linger_expired)
        elif deadline < call.getTime():
            call.cancel()
            self._linger_call = self.clock.callLater(delay, self._linger_expired)
        return deadline

    def _linger_cancelled(self) -> None:
        """A queued transaction stopped lingering early; drop everything once none is left."""
        self._lingering_live -= 1
        if self._lingering_live <= 0:
            self._lingering_live = 0
            self._lingering.clear()
            cancel_call(self._linger_call)
            self._linger_call = None

    def _linger_expired(self) -> None:
        self._linger_call = None
        now = self.clock.seconds()
        due: list[_Transaction] = []
        for queue in self._lingering.values():
            deadlines, txs = queue.deadlines, queue.txs
            while deadlines and deadlines[0] <= now:
                deadline, tx = deadlines.popleft(), txs.popleft()
                if tx._linger is deadline:
                    tx._linger = None
                    self._lingering_live -= 1
                    due.append(tx)
        for tx in due:
            tx.terminate()
        self._schedule_linger()

    def _schedule_linger(self) -> None:
        earliest: float | None = None
        for queue in self._lingering.values():
            deadlines, txs = queue.deadlines, queue.txs
            while deadlines and txs[0]._linger is not deadlines[0]:
                deadlines.popleft()  # stopped early: nothing to wait for
                txs.popleft()
            if deadlines and (earliest is None or deadlines[0] < earliest):
                earliest = deadlines[0]
        cancel_call(self._linger_call)
        self._linger_call = None
        if earliest is not None:
            self._linger_call = self.clock.callLater(
                max(0.0, earliest - self.clock.seconds()), self._linger_expired)


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response (§17.1.1.3): same branch, the response's To."""
    headers = request_headers("ACK", invite.cseq.number, via=invite.headers["via"][0],
                              from_=invite.headers["from"][0], to=response.headers["to"][0],
                              call_id=invite.headers["call-id"][0])
    if "route" in invite.headers:
        headers["route"] = invite.headers["route"]
    return Request("ACK", invite.uri, headers)


def build_cancel(invite: Request) -> Request:
    """The CANCEL for an INVITE (§9.1): same Request-URI, Call-ID, From, To, Via, Route."""
    headers = request_headers("CANCEL", invite.cseq.number, via=invite.headers["via"][0],
                              from_=invite.headers["from"][0], to=invite.headers["to"][0],
                              call_id=invite.headers["call-id"][0])
    if "route" in invite.headers:
        headers["route"] = invite.headers["route"]
    return Request("CANCEL", invite.uri, headers)
