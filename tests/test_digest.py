"""Digest arithmetic against RFC 7616's own examples, and how challenges are read,
answered and masked."""

from __future__ import annotations

import hashlib

from twsip.sip.digest import (
    Challenge,
    ChallengeAnswerer,
    Credentials,
    authorization_value,
    choose_challenge,
    digest_response,
    mask_credentials,
    parse_challenge,
)
from twsip.sip.message import Request, Response, request_headers

# RFC 7616 §3.9.1: the same request answered with MD5 and with SHA-256.
MUFASA = Credentials("Mufasa", "Circle of Life")
REALM = "http-auth@example.org"
NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"


def rfc_challenge(algorithm: str) -> Challenge:
    value = (f'Digest realm="{REALM}", qop="auth, auth-int", algorithm={algorithm}, '
             f'nonce="{NONCE}", opaque="{OPAQUE}"')
    challenge = parse_challenge(value)
    assert challenge is not None
    return challenge


def test_rfc7616_md5_example() -> None:
    challenge = rfc_challenge("MD5")
    assert challenge.qop == ("auth", "auth-int")
    assert digest_response(challenge, MUFASA, "GET", "/dir/index.html", 1, CNONCE) == \
        "8ca523f5e9506fed4657c9700eebdbec"


def test_rfc7616_sha256_example() -> None:
    challenge = rfc_challenge("SHA-256")
    assert digest_response(challenge, MUFASA, "GET", "/dir/index.html", 1, CNONCE) == \
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"


def test_authorization_header_carries_what_the_server_needs() -> None:
    value = authorization_value(rfc_challenge("SHA-256"), MUFASA, "GET", "/dir/index.html",
                                1, CNONCE)
    assert value.startswith('Digest username="Mufasa", realm="http-auth@example.org"')
    for part in ('uri="/dir/index.html"', "algorithm=SHA-256", "qop=auth", "nc=00000001",
                 f'cnonce="{CNONCE}"', f'opaque="{OPAQUE}"',
                 'response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"'):
        assert part in value
    assert "Circle of Life" not in value


def test_without_qop_the_rfc2069_form() -> None:
    challenge = Challenge("r", "n")
    ha1 = hashlib.md5(b"Mufasa:r:Circle of Life").hexdigest()
    ha2 = hashlib.md5(b"REGISTER:sip:127.0.0.1").hexdigest()
    expected = hashlib.md5(f"{ha1}:n:{ha2}".encode()).hexdigest()
    assert digest_response(challenge, MUFASA, "REGISTER", "sip:127.0.0.1", 1, "x") == expected
    value = authorization_value(challenge, MUFASA, "REGISTER", "sip:127.0.0.1")
    assert "qop" not in value and "nc=" not in value


def test_unknown_schemes_and_algorithms_are_skipped() -> None:
    assert parse_challenge('Basic realm="x"') is None
    assert parse_challenge('Digest realm="x", nonce="n", algorithm=SHA-512-256') is None
    assert parse_challenge('Digest realm="x"') is None  # no nonce


def test_the_strongest_challenge_is_answered() -> None:
    response = Response(401, headers={"www-authenticate": [
        'Digest realm="a", nonce="1", algorithm=MD5, qop="auth"',
        'Digest realm="a", nonce="2", algorithm=SHA-256, qop="auth"']})
    chosen = choose_challenge(response)
    assert chosen is not None and chosen.algorithm == "SHA-256" and not chosen.proxy
    proxy = Response(407, headers={"proxy-authenticate": ['Digest realm="a", nonce="3"']})
    chosen = choose_challenge(proxy)
    assert chosen is not None and chosen.proxy and chosen.header == "proxy-authorization"


def test_quoted_commas_and_stale() -> None:
    challenge = parse_challenge('Digest realm="a, b", nonce="x\\"y", stale=TRUE')
    assert challenge == Challenge("a, b", 'x"y', stale=True)


def register() -> Request:
    headers = request_headers("REGISTER", 1, via="SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1",
                              from_="<sip:100@127.0.0.1>;tag=1", to="<sip:100@127.0.0.1>",
                              call_id="c@127.0.0.1")
    return Request("REGISTER", "sip:127.0.0.1", headers)


def challenge_response(request: Request, stale: bool = False, nonce: str = "n1") -> Response:
    response = request.response(401)
    response.set("www-authenticate", f'Digest realm="127.0.0.1", nonce="{nonce}", '
                                     f'qop="auth"' + (", stale=true" if stale else ""))
    return response


def test_one_answer_then_one_stale_retry_then_nothing() -> None:
    answerer = ChallengeAnswerer(Credentials("100", "secret"))
    first = register()
    second = answerer.retry(first, challenge_response(first), "SIP/2.0/UDP x;branch=z9hG4bK2")
    assert second is not None
    assert second.cseq.number == 2 and second.top_via.branch == "z9hG4bK2"
    assert 'nonce="n1"' in (second.get("authorization") or "")
    # a plain 401 again: the password is wrong, no more tries
    assert answerer.retry(second, challenge_response(second), "v") is None
    answerer.new_round()
    third = answerer.retry(first, challenge_response(first), "SIP/2.0/UDP x;branch=z9hG4bK3")
    assert third is not None
    fourth = answerer.retry(third, challenge_response(third, stale=True, nonce="n2"),
                            "SIP/2.0/UDP x;branch=z9hG4bK4")
    assert fourth is not None and 'nonce="n2"' in (fourth.get("authorization") or "")
    assert len(fourth.get_all("authorization")) == 1
    assert answerer.retry(fourth, challenge_response(fourth, stale=True, nonce="n3"),
                          "v") is None


def test_preemptive_credentials_count_nc_up() -> None:
    answerer = ChallengeAnswerer(Credentials("100", "secret"))
    first = register()
    answerer.retry(first, challenge_response(first), "SIP/2.0/UDP x;branch=z9hG4bK2")
    again = answerer.preempt(register())
    assert "nc=00000002" in (again.get("authorization") or "")


def test_masking_hides_the_response_and_nothing_else() -> None:
    text = ('REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1\r\n'
            'Authorization: Digest username="100", realm="r", nonce="n", uri="sip:x", '
            'response="0123abcd", algorithm=MD5\r\n'
            'Proxy-Authorization: Digest username="100", response=abcdef, nonce="n"\r\n'
            'Subject: response="keep"\r\n\r\n')
    masked = mask_credentials(text)
    assert "0123abcd" not in masked and "abcdef" not in masked
    assert masked.count('response="***"') == 2
    assert 'Subject: response="keep"' in masked
    assert 'username="100"' in masked
    assert mask_credentials("INVITE sip:x SIP/2.0\r\n\r\n") == "INVITE sip:x SIP/2.0\r\n\r\n"


def test_password_not_in_repr() -> None:
    assert "secret" not in repr(Credentials("100", "secret"))
