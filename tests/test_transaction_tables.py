"""Every row of the §17 transition tables in transaction.py's docstrings, driven on a Clock.

The tables are parsed from the class docstrings, and each row must have a driver below: a
row added, changed or dropped in a docstring fails `test_every_row_has_a_case` until the
code and its test say the same thing.
"""

from __future__ import annotations

from typing import Callable

import pytest
from twisted.internet.task import Clock

from twsip.sip.message import Request, Response, parse
from twsip.sip.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    TimerSettings,
    TransactionLayer,
)

PEER = ("127.0.0.1", 5062)
MACHINES = (ClientInviteTransaction, ClientNonInviteTransaction, ServerInviteTransaction,
            ServerNonInviteTransaction)
Tx = ClientInviteTransaction | ClientNonInviteTransaction | ServerInviteTransaction \
    | ServerNonInviteTransaction


def table_rows(cls: type) -> list[tuple[str, str, str, str]]:
    """(state, input, action, next) for each row of the markdown table in `cls.__doc__`."""
    rows = []
    for line in (cls.__doc__ or "").splitlines():
        line = line.strip()
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == "state" or set(cells[0]) <= {"-"}:
            continue
        state, event, action, after = cells
        rows.append((state, event, action, after))
    return rows


class World:
    """A transaction layer on a Clock that records what is sent and what the TU hears."""

    local_tag = "b1"

    def __init__(self) -> None:
        self.clock = Clock()
        self.layer = TransactionLayer(self._send, self.clock, TimerSettings())
        self.sent: list[tuple[float, str]] = []
        self.responses: list[int] = []
        self.timeouts = 0

    def _send(self, data: bytes, addr: object, message: object) -> None:
        self.sent.append((self.clock.seconds(), data.split(b"\r\n", 1)[0].decode()))

    # the TU seam (ClientTransactionUser, InviteServerUser)
    def receive_response(self, response: Response) -> None:
        self.responses.append(response.status)

    def timed_out(self) -> None:
        self.timeouts += 1

    def remote_cancel(self) -> None:
        pass

    def take(self) -> list[str]:
        sent, self.sent = self.sent, []
        return [line for _, line in sent]

    def advance(self, seconds: float) -> None:
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end - 1e-9:
            self.clock.advance(min(0.25, end - self.clock.seconds()))


def request(method: str) -> Request:
    return Request(method, "sip:200@127.0.0.1:5062", {
        "via": ["SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKtable"],
        "max-forwards": ["70"],
        "from": ["<sip:100@127.0.0.1:5060>;tag=a1"],
        "to": ["<sip:200@127.0.0.1:5062>"],
        "call-id": ["table@127.0.0.1"],
        "cseq": [f"1 {method}"],
    })


def response(req: Request, status: int) -> Response:
    return parse(req.response(status, to_tag="b1").to_bytes())  # type: ignore[return-value]


def ack_for(invite: Request) -> Request:
    ack = request("ACK")
    ack.set("to", "<sip:200@127.0.0.1:5062>;tag=b1")
    return ack


# -- transactions brought into a given state ------------------------------------------------

def client_invite(w: World, state: str) -> ClientInviteTransaction:
    req = request("INVITE")
    tx = ClientInviteTransaction(w.layer, req, PEER, w)
    status = {"calling": None, "proceeding": 180, "accepted": 200, "completed": 486}[state]
    if status is not None:
        tx.receive(response(req, status))
    w.take(), w.responses.clear()
    assert tx.state.value == state
    return tx


def client_non_invite(w: World, state: str) -> ClientNonInviteTransaction:
    req = request("OPTIONS")
    tx = ClientNonInviteTransaction(w.layer, req, PEER, w)
    status = {"trying": None, "proceeding": 100, "completed": 200}[state]
    if status is not None:
        tx.receive(response(req, status))
    w.take(), w.responses.clear()
    assert tx.state.value == state
    return tx


def server_invite(w: World, state: str) -> ServerInviteTransaction:
    req = request("INVITE")
    tx = ServerInviteTransaction(w.layer, req, PEER, w)
    if state in ("accepted", "completed", "confirmed"):
        tx.respond(req.response(200 if state == "accepted" else 486, to_tag="b1"))
    if state == "confirmed":
        tx.receive_request(ack_for(req))
    w.take()
    assert tx.state.value == state
    return tx


def server_non_invite(w: World, state: str) -> ServerNonInviteTransaction:
    req = request("BYE")
    tx = ServerNonInviteTransaction(w.layer, req, PEER)
    if state in ("proceeding", "completed"):
        tx.respond(req.response(100 if state == "proceeding" else 200))
    w.take()
    assert tx.state.value == state
    return tx


# -- one driver per table row: bring the machine to `state`, apply the input, check ---------
Driver = Callable[[World, str], Tx]
CASES: dict[tuple[str, str, str], Driver] = {}


def case(cls: type, state: str, event: str) -> Callable[[Driver], Driver]:
    def register(fn: Driver) -> Driver:
        CASES[(cls.__name__, state, event)] = fn
        return fn
    return register


CIT, CNIT, SIT, SNIT = MACHINES


