"""Every RFC 3261 §17 timer, driven on a Clock: retransmission times, timeouts, absorption."""

from __future__ import annotations

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
    TransactionState,
    server_key,
)

PEER = ("127.0.0.1", 5062)


def request(method: str = "INVITE", branch: str = "z9hG4bKtest1", cseq: int = 1) -> Request:
    return Request(method, "sip:200@127.0.0.1:5062", {
        "via": [f"SIP/2.0/UDP 127.0.0.1:5060;branch={branch}"],
        "max-forwards": ["70"],
        "from": ["<sip:100@127.0.0.1:5060>;tag=a1"],
        "to": ["<sip:200@127.0.0.1:5062>"],
        "call-id": ["c1@127.0.0.1"],
        "cseq": [f"{cseq} {method}"],
    })


def response_to(req: Request, status: int, tag: str = "b1") -> Response:
    return parse(req.response(status, to_tag=tag).to_bytes())  # type: ignore[return-value]


class Recorder:
    def __init__(self) -> None:
        self.clock = Clock()
        self.sent: list[tuple[float, bytes]] = []
        self.layer = TransactionLayer(self.send, self.clock, TimerSettings())
        self.responses: list[Response] = []
        self.timeouts = 0
        self.cancels = 0

    def send(self, data: bytes, addr, message) -> None:
        self.sent.append((self.clock.seconds(), data))

    # The transaction user seam: ClientTransactionUser and InviteServerUser.
    local_tag = "b1"

    def receive_response(self, response: Response) -> None:
        self.responses.append(response)

    def timed_out(self) -> None:
        self.timeouts += 1

    def remote_cancel(self) -> None:
        self.cancels += 1

    def first_lines(self) -> list[str]:
        return [data.split(b"\r\n", 1)[0].decode() for _, data in self.sent]

    def times(self) -> list[float]:
        return [t for t, _ in self.sent]


