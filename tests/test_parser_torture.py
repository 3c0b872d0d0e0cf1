"""Parser torture beyond RFC 4475: line endings, start-line case, salvaging what an error
answer must copy, the size limits, and the corners of Via/CSeq/status parsing.

Each case is one the parser must get right for an instance to answer as RFC 3261 says:
a malformed request still carries enough (Via, From, To, Call-ID, CSeq) to be answered, a
malformed response never looks like a request, and limits end in 400/513 or a drop.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from twsip.sip.message import (
    MAX_COPIED_BYTES,
    MAX_HEADER_LINES,
    MAX_PARAMS,
    Request,
    Response,
    SipParseError,
    parse,
)
from twsip.testing import FakeNetwork, LoggedFailures


@pytest.fixture(autouse=True)
def no_logged_failures() -> Iterator[None]:
    """An exception caught inside twsip is a bug even though nothing escaped."""
    with LoggedFailures() as failures:
        yield
    assert failures.events == [], failures.summary()


OPTIONS = (
    b"OPTIONS sip:100@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKtorture\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:t@127.0.0.1>;tag=t1\r\n"
    b"To: <sip:100@127.0.0.1>\r\n"
    b"Call-ID: torture@127.0.0.1\r\n"
    b"CSeq: 7 OPTIONS\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def error_of(data: bytes) -> SipParseError:
    with pytest.raises(SipParseError) as info:
        parse(data)
    return info.value


# -- line endings and framing -----------------------------------------------------------------

def test_bare_lf_line_endings() -> None:
    msg = parse(OPTIONS.replace(b"\r\n", b"\n"))
    assert msg.call_id == "torture@127.0.0.1" and msg.body == b""


def test_bare_cr_line_endings() -> None:
    msg = parse(OPTIONS.replace(b"\r\n", b"\r").replace(b"\r\r", b"\r\n\r\n"))
    assert msg.call_id == "torture@127.0.0.1"


def test_keepalive_crlfs_before_the_message() -> None:
    assert parse(b"\r\n\r\n\r\n" + OPTIONS).cseq.number == 7


def test_no_blank_line_means_no_body() -> None:
    msg = parse(OPTIONS.rstrip(b"\r\n").replace(b"Content-Length: 0", b"X-Last: yes"))
    assert msg.get("x-last") == "yes" and msg.body == b""


def test_bytes_after_content_length_are_ignored() -> None:
    msg = parse(OPTIONS + b"INVITE sip:x SIP/2.0\r\n\r\n")
    assert msg.method == "OPTIONS" and msg.body == b""


def test_body_keeps_crlf_and_nul_bytes() -> None:
    body = b"\r\n\r\n\x00\xff\r\n"
    data = OPTIONS.replace(b"Content-Length: 0", b"Content-Length: %d" % len(body)) + body
    assert parse(data).body == body


@pytest.mark.parametrize("fold", [b"\r\n ", b"\r\n\t", b"\r\n   \t ", b"\r\n \r\n "])
def test_folding_anywhere_in_a_value(fold: bytes) -> None:
    data = OPTIONS.replace(b"From: <sip:t@127.0.0.1>;tag=t1",
                           b"From:" + fold + b"<sip:t@127.0.0.1>" + fold + b";tag=t1")
    msg = parse(data)
    assert msg.from_.uri == "sip:t@127.0.0.1" and msg.from_.tag == "t1"


def test_whitespace_before_the_colon_and_in_via() -> None:
    data = OPTIONS.replace(b"Via: SIP/2.0/UDP 127.0.0.1:5999",
                           b"Via \t :  SIP \t/ 2.0 /\tUDP   127.0.0.1:5999  ")
    via = parse(data).top_via
    assert (via.transport, via.host, via.port, via.branch) == (
        "UDP", "127.0.0.1", 5999, "z9hG4bKtorture")


# -- the start line -----------------------------------------------------------------------------

def test_lower_case_version_in_a_request_is_accepted() -> None:
    assert parse(OPTIONS.replace(b"SIP/2.0\r\n", b"sip/2.0\r\n", 1)).method == "OPTIONS"


def test_lower_case_version_makes_a_response() -> None:
    data = b"sip/2.0 200 OK\r\n" + OPTIONS.split(b"\r\n", 1)[1]
    msg = parse(data)
    assert isinstance(msg, Response) and msg.status == 200


@pytest.mark.parametrize("line", [b"sip/2.0 2000 Big", b"SIP/2.0 99 Small", b"Sip/2.0 20x OK",
                                  b"SIP/2.0", b"SIP/3.0 200 OK"])
def test_a_malformed_response_never_turns_into_a_request(line: bytes) -> None:
    error = error_of(line + b"\r\n" + OPTIONS.split(b"\r\n", 1)[1])
    assert not isinstance(error.message, Request)


@pytest.mark.parametrize(("line", "status"), [
    (b"OPTIONS sip:100@127.0.0.1 SIP/3.0", 505),
    (b"OPTIONS sip:100@127.0.0.1 SIP/2.0 extra", 400),
    (b"OPTIONS <sip:100@127.0.0.1> SIP/2.0", 400),
    (b"OPTIONS 100 SIP/2.0", 400),
    (b"OPTIONS sip:100@127.0.0.1 HTTP/1.1", 400),
])
def test_a_bad_request_line_still_carries_the_headers_to_answer_with(line: bytes,
                                                                     status: int) -> None:
    error = error_of(line + b"\r\n" + OPTIONS.split(b"\r\n", 1)[1])
    assert error.status == status
    assert isinstance(error.message, Request) and error.message.method == "OPTIONS"
    answer = error.message.response(status)
    assert answer.get("via") and answer.get("call-id") and answer.get("cseq")


@pytest.mark.parametrize("line", [b"GET / HTTP/1.1", b"\x16\x03\x01\x02\x00", b"<xml/>",
                                  b"{\"json\": 1}"])
def test_other_protocols_are_malformed(line: bytes) -> None:
    error = error_of(line + b"\r\nHost: example.com\r\n\r\n")
    assert error.status == 400
    message = error.message
    # Even where the first word is a token, there is no Via to answer to.
    assert message is None or "via" not in message.headers


def test_methods_are_case_sensitive() -> None:
    error = error_of(OPTIONS.replace(b"CSeq: 7 OPTIONS", b"CSeq: 7 options"))
    assert error.status == 400 and "CSeq" in error.reason


# -- an error answer can copy every header it needs ----------------------------------------

@pytest.mark.parametrize("duplicate", [b"From: <sip:x@127.0.0.1>;tag=2\r\n",
                                       b"CSeq: 8 OPTIONS\r\n",
                                       b"Call-ID: another\r\n",
                                       b"Content-Length: 0\r\n"])
def test_a_duplicated_single_header_keeps_every_other_header(duplicate: bytes) -> None:
    data = OPTIONS.replace(b"Via:", duplicate + b"Via:")
    error = error_of(data)
    assert error.status == 400 and "more than one" in error.reason
    headers = error.message.headers
    for name in ("via", "from", "to", "call-id", "cseq"):
        assert len(headers[name]) == 1, name
    assert error.message.call_id in ("torture@127.0.0.1", "another")


def test_a_line_without_colon_keeps_the_headers_after_it() -> None:
    error = error_of(OPTIONS.replace(b"Max-Forwards: 70\r\n", b"no colon here\r\n"))
    assert error.status == 400 and "colon" in error.reason
    assert error.message.get("call-id") == "torture@127.0.0.1"
    assert error.message.get("cseq") == "7 OPTIONS"


# -- limits ---------------------------------------------------------------------------------

def test_too_many_header_lines_is_513_with_an_answerable_request() -> None:
    extra = b"".join(b"X-H%d: v\r\n" % i for i in range(MAX_HEADER_LINES))
    error = error_of(OPTIONS.replace(b"Max-Forwards", extra + b"Max-Forwards"))
    assert error.status == 513
    assert isinstance(error.message, Request) and error.message.get("via")


def test_header_lines_at_the_limit_parse() -> None:
    n = MAX_HEADER_LINES - OPTIONS.count(b"\r\n") + 2
    extra = b"".join(b"X-H%d: v\r\n" % i for i in range(n))
    assert len(parse(OPTIONS.replace(b"Max-Forwards", extra + b"Max-Forwards")).headers) > n


def test_copied_headers_too_large_to_answer_are_dropped() -> None:
    huge = b"<sip:t@127.0.0.1>;tag=t1;x=" + b"y" * MAX_COPIED_BYTES
    error = error_of(OPTIONS.replace(b"<sip:t@127.0.0.1>;tag=t1", huge))
    assert error.status == 513 and error.message is None


def test_large_headers_that_are_not_copied_are_fine() -> None:
    big = b"X-Big: " + b"z" * (MAX_COPIED_BYTES * 1) + b"\r\n"
    assert len(parse(OPTIONS.replace(b"Max-Forwards", big + b"Max-Forwards")).get("x-big")) \
        == MAX_COPIED_BYTES


def test_parameter_count_limit() -> None:
    ok = "".join(f";p{i}" for i in range(MAX_PARAMS - 1))
    assert len(parse(OPTIONS.replace(b";tag=t1", b";tag=t1" + ok.encode())).from_.params) \
        == MAX_PARAMS
    too_many = ok + ";one;more"
    error = error_of(OPTIONS.replace(b";tag=t1", b";tag=t1" + too_many.encode()))
    assert error.status == 400 and "parameters" in error.reason


def test_datagram_beyond_65535_bytes() -> None:
    error = error_of(OPTIONS + b"x" * 65_536)
    assert error.status == 513 and error.message is None


# -- corners of Via, CSeq, Max-Forwards and status codes ----------------------------------------

@pytest.mark.parametrize(("via", "host", "port"), [
    (b"SIP/2.0/UDP [2001:db8::1]:5070", "[2001:db8::1]", 5070),
    (b"SIP/2.0/UDP [::1]", "[::1]", None),
    (b"SIP/2.0/udp 127.0.0.1:65535", "127.0.0.1", 65535),
    (b"SIP/2.0/SCTP example.com", "example.com", None),
])
def test_via_hosts(via: bytes, host: str, port: int | None) -> None:
    msg = parse(OPTIONS.replace(b"SIP/2.0/UDP 127.0.0.1:5999", via))
    assert (msg.top_via.host, msg.top_via.port) == (host, port)


@pytest.mark.parametrize("via", [b"SIP/2.0/UDP [::1", b"SIP/2.0/UDP 127.0.0.1:0",
                                 b"SIP/2.0/UDP 127.0.0.1:65536", b"SIP/2.0/UDP",
                                 b"SIP/2.0 127.0.0.1", b"SIP/1.0/UDP 127.0.0.1",
                                 b"SIP/2.0/UDP 127.0.0.1:50 60"])
def test_malformed_vias(via: bytes) -> None:
    assert error_of(OPTIONS.replace(b"SIP/2.0/UDP 127.0.0.1:5999", via)).status == 400


def test_empty_branch_is_malformed() -> None:
    assert error_of(OPTIONS.replace(b";branch=z9hG4bKtorture", b";branch=")).status == 400


@pytest.mark.parametrize(("cseq", "ok"), [(b"0", True), (b"2147483647", True),
                                          (b"2147483648", False), (b"-1", False),
                                          (b"1.0", False), (b"", False)])
def test_cseq_numbers(cseq: bytes, ok: bool) -> None:
    data = OPTIONS.replace(b"CSeq: 7", b"CSeq: " + cseq)
    if ok:
        assert parse(data).cseq.number == int(cseq)
    else:
        assert error_of(data).status == 400


@pytest.mark.parametrize(("value", "ok"), [(b"0", True), (b"255", True), (b"0068", True),
                                           (b"256", False), (b"-1", False), (b"", False)])
def test_max_forwards(value: bytes, ok: bool) -> None:
    data = OPTIONS.replace(b"Max-Forwards: 70", b"Max-Forwards: " + value)
    if ok:
        assert parse(data).max_forwards == int(value)
    else:
        assert error_of(data).status == 400


@pytest.mark.parametrize(("code", "ok"), [(b"100", True), (b"699", True), (b"700", False),
                                          (b"099", False), (b"2000", False), (b"20", False)])
def test_status_codes(code: bytes, ok: bool) -> None:
    data = b"SIP/2.0 " + code + b" Whatever\r\n" + OPTIONS.split(b"\r\n", 1)[1]
    if ok:
        assert parse(data).status == int(code)
    else:
        error_of(data)


def test_invalid_utf8_reason_phrase_round_trips() -> None:
    data = b"SIP/2.0 200 \xff\xfe ok\r\n" + OPTIONS.split(b"\r\n", 1)[1]
    msg = parse(data)
    assert parse(msg.to_bytes()).reason == msg.reason
    assert b"\xff\xfe ok" in msg.to_bytes()


def test_quoted_commas_in_contact_lists() -> None:
    data = OPTIONS.replace(
        b"Max-Forwards", b'Contact: "a, b" <sip:a@127.0.0.1>, <sip:c@127.0.0.1;x="1,2">,'
        b' sip:d@127.0.0.1\r\nMax-Forwards')
    assert [c.uri for c in parse(data).contact] == [
        "sip:a@127.0.0.1", 'sip:c@127.0.0.1;x="1,2"', "sip:d@127.0.0.1"]


# -- what the instance does with them -------------------------------------------------------------

@pytest.mark.parametrize("data", [
    b"sip/2.0 200 OK\r\n" + OPTIONS.split(b"\r\n", 1)[1],
    b"sip/2.0 2000 Big\r\n" + OPTIONS.split(b"\r\n", 1)[1],
    b"hello world\r\n\r\n",
    b"INVITE INVITE INVITE\r\n\r\n",
    OPTIONS.replace(b"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKtorture\r\n", b""),
])
def test_the_instance_sends_nothing_where_no_answer_can_be_matched(data: bytes) -> None:
    network = FakeNetwork()
    instance = network.add_instance("100")
    instance.datagramReceived(data, ("127.0.0.1", 5999))
    network.pump()
    assert network.log == []
    network.run(network.cleanup())
    assert network.clock.getDelayedCalls() == []


def test_the_instance_answers_a_duplicate_header_with_all_headers_copied() -> None:
    network = FakeNetwork()
    instance = network.add_instance("100")
    caller = network.endpoint(port=5999)
    caller.send(OPTIONS.replace(b"Via:", b"CSeq: 8 OPTIONS\r\nVia:"), instance.address)
    network.pump()
    [(data, _)] = caller.take()
    answer = parse(data)
    assert answer.status == 400
    assert answer.call_id == "torture@127.0.0.1" and answer.from_.tag == "t1"
    assert answer.to.tag, "a final answer carries a To tag (§8.2.6.2)"
    assert answer.top_via.branch == "z9hG4bKtorture"
    network.run(network.cleanup())


def test_reasons_stay_short_whatever_they_quote() -> None:
    huge = b'To: "' + b"\\" * 30_001 + b'" <sip:100@127.0.0.1>'
    error = error_of(OPTIONS.replace(b"To: <sip:100@127.0.0.1>", huge))
    assert error.status == 400 and len(error.reason) <= 200
