"""The wire format: round trips, compact forms, folding, list headers, malformed input."""

from __future__ import annotations

import pytest

from twsip.sip.message import Request, Response, SipParseError, parse, parse_name_addr

INVITE = (
    b"INVITE sip:200@127.0.0.1:5062 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice \\"A\\"" <sip:100@127.0.0.1:5060>;tag=1928301774\r\n'
    b"To: <sip:200@127.0.0.1:5062>\r\n"
    b"Call-ID: a84b4c76e66710@127.0.0.1\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:100@127.0.0.1:5060>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def test_request_fields() -> None:
    msg = parse(INVITE)
    assert isinstance(msg, Request)
    assert (msg.method, msg.uri) == ("INVITE", "sip:200@127.0.0.1:5062")
    via = msg.top_via
    assert (via.transport, via.host, via.port, via.branch) == (
        "UDP", "127.0.0.1", 5060, "z9hG4bK776asdhds")
    assert "rport" in via.params and via.rport is None
    assert msg.from_.display == 'Alice "A"' and msg.from_.tag == "1928301774"
    assert msg.to.tag is None and msg.to.uri == "sip:200@127.0.0.1:5062"
    assert msg.call_id == "a84b4c76e66710@127.0.0.1"
    assert (msg.cseq.number, msg.cseq.method) == (314159, "INVITE")
    assert msg.max_forwards == 70
    assert msg.contact[0].uri == "sip:100@127.0.0.1:5060"
    assert msg.content_type == "application/sdp"
    assert msg.body == b"v=0\n"


def test_round_trip_keeps_every_field() -> None:
    msg = parse(INVITE)
    again = parse(msg.to_bytes())
    assert again.headers == msg.headers | {"content-length": ["4"]}
    assert again.body == msg.body
    assert again.to_bytes() == msg.to_bytes()


def test_response_round_trip() -> None:
    resp = parse(INVITE).response(180, to_tag="xyz")
    again = parse(resp.to_bytes())
    assert isinstance(again, Response)
    assert (again.status, again.reason) == (180, "Ringing")
    assert again.to.tag == "xyz" and again.from_.tag == "1928301774"
    assert again.top_via.branch == "z9hG4bK776asdhds"


def test_compact_forms_and_case_insensitive_names() -> None:
    data = (b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\n"
            b"v: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\r\n"
            b"f: <sip:b@127.0.0.1>;tag=1\r\nt: <sip:a@127.0.0.1>\r\ni: cid\r\n"
            b"CSEQ: 1 OPTIONS\r\nm: <sip:b@127.0.0.1>\r\nk: timer\r\nc: text/plain\r\n"
            b"s: hello\r\ne: identity\r\no: dialog\r\nr: <sip:c@127.0.0.1>\r\nu: talk\r\n"
            b"x: 90\r\nl: 0\r\n\r\n")
    msg = parse(data)
    for name in ("call-id", "from", "to", "via", "contact", "supported", "content-type",
                 "subject", "content-encoding", "event", "refer-to", "allow-events",
                 "session-expires", "content-length"):
        assert name in msg, name
    assert msg.get("Call-ID") == msg.get("i") == "cid"
    assert b"Call-ID: cid\r\n" in msg.to_bytes()


def test_folded_lines_are_unfolded() -> None:
    data = INVITE.replace(b"Max-Forwards: 70\r\n", b"Subject: one\r\n  two\r\n\tthree\r\n")
    assert parse(data).get("subject") == "one two three"


def test_list_headers_split_outside_quotes_and_brackets() -> None:
    data = INVITE.replace(
        b"Max-Forwards: 70\r\n",
        b'Via: SIP/2.0/UDP 127.0.0.2;branch=z9hG4bKb, SIP/2.0/UDP 127.0.0.3;branch=z9hG4bKc\r\n'
        b'Route: <sip:p1@127.0.0.1;lr>, "a, b" <sip:p2@127.0.0.1;lr>\r\n'
        b"Supported: timer, 100rel\r\nDate: Sat, 13 Nov 2010 23:29:00 GMT\r\n")
    msg = parse(data)
    assert [v.branch for v in msg.vias] == [
        "z9hG4bK776asdhds", "z9hG4bKb", "z9hG4bKc"]
    assert msg.get_all("route") == ["<sip:p1@127.0.0.1;lr>", '"a, b" <sip:p2@127.0.0.1;lr>']
    assert msg.get_all("supported") == ["timer", "100rel"]
    assert msg.get("date") == "Sat, 13 Nov 2010 23:29:00 GMT"


def test_content_length_governs_the_body() -> None:
    msg = parse(INVITE + b"garbage after the body")
    assert msg.body == b"v=0\n"
    no_length = INVITE.replace(b"Content-Length: 4\r\n", b"")
    assert parse(no_length + b"more").body == b"v=0\nmore"  # UDP: the rest of the datagram


def test_name_addr_forms() -> None:
    a = parse_name_addr("sip:bob@127.0.0.1;tag=9")
    assert a.uri == "sip:bob@127.0.0.1" and a.tag == "9" and a.display is None
    b = parse_name_addr("Bob <sip:bob@127.0.0.1;transport=udp>;tag=8")
    assert b.display == "Bob" and b.uri == "sip:bob@127.0.0.1;transport=udp" and b.tag == "8"


@pytest.mark.parametrize("data,status,words", [
    (INVITE.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), 505, "version"),
    (INVITE.replace(b"INVITE sip:200@127.0.0.1:5062", b"INVITE  sip:a b"), 400, "request line"),
    (INVITE.replace(b"Call-ID: a84b4c76e66710@127.0.0.1\r\n", b""), 400, "Call-ID"),
    (INVITE.replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE"), 400, "CSeq"),
    (INVITE.replace(b"CSeq: 314159", b"CSeq: 99999999999"), 400, "CSeq"),
    (INVITE.replace(b"Content-Length: 4", b"Content-Length: 40"), 400, "Content-Length"),
    (INVITE.replace(b"Content-Length: 4", b"Content-Length: -4"), 400, "Content-Length"),
    (INVITE.replace(b"Max-Forwards: 70", b"Max-Forwards: 300"), 400, "Max-Forwards"),
    (INVITE.replace(b"To: <sip:200@127.0.0.1:5062>", b'To: "unterminated <sip:a@b>'), 400,
     "quoted"),
    (INVITE.replace(b"Via: SIP/2.0/UDP 127.0.0.1:5060", b"Via: SIP/2.0/UDP 127.0.0.1:99999"),
     400, "port"),
    (INVITE.replace(b"\r\nTo:", b"\r\nTo: <sip:x@127.0.0.1>\r\nTo:"), 400, "more than one To"),
])
def test_malformed_requests_carry_the_status_owed(data: bytes, status: int,
                                                  words: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse(data)
    assert info.value.status == status
    assert words.lower() in info.value.reason.lower()
    assert isinstance(info.value.message, Request)  # enough to build the answer


@pytest.mark.parametrize("data", [
    b"", b"\r\n\r\n", b"garbage", b"SIP/2.0 99 Too Low\r\n\r\n",
    b"SIP/2.0 2000 Big\r\n\r\n", b"\xff\xfe\x00",
])
def test_garbage_raises_the_one_error_type(data: bytes) -> None:
    with pytest.raises(SipParseError):
        parse(data)


def test_header_values_are_bytes_transparent() -> None:
    data = INVITE.replace(b"Max-Forwards: 70\r\n", b"X-Raw: \xff\xfe ok\r\nMax-Forwards: 70\r\n")
    assert b"X-Raw: \xff\xfe ok\r\n" in parse(data).to_bytes()
