"""RFC 3261 §17 transactions over UDP, with the RFC 6026 "Accepted" state.

Four small state machines. Each one's docstring is its transition table; the code below it
reads the same way. None of them touches a socket: the `TransactionLayer` is handed a
`send(data, addr, message)` callable and an `IReactorTime`, so tests drive every timer with
`twisted.internet.task.Clock`.

Timers live in three slots per transaction (retransmit: A/E/G, timeout: B/F/H, linger:
D/I/J/K/L/M), and every transition that leaves a state cancels the timers of that state: a
terminated transaction owns none. The linger timers, which only end a transaction that
waits out retransmissions (32 s under load for every call), are not a DelayedCall each:
the layer keeps them in one first-in-first-out queue per delay, behind a single DelayedCall
set for the earliest deadline, so they fire at exactly the same times for a fraction of the
cost and memory (see `TransactionLayer._linger_until`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Hashable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from twsip.sip.message import Message, Request, Response, SipParseError, parse
from twsip.sip.uri import Address

__all__ = [
    "TimerSettings",
    "TransactionLayer",
    "ClientInviteTransaction",
    "ClientNonInviteTransaction",
    "ServerInviteTransaction",
    "ServerNonInviteTransaction",
    "server_key",
    "MAGIC_COOKIE",
]

MAGIC_COOKIE = "z9hG4bK"

SendFunction = Callable[[bytes, Address, Message], None]

CALLING = "calling"
TRYING = "trying"
PROCEEDING = "proceeding"
ACCEPTED = "accepted"
COMPLETED = "completed"
CONFIRMED = "confirmed"
TERMINATED = "terminated"


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


def server_key(request: Request, method: str | None = None) -> Hashable:
    """The §17.2.3 matching key; RFC 2543 requests (no magic cookie) use the old rule.

    An ACK matches its INVITE, so ACK keys use method INVITE. `method` overrides the
    request's own, which is how a CANCEL finds the INVITE it cancels.
    """
    if method is None:
        method = "INVITE" if request.method == "ACK" else request.method
    via = request.top_via
    branch = via.branch
    if branch and branch.startswith(MAGIC_COOKIE) and len(branch) > 7:
        return (branch, via.host.lower(), via.port or 5060, method)
    return ("2543", request.uri, request.from_.tag, request.call_id,
            request.cseq.number, via.host.lower(), via.port, via.branch, method)


def _cancelled(call: IDelayedCall | None) -> None:
    """Cancel `call` if it is still pending; returns None for the slot that held it."""
    if call is not None and call.active():
        call.cancel()
    return None


def _ignore(*_: object) -> None:
    """The TU callback of a transaction whose TU can no longer be called."""


class _Transaction:
    """What all four machines share.

    A transaction lets go of what its remaining states cannot use: once it only lingers to
    absorb or answer retransmissions (up to 32 s after every call under load), `request`
    becomes None, and so do the TU callbacks that can no longer fire (a server transaction
    after its final response; a client one after a 2xx to an INVITE or a final response to
    anything else). Under load this is the difference between a few objects and a hundred
    per call for the garbage collector to walk.
    """

    __slots__ = ("layer", "key", "request", "addr", "state", "_retransmit", "_timeout",
                 "_linger", "_interval", "_wire")

    def __init__(self, layer: "TransactionLayer", key: Hashable, request: Request,
                 addr: Address) -> None:
        self.layer = layer
        self.key = key
        self.request: Request | None = request
        self.addr = addr
        self.state = ""
        self._retransmit: IDelayedCall | None = None
        self._timeout: IDelayedCall | None = None
        self._linger: float | None = None  # deadline of D/I/J/K/L/M, queued in the layer
        self._interval = layer.timers.t1
        self._wire: tuple[bytes, Message | None] | None = None

    def _send(self, message: Message) -> None:
        self._wire = (message.to_bytes(), message)
        self.layer.send(self._wire[0], self.addr, message)

    def _resend(self) -> None:
        if self._wire is not None:
            data, message = self._wire
            if message is None:  # let go of on completion; rebuilt for the send hook
                message = _reparse(data)
            self.layer.send(data, self.addr, message)

    def _later(self, delay: float, fn: Callable[[], None]) -> IDelayedCall:
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
        self._retransmit = _cancelled(self._retransmit)
        self._timeout = _cancelled(self._timeout)

    def terminate(self) -> None:
        if self.state != TERMINATED:
            self.state = TERMINATED
            self._stop_timers()
            self.layer._forget(self)

    def __repr__(self) -> str:
        method = self.request.method if self.request is not None else self.key[-1]
        return f"<{type(self).__name__} {method} {self.state}>"


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

    __slots__ = ("on_response", "on_timeout", "_ack")

    def __init__(self, layer: "TransactionLayer", request: Request, addr: Address,
                 on_response: Callable[[Response], None], on_timeout: Callable[[], None]) -> None:
        super().__init__(layer, (request.top_via.branch, "INVITE"), request, addr)
        self.on_response = on_response
        self.on_timeout = on_timeout
        self._ack: bytes | None = None
        self.state = CALLING
        layer._client[self.key] = self
        self._send(request)
        self._retransmit = self._later(self._interval, self._timer_a)
        self._timeout = self._later(layer.timers.timeout, self._timer_b)

    def _timer_a(self) -> None:
        self._resend()
        self._interval *= 2
        self._retransmit = self._later(self._interval, self._timer_a)

    def _timer_b(self) -> None:
        self._timeout = None
        self.terminate()
        self.on_timeout()

    def receive(self, response: Response) -> None:
        status = response.status
        state = self.state
        if state == CALLING or state == PROCEEDING:
            if status < 200:
                if state == CALLING:
                    self.state = PROCEEDING
                    self._stop_retransmit()
                self.on_response(response)
            elif status < 300:
                self.state = ACCEPTED
                self._stop_retransmit()
                # Accepted only passes 2xx retransmissions up: no INVITE to resend, no
                # ACK to build (the TU ACKs a 2xx), no Timer B.
                self.request = None
                self._wire = None
                self.on_timeout = _ignore
                self._linger_for(self.layer.timers.timeout)
                self.on_response(response)
            else:
                self.state = COMPLETED
                self._stop_retransmit()
                ack = build_ack(self.request, response)
                self._ack = ack.to_bytes()
                self.layer.send(self._ack, self.addr, ack)
                self._linger_for(self.layer.timers.timer_d)
                self.on_response(response)
        elif state == ACCEPTED:
            if 200 <= status < 300:
                self.on_response(response)
        elif state == COMPLETED and status >= 300 and self._ack is not None:
            self.layer.send(self._ack, self.addr, build_ack(self.request, response))


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

    __slots__ = ("on_response", "on_timeout")

    def __init__(self, layer: "TransactionLayer", request: Request, addr: Address,
                 on_response: Callable[[Response], None], on_timeout: Callable[[], None]) -> None:
        super().__init__(layer, (request.top_via.branch, request.method), request, addr)
        self.on_response = on_response
        self.on_timeout = on_timeout
        self.state = TRYING
        layer._client[self.key] = self
        self._send(request)
        self._retransmit = self._later(self._interval, self._timer_e)
        self._timeout = self._later(layer.timers.timeout, self._timer_f)

    def _timer_e(self) -> None:
        self._resend()
        t2 = self.layer.timers.t2
        self._interval = t2 if self.state == PROCEEDING else min(2 * self._interval, t2)
        self._retransmit = self._later(self._interval, self._timer_e)

    def _timer_f(self) -> None:
        self._timeout = None
        self.terminate()
        self.on_timeout()

    def receive(self, response: Response) -> None:
        if self.state != TRYING and self.state != PROCEEDING:
            return
        if response.status < 200:
            self.state = PROCEEDING
        else:
            self.state = COMPLETED
            self._stop_retransmit()
            self._linger_for(self.layer.timers.t4)
            # Timer K only absorbs retransmitted responses: nothing is sent or reported.
            on_response = self.on_response
            self.request = None
            self._wire = None
            self.on_response = self.on_timeout = _ignore
            on_response(response)
            return
        self.on_response(response)


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

    __slots__ = ("on_timeout", "tu")

    def __init__(self, layer: "TransactionLayer", request: Request, addr: Address,
                 on_timeout: Callable[[], None] | None = None) -> None:
        super().__init__(layer, server_key(request), request, addr)
        self.on_timeout = on_timeout
        self.tu: object = None
        self.state = PROCEEDING
        layer._server[self.key] = self

    def receive_request(self, request: Request) -> bool:
        """Handle a retransmission or ACK; False means the UAS core should see it."""
        state = self.state
        if request.method == "ACK":
            if state == COMPLETED:
                self.state = CONFIRMED
                self._stop_retransmit()
                self._linger_for(self.layer.timers.t4)
                return True
            return state != ACCEPTED
        if state == PROCEEDING or state == COMPLETED:
            self._resend()
        return True

    def respond(self, response: Response) -> None:
        if self.state != PROCEEDING:
            return
        self._send(response)
        status = response.status
        if status < 200:
            return
        # Answered: what is left to do (absorb retransmissions, resend the final response,
        # wait for the ACK) needs neither the request nor, once Accepted, the response or
        # the no-ACK callback. Letting them go keeps a call's lingering state small.
        self.request = None
        if status < 300:
            self.state = ACCEPTED
            self._wire = None  # never resent from Accepted: the UAS core resends the 2xx
            self.on_timeout = None
            self._linger_for(self.layer.timers.timeout)
        else:
            self.state = COMPLETED
            self._retransmit = self._later(self._interval, self._timer_g)
            self._timeout = self._later(self.layer.timers.timeout, self._timer_h)

    @property
    def answered(self) -> bool:
        """A final response has been sent."""
        return self.state != PROCEEDING

    def _timer_g(self) -> None:
        self._resend()
        self._interval = min(2 * self._interval, self.layer.timers.t2)
        self._retransmit = self._later(self._interval, self._timer_g)

    def _timer_h(self) -> None:
        self._timeout = None
        self.terminate()
        if self.on_timeout is not None:
            self.on_timeout()


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
        super().__init__(layer, server_key(request), request, addr)
        self.state = TRYING
        layer._server[self.key] = self

    def receive_request(self, request: Request) -> bool:
        if self.state != TRYING:
            self._resend()
        return True

    def respond(self, response: Response) -> None:
        if self.state == COMPLETED or self.state == TERMINATED:
            return
        self._send(response)
        if response.status < 200:
            self.state = PROCEEDING
        else:
            self.state = COMPLETED
            # Only the response's bytes are resent from now on (32 s of Timer J): keep
            # those, not the request nor the response's objects.
            self.request = None
            self._wire = (self._wire[0], None)  # type: ignore[index]
            self._linger_for(self.layer.timers.timeout)


class _LingerQueue:
    """One FIFO of lingering transactions, as two parallel deques (deadline, transaction):
    no tuple per entry, which would be one more object per call for the GC to walk."""

    __slots__ = ("deadlines", "txs")

    def __init__(self) -> None:
        self.deadlines: deque[float] = deque()
        self.txs: deque[_Transaction] = deque()


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

    def __init__(self, send: SendFunction, clock: IReactorTime,
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
        self._linger_call: IDelayedCall | None = None

    def __len__(self) -> int:
        return len(self._server) + len(self._client)

    def match_request(self, request: Request) -> bool:
        """Give a request to its server transaction; True when it was absorbed there."""
        tx = self._server.get(server_key(request))
        if tx is None:
            return False
        return tx.receive_request(request)

    def match_response(self, response: Response) -> bool:
        """Give a response to its client transaction (§17.1.3); False when none matches."""
        tx = self._client.get((response.top_via.branch, response.cseq.method))
        if tx is None:
            return False
        tx.receive(response)
        return True

    def invite_for_cancel(self, cancel: Request) -> ServerInviteTransaction | None:
        """The INVITE transaction a CANCEL names (§9.2): same key, method INVITE."""
        tx = self._server.get(server_key(cancel, "INVITE"))
        return tx if isinstance(tx, ServerInviteTransaction) else None

    def _forget(self, tx: _Transaction) -> None:
        table: dict = self._client if isinstance(
            tx, (ClientInviteTransaction, ClientNonInviteTransaction)) else self._server
        if table.get(tx.key) is tx:
            del table[tx.key]

    def close(self) -> None:
        """Terminate everything, cancelling every timer; used by cleanup."""
        for tx in list(self._server.values()) + list(self._client.values()):
            tx.terminate()
        for queue in list(self._lingering.values()):
            for tx in list(queue.txs):
                tx.terminate()
        self._lingering_live = 0
        self._lingering.clear()
        self._linger_call = _cancelled(self._linger_call)

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
            self._linger_call = _cancelled(self._linger_call)

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
        self._linger_call = _cancelled(self._linger_call)
        if earliest is not None:
            self._linger_call = self.clock.callLater(
                max(0.0, earliest - self.clock.seconds()), self._linger_expired)


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response (§17.1.1.3): same branch, the response's To."""
    headers: dict[str, list[str]] = {
        "via": [invite.headers["via"][0]],
        "max-forwards": ["70"],
        "from": invite.headers["from"],
        "to": response.headers["to"],
        "call-id": invite.headers["call-id"],
        "cseq": [f"{invite.cseq.number} ACK"],
    }
    if "route" in invite.headers:
        headers["route"] = invite.headers["route"]
    return Request("ACK", invite.uri, headers)


def build_cancel(invite: Request) -> Request:
    """The CANCEL for an INVITE (§9.1): same Request-URI, Call-ID, From, To, Via, Route."""
    headers: dict[str, list[str]] = {
        "via": [invite.headers["via"][0]],
        "max-forwards": ["70"],
        "from": invite.headers["from"],
        "to": invite.headers["to"],
        "call-id": invite.headers["call-id"],
        "cseq": [f"{invite.cseq.number} CANCEL"],
    }
    if "route" in invite.headers:
        headers["route"] = invite.headers["route"]
    return Request("CANCEL", invite.uri, headers)
