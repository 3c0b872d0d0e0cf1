"""Registration (RFC 3261 §10.2) with digest credentials, on the in-memory network
against a fake registrar: challenge answered, refused credentials, no answer, a stale
nonce, refreshes and the unregistration at the end."""

from __future__ import annotations

import pytest

from fake_registrar import FakeRegistrar
from twsip.sip.digest import Credentials
from twsip.sip.registration import Registration, RegistrationFailed
from twsip.testing import FakeNetwork


def setup(network: FakeNetwork, mode: str = "ok", password: str = "secret",
          algorithm: str = "MD5", expires: int = 300) -> tuple[FakeRegistrar, Registration]:
    registrar = FakeRegistrar(mode=mode, algorithm=algorithm)
    network.attach(registrar, 5070)
    ua = network.add_instance("100")
    registration = Registration(ua, ("127.0.0.1", 5070), "127.0.0.1",
                                credentials=Credentials("100", password), expires=expires,
                                who="instance alice (DN 100)")
    return registrar, registration


def finish(network: FakeNetwork, registration: Registration) -> None:
    network.run(registration.unregister())
    network.run(network.cleanup())
    network.settle()


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_challenge_answered_then_bound(network: FakeNetwork, algorithm: str) -> None:
    registrar, registration = setup(network, algorithm=algorithm)
    assert network.run(registration.register()) == 300
    ua = registration.ua
    assert registrar.bindings == {"sip:100@127.0.0.1": (ua.contact, 300)}
    first, second = registrar.requests
    assert first.get("authorization") is None
    assert second.get("authorization") is not None
    assert f"algorithm={algorithm}" in second.get("authorization")
    assert first.call_id == second.call_id
    assert (first.cseq.number, second.cseq.number) == (1, 2)
    assert first.top_via.branch != second.top_via.branch
    assert first.uri == "sip:127.0.0.1:5070"
    assert first.get("expires") == "300"
    finish(network, registration)
    assert registrar.bindings == {}
    assert registrar.requests[-1].get("expires") == "0"


def test_wrong_password_fails_after_one_answer(network: FakeNetwork) -> None:
    registrar, registration = setup(network, password="wrong")
    with pytest.raises(RegistrationFailed) as info:
        network.run(registration.register())
    assert info.value.status == 401
    assert str(info.value).startswith(
        "instance alice (DN 100) could not register to 127.0.0.1:5070: 401")
    assert "wrong" not in str(info.value)
    assert len(registrar.requests) == 2  # one answer to the challenge, no loop
    assert not registration.registered
    finish(network, registration)
    assert len(registrar.requests) == 2  # nothing to unregister


def test_forbidden(network: FakeNetwork) -> None:
    registrar, registration = setup(network, mode="forbidden")
    with pytest.raises(RegistrationFailed) as info:
        network.run(registration.register())
    assert info.value.status == 403
    finish(network, registration)


def test_no_answer_times_out(network: FakeNetwork) -> None:
    registrar, registration = setup(network, mode="silent")
    start = network.clock.seconds()
    with pytest.raises(RegistrationFailed) as info:
        network.run(registration.register())
    assert info.value.status == 408
    assert network.clock.seconds() - start == pytest.approx(32, abs=0.5)
    assert len(registrar.requests) > 3  # retransmitted (Timer E) meanwhile
    finish(network, registration)


def test_stale_nonce_retried_once(network: FakeNetwork) -> None:
    registrar, registration = setup(network, mode="stale")
    assert network.run(registration.register()) == 300
    assert [r.cseq.number for r in registrar.requests] == [1, 2, 3]
    assert 'nonce="nonce2"' in registrar.requests[2].get("authorization")
    finish(network, registration)


def test_refreshed_before_expiry_with_the_same_call_id(network: FakeNetwork) -> None:
    registrar, registration = setup(network, expires=10)
    network.run(registration.register())
    network.advance(4.9)
    assert len(registrar.requests) == 2
    network.advance(0.2)  # half-way: refreshed, with the nonce it has (nc=2)
    refresh = registrar.requests[2]
    assert refresh.call_id == registrar.requests[0].call_id
    assert refresh.cseq.number == 3
    assert "nc=00000002" in refresh.get("authorization")
    assert registration.registered
    network.advance(5)
    assert len(registrar.requests) == 4
    finish(network, registration)
    assert registrar.bindings == {}


def test_unregister_without_answer_gives_up_quietly(network: FakeNetwork) -> None:
    registrar, registration = setup(network)
    network.run(registration.register())
    registrar.mode = "silent"
    network.run(registration.unregister(grace=2.0))
    assert not registration.registered
    network.run(network.cleanup())
    network.settle()


def test_invite_challenged_407_is_sent_again_with_credentials(network: FakeNetwork) -> None:
    """A call through a PBX (manager.dial): From is the AOR, the 407 is ACKed, the INVITE
    goes again in a new transaction with CSeq 2 and Proxy-Authorization; a second 407 to
    those credentials is final."""
    from twsip.config import SipInstanceConfig
    from twsip.manager import InstanceManager
    from twsip.sip.dialog import CallFailed
    from twsip.sip.message import Request, parse

    pbx = network.endpoint(5070)
    manager = InstanceManager(reactor=network)
    config = SipInstanceConfig("A", "A", "100", pbx_host="127.0.0.1", pbx_port=5070,
                               auth_password="secret")
    managed = manager.create_instance(config)
    ua = managed.ua
    manager.registrations["A"] = Registration(
        ua, ("127.0.0.1", 5070), "127.0.0.1", credentials=Credentials("100", "secret"))
    target = manager.resolve_target("200", caller=ua)
    assert target == "sip:200@127.0.0.1:5070"
    session = manager.dial(ua, target, 10)
    network.pump()

    def challenge(invite: Request) -> None:
        response = invite.response(407, to_tag="pbx")
        response.set("proxy-authenticate", 'Digest realm="127.0.0.1", nonce="abc", qop="auth"')
        pbx.send(response.to_bytes(), ua.address)
        network.pump()

    (data, _), = pbx.take()
    first = parse(data)
    assert isinstance(first, Request) and first.from_.uri == "sip:100@127.0.0.1"
    challenge(first)
    ack, again = (parse(d) for d, _ in pbx.take())
    assert isinstance(ack, Request) and ack.method == "ACK" and ack.cseq.number == 1
    assert isinstance(again, Request) and again.method == "INVITE"
    assert again.cseq.number == 2 and again.call_id == first.call_id
    assert again.from_.tag == first.from_.tag
    assert again.top_via.branch != first.top_via.branch
    assert 'username="100"' in again.get("proxy-authorization")
    challenge(again)  # the same credentials refused: final
    failure = network.run(session.when_answered().addErrback(lambda f: f.value))
    assert isinstance(failure, CallFailed) and failure.status == 407
    manager.registrations.clear()
    network.run(manager.cleanup())
    network.settle()
