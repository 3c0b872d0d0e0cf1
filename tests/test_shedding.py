"""Stateless 503s while overloaded (twsip.sip.shedding): read from the datagram's bytes,
the same answer the stateful path gives, and everything unusual left to the full parser."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from twsip.sip.message import Response, SipParseError, parse
from twsip.sip.overload import OverloadSettings
from twsip.sip.shedding import read_new_invite
from twsip.sip.transaction import server_key
from twsip.testing import FakeNetwork

from raw_phone import RawPhone, finish
from test_overload import first_call, lag, lagging_uas

INVITE = (
    "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-4242-1-0\r\n"
    "From: sipp <sip:sipp@127.0.0.1:5070>;tag=4242SIPpTag001\r\n"
    "To: service <sip:service@127.0.0.1:5060>\r\n"
    "Call-ID: 1-4242@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: sip:sipp@127.0.0.1:5070\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 0\r\n"
    "\r\n"
)


def shed_answer(text: str) -> Response:
    invite = read_new_invite(text.encode())
    assert invite is not None
    response = parse(invite.response(b"shed1-1", 2))
    assert isinstance(response, Response)
    return response


def test_the_503_copies_what_8_2_6_says_and_tags_the_to() -> None:
    response = shed_answer(INVITE)
    request = parse(INVITE.encode())
    assert (response.status, response.reason) == (503, "Service Unavailable")
    assert response.headers["via"] == request.headers["via"]
    for name in ("from", "call-id", "cseq"):
        assert response.get(name) == request.get(name)
    assert response.get("to") == request.get("to") + ";tag=shed1-1"
    assert response.get("retry-after") == "2" and response.body == b""


def test_compact_names_and_several_vias_are_copied() -> None:
    text = (INVITE.replace("Via: ", "v: SIP/2.0/UDP 127.0.0.9:5080;branch=z9hG4bKup, ", 1)
            .replace("From:", "f:").replace("To:", "t:").replace("Call-ID:", "i:"))
    response = shed_answer(text)
    assert [v.host for v in response.vias] == ["127.0.0.9", "127.0.0.1"]
    assert response.to.tag == "shed1-1" and response.from_.tag == "4242SIPpTag001"


def test_faults_outside_the_copied_lines_do_not_matter() -> None:
    """The 503 copies five headers; while overloaded, what the rest says changes nothing."""
    text = INVITE.replace("Max-Forwards: 70", "Max-Forwards 70")  # no colon: 400 otherwise
    assert shed_answer(text).get("call-id") == "1-4242@127.0.0.1"


def test_anything_unusual_is_left_to_the_parser() -> None:
    unusual = [
        INVITE.replace("To: service <sip:service@127.0.0.1:5060>",
                       "To: service <sip:service@127.0.0.1:5060>;tag=x"),  # in a dialog
        INVITE.replace("To: service", 'To: "tag=" service'),  # might carry a tag
        INVITE.replace("CSeq: 1 INVITE", "CSeq: 1\r\n INVITE"),  # folded
        INVITE.replace("CSeq: 1 INVITE\r\n", "CSeq: 1 INVITE\n"),  # a bare LF
        INVITE.replace("Call-ID:", "From: x <sip:x@h>\r\nCall-ID:"),  # two From
        INVITE.replace("CSeq: 1 INVITE", "CSeq: 1 BYE"),  # CSeq method mismatch
        INVITE.replace("CSeq: 1 INVITE", "CSeq: one INVITE"),
        INVITE.replace(" SIP/2.0\r\n", " SIP/3.0\r\n", 1),
        INVITE.replace("Call-ID: 1-4242@127.0.0.1\r\n", ""),  # no Call-ID
        INVITE.replace("\r\n\r\n", "\r\n"),  # no blank line
        INVITE.replace("INVITE sip:", "OPTIONS sip:", 1).replace("1 INVITE", "1 OPTIONS"),
    ]
    for text in unusual:
        assert read_new_invite(text.encode()) is None, text


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(INVITE) - 1),
       st.binary(min_size=0, max_size=3))
def test_a_mangled_invite_is_refused_well_or_left_to_the_parser(at: int, junk: bytes) -> None:
    """Whatever the bytes, the shed answer (if any) is a 503 our parser reads, with the
    request's Call-ID; and it is never given where a full parse finds another dialog."""
    data = INVITE.encode()
    data = data[:at] + junk + data[at + 1:]
    invite = read_new_invite(data)
    if invite is None:
        return
    try:
        response = parse(invite.response(b"shed1-1", 2))
    except SipParseError as exc:  # garbage copied from garbage: the request was no better
        parse_error = exc
        try:
            parse(data)
        except SipParseError:
            return
        raise AssertionError(f"a readable request got an unreadable 503: {parse_error}")
    assert isinstance(response, Response) and response.status == 503
    try:
        request = parse(data)
    except SipParseError:
        return
    assert request.to.tag is None and response.call_id == request.call_id


def test_a_retransmission_of_a_call_being_answered_is_absorbed_not_refused() -> None:
    net = FakeNetwork()
    uas, phone = lagging_uas(net)
    invite = first_call(net, phone)
    lag(net, phone, 0.3, invite.to_bytes())
    assert [r.status for r in phone.received()] == []  # the Accepted transaction absorbs it
    assert uas.overload.shed == 0
    finish(net)


def test_an_observed_instance_refuses_statefully_so_every_message_is_seen() -> None:
    net = FakeNetwork()
    uas, phone = lagging_uas(net)
    seen = []
    uas.observers.append(lambda event: seen.append(event.summary))
    first_call(net, phone)
    invite = phone.request("INVITE")
    lag(net, phone, 0.3, invite.to_bytes())
    assert [r.status for r in phone.received()] == [503]
    assert uas.transactions.has_server(server_key(invite))  # the stateful path's
    assert seen[-2:] == ["INVITE", "503 Service Unavailable"]
    assert uas.shedder.count == 0 and uas.overload.shed == 1
    finish(net)


def test_nothing_is_shed_when_overload_control_is_off() -> None:
    net = FakeNetwork()
    uas = net.add_instance("200", overload=OverloadSettings(enabled=False))
    uas.start_serving(auto_answer=True)
    phone = RawPhone(net, uas)
    first_call(net, phone)
    lag(net, phone, 0.3, phone.request("INVITE").to_bytes())
    assert [r.status for r in phone.received()] == [100, 180, 200]
    finish(net)
