"""A BYE challenged 401/407 by a PBX is sent again with credentials (RFC 3261 §22.2),
within the answerer's limits: a refused password ends the BYE with the challenge."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from twsip.sip.challenged import ChallengedRequest, answering_challenges
from twsip.sip.digest import ChallengeAnswerer, Credentials
from twsip.sip.message import Request, Response, parse, request_headers
from twsip.sip.transaction import ClientNonInviteTransaction, TransactionLayer

PBX = ("127.0.0.1", 5070)


class Inner:
    def __init__(self) -> None:
        self.responses: list[int] = []

    def receive_response(self, response: Response) -> None:
        self.responses.append(response.status)

    def timed_out(self) -> None:
        self.responses.append(408)


class FakeSession:
    def __init__(self, layer: TransactionLayer) -> None:
        self.local_cseq = 2
        self.ua = self
        self.transactions = layer
        self.challenges: Any = ChallengeAnswerer(Credentials("100", "secret"))
        self.n = 0

    def new_via(self) -> str:
        self.n += 1
        return f"SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKbye{self.n};rport"


def bye() -> Request:
    headers = request_headers("BYE", 2, via="SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKbye0",
                              from_="<sip:100@127.0.0.1>;tag=a", to="<sip:200@127.0.0.1>;tag=b",
                              call_id="c1")
    return Request("BYE", "sip:200@127.0.0.1:5064", headers)


def challenge(request: Request) -> Response:
    response = request.response(407)
    response.set("proxy-authenticate",
                 'Digest realm="127.0.0.1", nonce="n1", qop="auth", algorithm=MD5')
    return response


def setup() -> tuple[TransactionLayer, Clock, list[Request], FakeSession]:
    clock, sent = Clock(), []
    layer = TransactionLayer(lambda data, addr, msg: sent.append(parse(data)), clock)
    return layer, clock, sent, FakeSession(layer)


def test_a_challenged_bye_is_sent_again_with_credentials() -> None:
    layer, clock, sent, session = setup()
    inner = Inner()
    request = bye()
    user = answering_challenges(session, request, PBX, inner)
    assert isinstance(user, ChallengedRequest)
    ClientNonInviteTransaction(layer, request, PBX, user)
    layer.match_response(challenge(sent[0]))
    assert len(sent) == 2 and sent[1].cseq.number == 3 and session.local_cseq == 3
    assert 'username="100"' in (sent[1].get("proxy-authorization") or "")
    assert sent[1].top_via.branch != sent[0].top_via.branch
    layer.match_response(sent[1].response(200))
    assert inner.responses == [200]
    # a second challenge to the signed BYE is final: the password was refused
    request = bye()
    ClientNonInviteTransaction(layer, request, PBX,
                               answering_challenges(session, request, PBX, inner))
    layer.match_response(challenge(sent[2]))
    layer.match_response(challenge(sent[3]))
    assert inner.responses == [200, 407] and len(sent) == 4
    layer.close()
    assert not clock.getDelayedCalls()


def test_without_credentials_the_bye_user_is_unchanged() -> None:
    layer, _, _, session = setup()
    session.challenges = None
    inner = Inner()
    assert answering_challenges(session, bye(), PBX, inner) is inner


def test_a_challenged_cancel_is_sent_again_with_credentials_and_the_invites_branch() -> None:
    """§9.1: a proxy matches a CANCEL to its INVITE by Via branch and CSeq number, so
    the signed CANCEL keeps both (a BYE's retry takes new ones)."""
    layer, clock, sent, session = setup()
    inner = Inner()
    headers = request_headers("CANCEL", 1, via="SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKinv",
                              from_="<sip:100@127.0.0.1>;tag=a", to="<sip:200@127.0.0.1>",
                              call_id="c2")
    cancel = Request("CANCEL", "sip:200@127.0.0.1:5070", headers)
    ClientNonInviteTransaction(layer, cancel, PBX,
                               answering_challenges(session, cancel, PBX, inner))
    layer.match_response(challenge(sent[0]))
    assert len(sent) == 2 and sent[1].method == "CANCEL"
    assert sent[1].top_via.branch == "z9hG4bKinv" and sent[1].cseq.number == 1
    assert 'username="100"' in (sent[1].get("proxy-authorization") or "")
    assert session.local_cseq == 2  # a CANCEL takes no CSeq of the dialog's
    layer.match_response(sent[1].response(200))
    assert inner.responses == [200]
    layer.close()
    assert not clock.getDelayedCalls()