def advance_to(clock: Clock, t: float, step: float = 0.25) -> None:
    while clock.seconds() < t:
        clock.advance(min(step, t - clock.seconds()))


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def test_timer_a_doubles_and_timer_b_times_out_the_invite(rec: Recorder) -> None:
    ClientInviteTransaction(rec.layer, request(), PEER, rec)
    advance_to(rec.clock, 40)
    # Sent at 0, then A fires at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5; B at 32 s.
    assert rec.times() == [0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert rec.timeouts == 1
    assert len(rec.layer) == 0
    assert rec.clock.getDelayedCalls() == []


def test_provisional_stops_invite_retransmissions(rec: Recorder) -> None:
    req = request()
    tx = ClientInviteTransaction(rec.layer, req, PEER, rec)
    rec.clock.advance(0.1)
    rec.layer.match_response(response_to(req, 100))
    advance_to(rec.clock, 60)
    assert len(rec.sent) == 1
    assert tx.state is TransactionState.PROCEEDING
    assert rec.timeouts == 0  # Timer B does not run in Proceeding


def test_non_2xx_is_acked_and_timer_d_absorbs_retransmissions(rec: Recorder) -> None:
    req = request()
    tx = ClientInviteTransaction(rec.layer, req, PEER, rec)
    final = response_to(req, 486)
    rec.layer.match_response(final)
    assert tx.state is TransactionState.COMPLETED
    assert rec.first_lines()[-1].startswith("ACK sip:200@127.0.0.1:5062")
    ack = parse(rec.sent[-1][1])
    assert ack.top_via.branch == "z9hG4bKtest1" and ack.to.tag == "b1"
    assert str(ack.cseq) == "1 ACK"
    rec.layer.match_response(response_to(req, 486))  # retransmitted final: ACK again
    assert rec.first_lines().count("ACK sip:200@127.0.0.1:5062 SIP/2.0") == 2
    assert len(rec.responses) == 1  # the TU hears of the final response once
    rec.clock.advance(31.9)
    assert tx.state is TransactionState.COMPLETED
    rec.clock.advance(0.2)
    assert tx.state is TransactionState.TERMINATED and rec.clock.getDelayedCalls() == []


def test_2xx_enters_accepted_and_passes_retransmitted_2xx_up(rec: Recorder) -> None:
    req = request()
    tx = ClientInviteTransaction(rec.layer, req, PEER, rec)
    rec.layer.match_response(response_to(req, 200))
    assert tx.state is TransactionState.ACCEPTED
    rec.layer.match_response(response_to(req, 200))
    assert [r.status for r in rec.responses] == [200, 200]  # the TU re-ACKs (§13.2.2.4)
    assert len(rec.sent) == 1  # no ACK from the transaction for a 2xx
    rec.clock.advance(32)  # Timer M = 64*T1
    assert tx.state is TransactionState.TERMINATED and rec.clock.getDelayedCalls() == []


def test_timer_e_caps_at_t2_and_timer_f_times_out(rec: Recorder) -> None:
    ClientNonInviteTransaction(rec.layer, request("OPTIONS"), PEER, rec)
    advance_to(rec.clock, 33)
    times = rec.times()
    assert times[:6] == [0, 0.5, 1.5, 3.5, 7.5, 11.5]  # 0.5, 1, 2, 4, then T2=4 s
    assert all(b - a == 4 for a, b in zip(times[3:], times[4:]))
    assert rec.timeouts == 1
    assert rec.clock.getDelayedCalls() == []


def test_timer_e_in_proceeding_is_t2(rec: Recorder) -> None:
    req = request("BYE")
    ClientNonInviteTransaction(rec.layer, req, PEER, rec)
    rec.layer.match_response(response_to(req, 100))
    advance_to(rec.clock, 10)
    assert rec.times() == [0, 0.5, 4.5, 8.5]


def test_timer_k_lingers_t4_after_final(rec: Recorder) -> None:
    req = request("BYE")
    tx = ClientNonInviteTransaction(rec.layer, req, PEER, rec)
    rec.layer.match_response(response_to(req, 200))
    assert tx.state is TransactionState.COMPLETED
    rec.layer.match_response(response_to(req, 200))
    assert len(rec.responses) == 1  # retransmission absorbed
    rec.clock.advance(4.9)
    assert tx.state is TransactionState.COMPLETED
    rec.clock.advance(0.1)
    assert tx.state is TransactionState.TERMINATED
    assert len(rec.sent) == 1


def test_server_invite_resends_provisional_then_final(rec: Recorder) -> None:
    req = request()
    tx = ServerInviteTransaction(rec.layer, req, PEER)
    tx.respond(req.response(180, to_tag="x"))
    assert rec.layer.match_request(request()) is True
    assert rec.first_lines() == ["SIP/2.0 180 Ringing"] * 2


def test_timer_g_retransmits_error_and_timer_h_gives_up(rec: Recorder) -> None:
    req = request()
    tx = ServerInviteTransaction(rec.layer, req, PEER, rec)
    tx.respond(req.response(486, to_tag="x"))
    advance_to(rec.clock, 33)
    times = rec.times()
    assert times[:6] == [0, 0.5, 1.5, 3.5, 7.5, 11.5]
    assert rec.timeouts == 1 and tx.state is TransactionState.TERMINATED
    assert rec.clock.getDelayedCalls() == []


def test_ack_confirms_and_timer_i_absorbs_acks(rec: Recorder) -> None:
    req = request()
    tx = ServerInviteTransaction(rec.layer, req, PEER)
    tx.respond(req.response(486, to_tag="x"))
    rec.clock.advance(0.2)
    assert rec.layer.match_request(request("ACK")) is True
    assert tx.state is TransactionState.CONFIRMED
    rec.clock.advance(1)
    assert len(rec.sent) == 1  # Timer G stopped
    assert rec.layer.match_request(request("ACK")) is True  # absorbed
    rec.clock.advance(4)  # Timer I = T4
    assert tx.state is TransactionState.TERMINATED and rec.clock.getDelayedCalls() == []


def test_server_invite_2xx_accepted_absorbs_invite_for_timer_l(rec: Recorder) -> None:
    req = request()
    tx = ServerInviteTransaction(rec.layer, req, PEER)
    tx.respond(req.response(200, to_tag="x"))
    assert tx.state is TransactionState.ACCEPTED
    assert rec.layer.match_request(request()) is True  # retransmitted INVITE absorbed
    assert len(rec.sent) == 1  # the UAS core, not the transaction, resends the 2xx
    rec.clock.advance(32)
    assert tx.state is TransactionState.TERMINATED
    assert rec.layer.match_request(request()) is False


def test_server_non_invite_absorbs_in_trying_and_resends_final(rec: Recorder) -> None:
    req = request("OPTIONS")
    tx = ServerNonInviteTransaction(rec.layer, req, PEER)
    assert rec.layer.match_request(request("OPTIONS")) is True
    assert rec.sent == []
    tx.respond(req.response(200, to_tag="x"))
    assert rec.layer.match_request(request("OPTIONS")) is True
    assert rec.first_lines() == ["SIP/2.0 200 OK"] * 2
    rec.clock.advance(31.9)
    assert tx.state is TransactionState.COMPLETED
    rec.clock.advance(0.1)  # Timer J = 64*T1
    assert tx.state is TransactionState.TERMINATED and rec.clock.getDelayedCalls() == []


def test_matching_uses_branch_sent_by_and_method() -> None:
    a = request()
    assert server_key(a) == server_key(request("ACK"))
    assert server_key(a) != server_key(request(branch="z9hG4bKother"))
    cancel = request("CANCEL")
    assert server_key(cancel) != server_key(a)
    assert server_key(cancel, "INVITE") == server_key(a)
    moved = request()
    moved.set("via", "SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKtest1")
    assert server_key(moved) != server_key(a)


def test_rfc2543_requests_match_on_the_old_rule() -> None:
    old = request(branch="1")
    old.set("via", "SIP/2.0/UDP 127.0.0.1:5060")
    ack = request("ACK")
    ack.set("via", "SIP/2.0/UDP 127.0.0.1:5060")
    ack.set("to", "<sip:200@127.0.0.1:5062>;tag=x")
    assert server_key(old) == server_key(ack)
    other = request()
    other.set("via", "SIP/2.0/UDP 127.0.0.1:5060")
    other.set("cseq", "2 INVITE")
    assert server_key(old) != server_key(other)


def test_timers_are_configurable(rec: Recorder) -> None:
    layer = TransactionLayer(rec.send, rec.clock, TimerSettings(t1=0.1, t2=0.4, t4=1.0))
    ClientInviteTransaction(layer, request(), PEER, rec)
    advance_to(rec.clock, 7, step=0.01)
    assert rec.times()[:4] == pytest.approx([0, 0.1, 0.3, 0.7], abs=0.011)
    assert rec.timeouts == 1 and rec.clock.seconds() >= 6.4


def test_close_cancels_every_timer(rec: Recorder) -> None:
    ClientInviteTransaction(rec.layer, request(), PEER, rec)
    ServerNonInviteTransaction(rec.layer, request("OPTIONS", "z9hG4bKs"), PEER).respond(
        request("OPTIONS").response(200))
    assert rec.clock.getDelayedCalls()
    rec.layer.close()
    assert rec.clock.getDelayedCalls() == [] and len(rec.layer) == 0