@case(CIT, "calling", "Timer A")
def _(w: World, state: str) -> Tx:
    tx = client_invite(w, state)
    w.advance(7.6)
    assert [t for t, _ in w.sent] == [0.5, 1.5, 3.5, 7.5]  # A doubles from T1
    return tx


@case(CIT, "calling", "Timer B")
def _(w: World, state: str) -> Tx:
    tx = client_invite(w, state)
    w.advance(32)
    assert w.timeouts == 1 and w.clock.getDelayedCalls() == []
    return tx


@case(CIT, "calling/proceeding", "1xx")
def _(w: World, state: str) -> Tx:
    tx = client_invite(w, state)
    tx.receive(response(request("INVITE"), 183))
    assert w.responses == [183]
    w.advance(2)
    assert w.take() == []  # no more Timer A in proceeding
    return tx


@case(CIT, "calling/proceeding", "2xx")
def _(w: World, state: str) -> Tx:
    tx = client_invite(w, state)
    tx.receive(response(request("INVITE"), 200))
    assert w.responses == [200] and w.take() == []  # the TU ACKs a 2xx, not the transaction
    w.advance(31.9)
    assert tx.state.value == "accepted"  # Timer M = 64*T1
    return tx


@case(CIT, "calling/proceeding", "300-699")
def _(w: World, state: str) -> Tx:
    tx = client_invite(w, state)
    tx.receive(response(request("INVITE"), 486))
    assert w.responses == [486] and w.take() == ["ACK sip:200@127.0.0.1:5062 SIP/2.0"]
    w.advance(31.9)
    assert tx.state.value == "completed"  # Timer D = 32 s
    return tx


@case(CIT, "accepted", "2xx")
def _(w: World, state: str) -> Tx:
    tx = client_invite(w, state)
    tx.receive(response(request("INVITE"), 200))
    assert w.responses == [200] and w.take() == []
    return tx


@case(CIT, "completed", "300-699")
def _(w: World, state: str) -> Tx:
    tx = client_invite(w, state)
    tx.receive(response(request("INVITE"), 486))
    assert w.take() == ["ACK sip:200@127.0.0.1:5062 SIP/2.0"] and w.responses == []
    return tx


@case(CIT, "accepted/completed", "Timer M/D")
def _(w: World, state: str) -> Tx:
    tx = client_invite(w, state)
    w.advance(32)
    assert w.clock.getDelayedCalls() == [] and len(w.layer) == 0
    return tx


@case(CNIT, "trying", "Timer E")
def _(w: World, state: str) -> Tx:
    tx = client_non_invite(w, state)
    w.advance(15.6)
    assert [t for t, _ in w.sent] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]  # doubling to T2
    return tx


@case(CNIT, "proceeding", "Timer E")
def _(w: World, state: str) -> Tx:
    tx = client_non_invite(w, state)
    w.advance(12.1)
    # Timer E was due at 0.5 when the 100 came; from proceeding it is T2 each time.
    assert [t for t, _ in w.sent] == [0.5, 4.5, 8.5, 12.5][:len(w.sent)]
    assert len(w.sent) == 3
    return tx


@case(CNIT, "trying/proceeding", "Timer F")
def _(w: World, state: str) -> Tx:
    tx = client_non_invite(w, state)
    w.advance(32)
    assert w.timeouts == 1 and w.clock.getDelayedCalls() == []
    return tx


@case(CNIT, "trying/proceeding", "1xx")
def _(w: World, state: str) -> Tx:
    tx = client_non_invite(w, state)
    tx.receive(response(request("OPTIONS"), 180))
    assert w.responses == [180]
    return tx


@case(CNIT, "trying/proceeding", "200-699")
def _(w: World, state: str) -> Tx:
    tx = client_non_invite(w, state)
    tx.receive(response(request("OPTIONS"), 404))
    tx.receive(response(request("OPTIONS"), 404))  # a retransmission: absorbed
    assert w.responses == [404]
    w.advance(4.9)
    assert tx.state.value == "completed" and w.take() == []  # Timer K = T4
    return tx


@case(CNIT, "completed", "Timer K")
def _(w: World, state: str) -> Tx:
    tx = client_non_invite(w, state)
    w.advance(5)
    assert w.clock.getDelayedCalls() == [] and len(w.layer) == 0
    return tx


@case(SIT, "proceeding", "INVITE again")
def _(w: World, state: str) -> Tx:
    tx = server_invite(w, state)
    req = request("INVITE")
    tx.respond(req.response(180, to_tag="b1"))
    w.take()
    assert tx.receive_request(req) is True
    assert w.take() == ["SIP/2.0 180 Ringing"]
    return tx


@case(SIT, "proceeding", "TU sends 1xx")
def _(w: World, state: str) -> Tx:
    tx = server_invite(w, state)
    tx.respond(request("INVITE").response(183, to_tag="b1"))
    assert w.take() == ["SIP/2.0 183 Session Progress"]
    return tx


