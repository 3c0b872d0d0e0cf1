"""Hostile input, class by class: numbers that are not ASCII, hosts that are not literals.

Every number on the wire is ASCII ``[0-9]+`` (``str.isdigit`` also says yes to "²" and to
Arabic-Indic digits); anything else is 400, or 488 in an SDP offer. Every host twsip sends
to is an ASCII dotted quad in 127.0.0.0/8 that names one host: anything else would make the
C library resolve a name (a DNS query) or fail the send.
"""

from __future__ import annotations

from typing import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raw_phone import RawPhone, answer_to, finish, still_serving
from twsip.sip import sdp
from twsip.lexical import ipv4_literal, is_loopback, wire_number
from twsip.sip.message import SipParseError, parse
from twsip.sip.uri import loopback_address
from twsip.testing import FakeNetwork, LoggedFailures

# Characters for which str.isdigit() is true but which are not ASCII digits.
ODD_DIGITS = ["²", "¹", "٣", "۷", "५", "１", "𝟘"]


@pytest.fixture(autouse=True)
def no_logged_failures() -> Iterator[None]:
    """An exception caught and logged inside twsip is a bug even though nothing escaped."""
    with LoggedFailures() as failures:
        yield
    assert failures.events == [], failures.summary()


# -- the lexical rules --------------------------------------------------------------------

@pytest.mark.parametrize("digit", ODD_DIGITS)
def test_isdigit_lies_and_wire_number_does_not(digit: str) -> None:
    assert digit.isdigit() or digit.isdecimal() or digit.isnumeric()
    assert wire_number(digit) is None and wire_number(f"1{digit}") is None


@pytest.mark.parametrize("text, value", [("0", 0), ("5060", 5060), ("007", 7),
                                         ("", None), ("+5", None), ("-1", None), (" 5", None),
                                         ("5 ", None), ("1_000", None), ("9" * 13, None)])
def test_wire_number(text: str, value: int | None) -> None:
    assert wire_number(text) == value


@given(st.text(max_size=8))
@settings(max_examples=300, deadline=None)
def test_wire_number_is_ascii_digits_only(text: str) -> None:
    value = wire_number(text)
    if value is None:
        assert not (text.isascii() and text.isdigit() and len(text) <= 12)
    else:
        assert text.isascii() and text.isdigit() and value == int(text)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "127.1.2.3", "127.255.255.254",
                                  "127.0.0.255", "127.0.255.0"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", [
    "127.0.0.١", "127.0.0.²", "１２７.0.0.1", "127.0.0.1 ", "127.0.0.01", "0127.0.0.1",
    "127.0.0", "127.0.0.1.1", "127.0.0.256", "127.0.0.0", "127.255.255.255", "localhost",
    "128.0.0.1", "10.0.0.1", "::1", "[::1]", "127.0.0.1\x00", "", "127.0.0.1.",
])
def test_not_loopback_hosts(host: str) -> None:
    assert not is_loopback(host)


@given(st.text(alphabet=st.sampled_from("0123456789.١²٣ "), max_size=16))
@settings(max_examples=300, deadline=None)
def test_a_loopback_host_is_an_ascii_dotted_quad(host: str) -> None:
    if is_loopback(host):
        octets = ipv4_literal(host)
        assert host.isascii() and octets is not None and octets[0] == 127
        assert ".".join(map(str, octets)) == host  # no leading zeros, nothing else


@pytest.mark.parametrize("uri", ["sip:200@127.0.0.١:5062", "sip:200@127.255.255.255:5062",
                                 "sip:200@127.0.0.1:５０６２", "sip:200@127.0.0.1:5²",
                                 "sip:200@127.0.0.0", "sip:200@localhost:5062",
                                 "sip:200@x;maddr=127.0.0.١"])
def test_no_target_is_chosen_from_an_odd_host_or_port(uri: str) -> None:
    assert loopback_address(uri) is None


# -- numbers in messages: 400, never a traceback, never silence ----------------------------

def _options(host_port: str = "127.0.0.1:5999", cseq: str = "1", max_forwards: str = "70",
             length: str = "0") -> bytes:
    return (f"OPTIONS sip:200@127.0.0.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host_port};branch=z9hG4bKodd\r\n"
            f"Max-Forwards: {max_forwards}\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\n"
            f"To: <sip:200@127.0.0.1>\r\nCall-ID: odd@127.0.0.1\r\nCSeq: {cseq} OPTIONS\r\n"
            f"Content-Length: {length}\r\n\r\n").encode("utf-8")