@case(SIT, "proceeding", "TU sends 2xx")
def _(w: World, state: str) -> Tx:
    tx = server_invite(w, state)
    tx.respond(request("INVITE").response(200, to_tag="b1"))
    assert w.take() == ["SIP/2.0 200 OK"]
    w.advance(31.9)
    assert w.take() == [] and tx.state.value == "accepted"  # Timer L = 64*T1
    return tx


@case(SIT, "proceeding", "TU sends 300-699")
def _(w: World, state: str) -> Tx:
    tx = server_invite(w, state)
    tx.respond(request("INVITE").response(486, to_tag="b1"))
    assert w.take() == ["SIP/2.0 486 Busy Here"]
    return tx


@case(SIT, "accepted", "INVITE again")
def _(w: World, state: str) -> Tx:
    tx = server_invite(w, state)
    assert tx.receive_request(request("INVITE")) is True and w.take() == []
    return tx


@case(SIT, "accepted", "ACK (RFC 2543 peer)")
def _(w: World, state: str) -> Tx:
    tx = server_invite(w, state)
    assert tx.receive_request(ack_for(request("INVITE"))) is False  # the UAS core's
    return tx


@case(SIT, "completed", "INVITE again")
def _(w: World, state: str) -> Tx:
    tx = server_invite(w, state)
    assert tx.receive_request(request("INVITE")) is True
    assert w.take() == ["SIP/2.0 486 Busy Here"]
    return tx


@case(SIT, "completed", "Timer G")
def _(w: World, state: str) -> Tx:
    tx = server_invite(w, state)
    w.advance(15.6)
    assert [t for t, _ in w.sent] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    return tx


@case(SIT, "completed", "Timer H")
def _(w: World, state: str) -> Tx:
    tx = server_invite(w, state)
    w.advance(32)
    assert w.timeouts == 1 and w.clock.getDelayedCalls() == []
    return tx


@case(SIT, "completed", "ACK")
def _(w: World, state: str) -> Tx:
    tx = server_invite(w, state)
    assert tx.receive_request(ack_for(request("INVITE"))) is True
    w.advance(4.9)
    assert w.take() == [] and tx.state.value == "confirmed"  # Timer I = T4, G/H stopped
    return tx


@case(SIT, "confirmed", "Timer I")
def _(w: World, state: str) -> Tx:
    tx = server_invite(w, state)
    w.advance(5)
    assert w.clock.getDelayedCalls() == [] and len(w.layer) == 0 and w.timeouts == 0
    return tx


@case(SIT, "accepted", "Timer L")
def _(w: World, state: str) -> Tx:
    tx = server_invite(w, state)
    w.advance(32)
    assert w.clock.getDelayedCalls() == [] and len(w.layer) == 0
    return tx


@case(SNIT, "trying", "request again")
def _(w: World, state: str) -> Tx:
    tx = server_non_invite(w, state)
    assert tx.receive_request(request("BYE")) is True and w.take() == []
    return tx


@case(SNIT, "trying/proceeding", "TU sends 1xx")
def _(w: World, state: str) -> Tx:
    tx = server_non_invite(w, state)
    tx.respond(request("BYE").response(100))
    assert w.take() == ["SIP/2.0 100 Trying"]
    return tx


@case(SNIT, "trying/proceeding", "TU sends final")
def _(w: World, state: str) -> Tx:
    tx = server_non_invite(w, state)
    tx.respond(request("BYE").response(200))
    assert w.take() == ["SIP/2.0 200 OK"]
    w.advance(31.9)
    assert tx.state.value == "completed"  # Timer J = 64*T1
    return tx


@case(SNIT, "proceeding/completed", "request again")
def _(w: World, state: str) -> Tx:
    tx = server_non_invite(w, state)
    assert tx.receive_request(request("BYE")) is True
    assert w.take() == ["SIP/2.0 100 Trying" if state == "proceeding" else "SIP/2.0 200 OK"]
    return tx


@case(SNIT, "completed", "Timer J")
def _(w: World, state: str) -> Tx:
    tx = server_non_invite(w, state)
    w.advance(32)
    assert w.clock.getDelayedCalls() == [] and len(w.layer) == 0
    return tx


ROWS = [(cls, row) for cls in MACHINES for row in table_rows(cls)]


def test_every_row_has_a_case() -> None:
    documented = {(cls.__name__, state, event) for cls, (state, event, _, _) in ROWS}
    assert documented == set(CASES), (
        f"rows without a case: {sorted(documented - set(CASES))}; "
        f"cases without a row: {sorted(set(CASES) - documented)}")
    assert len(ROWS) == 8 + 6 + 12 + 5


@pytest.mark.parametrize(
    "cls, start, event, after",
    [(cls, start, event, after)
     for cls, (states, event, _, after) in ROWS for start in states.split("/")],
    ids=lambda v: v.__name__ if isinstance(v, type) else str(v))
def test_row(cls: type, start: str, event: str, after: str) -> None:
    w = World()
    state_cell = next(s for s, e, _, _ in table_rows(cls) if e == event and start in s.split("/"))
    tx = CASES[(cls.__name__, state_cell, event)](w, start)
    assert tx.state.value == (start if after == "same" else after)
    tx.layer.close()
    assert w.clock.getDelayedCalls() == []