@pytest.mark.parametrize("digit", ODD_DIGITS)
@pytest.mark.parametrize("field", ["via port", "cseq", "max-forwards", "content-length"])
def test_odd_digits_in_request_numbers_get_400(net: FakeNetwork, uas: object, phone: RawPhone,
                                               field: str, digit: str) -> None:
    kwargs = {"via port": {"host_port": f"127.0.0.1:50{digit}"}, "cseq": {"cseq": f"1{digit}"},
              "max-forwards": {"max_forwards": f"7{digit}"},
              "content-length": {"length": digit}}[field]
    assert answer_to(net, phone, _options(**kwargs)) == [400]
    still_serving(net, phone)
    finish(net)


@pytest.mark.parametrize("code", ["2٠٠", "²00", "20²", "１８０"])
def test_odd_digits_in_a_status_code_are_a_parse_error(code: str) -> None:
    data = (f"SIP/2.0 {code} OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
            f"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: c\r\n"
            f"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode("utf-8")
    with pytest.raises(SipParseError) as err:
        parse(data)
    assert err.value.status == 400


@pytest.mark.parametrize("code", ["2٠٠", "²00"])
def test_a_response_with_odd_digits_is_dropped(net: FakeNetwork, uas: object, phone: RawPhone,
                                               code: str) -> None:
    data = (f"SIP/2.0 {code} OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
            f"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: c\r\n"
            f"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode("utf-8")
    assert answer_to(net, phone, data) == []
    still_serving(net, phone)
    finish(net)


# -- numbers in SDP: 488, and the INVITE's transaction ends ---------------------------------

def _offer(m_line: str, rtpmap: str = "a=rtpmap:0 PCMU/8000") -> bytes:
    return ("v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"{m_line}\r\n{rtpmap}\r\n").encode("utf-8")


@pytest.mark.parametrize("m_line, rtpmap", [
    ("m=audio 4000 RTP/AVP ٠", "a=rtpmap:0 PCMU/8000"),
    ("m=audio 4000 RTP/AVP 0 ²", "a=rtpmap:0 PCMU/8000"),
    ("m=audio 4000 RTP/AVP 0", "a=rtpmap:٠ PCMU/8000"),
    ("m=audio 4000 RTP/AVP 0 128", "a=rtpmap:0 PCMU/8000"),
])
def test_odd_payload_types_are_an_sdp_error(m_line: str, rtpmap: str) -> None:
    with pytest.raises(sdp.SdpError):
        sdp.audio_payloads(_offer(m_line, rtpmap))


@pytest.mark.parametrize("m_line", ["m=audio 4000 RTP/AVP ٠", "m=audio 4000 RTP/AVP 0 ²"])
def test_an_invite_with_odd_payload_types_gets_488_and_leaves_no_transaction(
        net: FakeNetwork, uas: object, phone: RawPhone, m_line: str) -> None:
    invite = phone.request("INVITE", extra={"content-type": ["application/sdp"]},
                           body=_offer(m_line))
    assert answer_to(net, phone, invite.to_bytes()) == [488]
    ack = phone.follow_up("ACK", invite, phone.request("OPTIONS").response(488, to_tag="t"),
                          cseq=1, same_branch=True)
    phone.send(ack)
    net.advance(40)  # Timer I/H long past: nothing of this INVITE is left
    assert len(uas.transactions) == 0  # type: ignore[attr-defined]
    finish(net)


# -- lenient where it should not be ------------------------------------------------------------

@pytest.mark.parametrize("where", ["subject", "from", "call-id"])
def test_nul_bytes_in_header_values_get_400(net: FakeNetwork, uas: object, phone: RawPhone,
                                            where: str) -> None:
    data = _options()
    if where == "subject":
        data = data.replace(b"Content-Length", b"Subject: a\x00b\r\nContent-Length")
    elif where == "from":
        data = data.replace(b"tag=1", b"tag=1\x00")
    else:
        data = data.replace(b"odd@", b"o\x00dd@")
    assert answer_to(net, phone, data) == [400]
    still_serving(net, phone)
    finish(net)
