"""Fuzzing the parser and an instance's datagramReceived with hypothesis.

Profiles: "ci" (the default here: 200 examples per test, derandomized so CI runs repeat) and
"long" (20 000 examples, random), chosen with HYPOTHESIS_PROFILE=long. The profile is applied
to this file's tests only, so other files keep their own settings. Run with
``--hypothesis-show-statistics`` to see the example counts, or ``-s`` to see this file's own
tally (printed at the end of the module).
"""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twsip.sip.message import (
    Message,
    Request,
    Response,
    SipParseError,
    parse,
)
from twsip.testing import FakeNetwork, LoggedFailures

settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=20_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if PROFILE not in ("ci", "long"):
    PROFILE = "ci"
fuzz = settings(settings.get_profile(PROFILE))

RFC4475 = Path(__file__).resolve().parent / "data" / "rfc4475"
EXAMPLES: collections.Counter[str] = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def report_example_counts() -> Iterator[None]:
    yield
    total = sum(EXAMPLES.values())
    lines = [f"  {name}: {count}" for name, count in sorted(EXAMPLES.items())]
    print(f"\nfuzz examples run (profile {PROFILE}): {total}\n" + "\n".join(lines))


# -- building blocks ---------------------------------------------------------------------------

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
token = st.text(TOKEN_CHARS, min_size=1, max_size=12)
word = st.text(TOKEN_CHARS + "()<>:\\\"/[]?{}", min_size=1, max_size=16)
call_ids = st.sampled_from(["a", "abc@127.0.0.1", "x@[::1]", "w%ZK-!.*_+'@word`~)(><:\\/\"][?}{",
                            "same"])
hosts = st.sampled_from([
    "127.0.0.1", "127.0.0.2", "127.9.8.7", "192.0.2.1", "198.51.100.7", "10.0.0.1",
    "255.255.255.255", "0.0.0.0", "example.com", "localhost", "[::1]", "[2001:db8::1]",
    "host-of-the-hour.example.net", "127.0.0.1.example.com",
])
ports = st.one_of(st.none(), st.integers(1, 65535))
uri_params = st.lists(st.sampled_from([
    ";lr", ";transport=udp", ";transport=tcp", ";maddr=192.0.2.9", ";maddr=127.0.0.3",
    ";user=phone", ";ttl=1", ";x=y", ";ob",
]), max_size=3).map("".join)
DISPLAY_CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n")
# Drawing from fixed pools is much cheaper than generating text, which keeps the CI profile
# within seconds; the round-trip test below generates free text where it matters.
tokens = st.sampled_from(["a", "x9", "caller", "z9hG4bK", "tag-1.2", "!%*_+`'~", "UPPER",
                          "0", "very" * 20])
displays = st.sampled_from([None, "", "Alice", 'J Rosenberg \\"', "BEL:\x07 NUL:\x00",
                            "ünïcødé", '"quoted"', "a, b", "<sip:x@192.0.2.1>", " ", ";tag=1"])


def _uri(parts: tuple) -> str:
    scheme, user, host, port, params = parts
    return f"{scheme}:{user + '@' if user else ''}{host}{':' + str(port) if port else ''}{params}"


sip_uris = st.tuples(st.sampled_from(["sip", "sips", "sip", "tel", "http", "urn"]),
                     st.one_of(st.none(), tokens), hosts, ports, uri_params).map(_uri)


def _via(parts: tuple) -> str:
    transport, host, port, branch, params = parts
    branch = f";branch=z9hG4bK{branch}" if branch is not None else ""
    return f"SIP/2.0/{transport} {host}{':' + str(port) if port else ''}{branch}{''.join(params)}"


vias = st.tuples(
    st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS", "udp"]), hosts, ports,
    st.one_of(st.none(), tokens),
    st.lists(st.sampled_from([";rport", ";rport=5062", ";received=192.0.2.44",
                              ";received=127.0.0.9", ";maddr=192.0.2.1", ";ttl=3", ";x"]),
             max_size=3),
).map(_via)


def quote(text: str) -> str:
    """A quoted-string: a NUL may only appear as a quoted-pair (RFC 3261 §25.1)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\x00", "\\\x00") + '"'


def _name_addr(parts: tuple) -> str:
    uri, display, tag, bare = parts
    params = f";tag={tag}" if tag is not None else ""
    if display is None and bare and "?" not in uri and ";" not in uri:
        return f"{uri}{params}"
    return f"{quote(display) + ' ' if display is not None else ''}<{uri}>{params}"


def name_addrs(tag: bool | None = None) -> st.SearchStrategy[str]:
    tags = tokens if tag else st.none() if tag is False else st.one_of(st.none(), tokens)
    return st.tuples(sip_uris, displays, tags, st.booleans()).map(_name_addr)


tagged, untagged, maybe_tagged = name_addrs(True), name_addrs(False), name_addrs()

METHODS = ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "UPDATE",
           "PRACK", "MESSAGE", "FOO"]
BODIES = [
    (b"", None),
    (b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
     b"m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n",
     "application/sdp"),
    (b"v=0\r\nm=video 4000 RTP/AVP 31\r\n", "application/sdp"),
    (b"\x00\xff binary", "application/sdp"),
    (b"hello", "text/plain"),
]


def _request(parts: tuple) -> bytes:
    (method, uri, via_list, frm, to, call_id, cseq_method, number, max_forwards, contacts,
     record_routes, route, require, (body, ctype), length_error, with_length) = parts
    lines = [f"{method} {uri} SIP/2.0"]
    lines += [f"Via: {via}" for via in via_list]
    lines += [f"From: {frm}", f"To: {to}", f"Call-ID: {call_id}",
              f"CSeq: {number} {cseq_method or method}"]
    if max_forwards is not None:
        lines.append(f"Max-Forwards: {max_forwards}")
    lines += [f"Contact: {contact}" for contact in contacts]
    lines += [f"Record-Route: <{rr}>" for rr in record_routes]
    if route is not None:
        lines.append(f"Route: <{route}>")
    if require is not None:
        lines.append(f"Require: {require}")
    if ctype is not None:
        lines.append(f"Content-Type: {ctype}")
    if with_length:
        lines.append(f"Content-Length: {max(len(body) + length_error, 0)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogatepass") + body


def requests(method: str | None = None) -> st.SearchStrategy[bytes]:
    """Requests that may be hostile in every header a stack might follow."""
    return st.tuples(
        st.just(method) if method else st.sampled_from(METHODS), sip_uris,
        st.lists(vias, min_size=1, max_size=3), tagged, maybe_tagged, call_ids,
        st.one_of(st.none(), st.none(), st.none(), st.sampled_from(METHODS)),
        st.sampled_from([0, 1, 7, 2**31 - 1, 2**31, 2**32]),
        st.sampled_from([None, 0, 1, 70, 255, 256, "x"]),
        st.lists(untagged, max_size=2), st.lists(sip_uris, max_size=2),
        st.one_of(st.none(), sip_uris), st.one_of(st.none(), st.none(), tokens),
        st.sampled_from(BODIES), st.sampled_from([0, 0, 0, -1, 1, 1000]),
        st.sampled_from([True, True, True, False]),
    ).map(_request)


def _response(parts: tuple) -> bytes:
    status, version, reason, via_list, frm, to, call_id, number, method, contacts = parts
    lines = [f"{version} {status} {reason}"]
    lines += [f"Via: {v}" for v in via_list]
    lines += [f"From: {frm}", f"To: {to}", f"Call-ID: {call_id}", f"CSeq: {number} {method}"]
    lines += [f"Contact: {contact}" for contact in contacts]
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode("utf-8", "surrogatepass")


responses = st.tuples(
    st.sampled_from([100, 180, 183, 200, 202, 302, 400, 404, 481, 487, 500, 603, 99, 700, 2000]),
    st.sampled_from(["SIP/2.0", "sip/2.0", "SIP/3.0"]),
    st.sampled_from(["OK", "", "Ringing", "ünï"]), st.lists(vias, min_size=1, max_size=2),
    tagged, maybe_tagged, call_ids, st.integers(0, 99), st.sampled_from(METHODS),
    st.lists(untagged, max_size=1),
).map(_response)
any_request = requests()
invites = requests("INVITE")


NOISE = [b"\r\n", b"\n", b"\r", b":", b";", b",", b'"', b"\\", b"<", b">", b" ", b"\t",
         b"\r\n ", b"=", b"@", b"%", b"\x00", b"\xff", b"\xc3", b"SIP/2.0", b"Via:",
         b"v: SIP/2.0/UDP 192.0.2.1", b"l: 99999999999999999999", b"CSeq: 1 ACK",
         b"To: <sip:a@b>;tag=x", b"\r\n\r\n", b"Content-Length: 5\r\n"]


@st.composite
def mutated(draw: st.DrawFn, seeds: st.SearchStrategy[bytes]) -> bytes:
    """A valid message with a few byte-level edits: flips, cuts, inserts, duplications."""
    data = bytearray(draw(seeds))
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        op = draw(st.sampled_from(["flip", "delete", "insert", "noise", "dup", "truncate"]))
        pos = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[pos] = draw(st.integers(0, 255))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 20))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "noise":
            data[pos:pos] = draw(st.sampled_from(NOISE))
        elif op == "dup":
            end = min(len(data), pos + draw(st.integers(1, 80)))
            data[pos:pos] = data[pos:end]
        else:
            del data[pos:]
    return bytes(data)


def _torture_seeds() -> list[bytes]:
    return [p.read_bytes() for p in sorted(RFC4475.glob("*.dat"))]


TORTURE = _torture_seeds()
valid_messages = st.one_of(any_request, responses, *(
    [st.sampled_from(TORTURE)] if TORTURE else []))


def parse_or_error(data: bytes) -> Message | None:
    try:
        message = parse(data)
    except SipParseError as exc:
        assert isinstance(exc.status, int) and 400 <= exc.status <= 699
        assert isinstance(exc.reason, str) and exc.reason
        assert exc.message is None or isinstance(exc.message, (Request, Response))
        return None
    assert isinstance(message, (Request, Response))
    return message


# -- 1. parse only ever returns a message or raises SipParseError ---------------------------

@fuzz
@given(st.binary(max_size=1500))
def test_parse_arbitrary_bytes(data: bytes) -> None:
    EXAMPLES["parse arbitrary bytes"] += 1
    parse_or_error(data)


@fuzz
@given(st.sampled_from([b"INVITE sip:a@b SIP/2.0\r\n", b"SIP/2.0 200 OK\r\n", b"sip/2.0 1 x\r\n"]),
       st.binary(max_size=600))
def test_parse_sip_prefixed_garbage(start: bytes, rest: bytes) -> None:
    EXAMPLES["parse sip-prefixed garbage"] += 1
    parse_or_error(start + rest)


@fuzz
@given(mutated(valid_messages))
def test_parse_mutated_messages(data: bytes) -> None:
    EXAMPLES["parse mutated messages"] += 1
    message = parse_or_error(data)
    if message is not None:
        # Whatever was accepted can be written out and read back.
        again = parse(message.to_bytes())
        assert type(again) is type(message)
        assert headers_of(again) == headers_of(message) and again.body == message.body


# -- 2. serialize(parse(x)) parses back to the same fields ----------------------------------

def header_names(known: str) -> st.SearchStrategy[str]:
    """Ways to spell a header's name on the wire: case, compact form, spaces before ':'."""
    compact = {"via": "v", "from": "f", "to": "t", "call-id": "i", "cseq": None,
               "contact": "m", "content-type": "c", "content-length": "l"}[known]
    spellings = [known, known.upper(), known.title()] + ([compact, compact.upper()] if compact
                                                          else [])
    return st.tuples(st.sampled_from(spellings), st.sampled_from(["", " ", "\t"])).map(
        lambda p: p[0] + p[1])


def unknown_header_name() -> st.SearchStrategy[str]:
    return token.map(lambda t: "X-" + t)


header_value = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                                     blacklist_characters=","), min_size=1, max_size=20)


@st.composite
def valid_requests(draw: st.DrawFn) -> tuple[bytes, dict]:
    method = draw(st.sampled_from(["INVITE", "OPTIONS", "BYE", "REGISTER", "FOO-bar.1"]))
    uri = f"sip:{draw(token)}@{draw(st.sampled_from(['127.0.0.1', 'example.com']))}"
    via_values = [f"SIP/2.0/UDP 127.0.0.1:{draw(st.integers(1, 65535))};branch=z9hG4bK"
                  f"{draw(token)}" for _ in range(draw(st.integers(1, 3)))]
    display = draw(st.one_of(st.none(), st.text(DISPLAY_CHARS, max_size=8)))
    from_tag, to_tag = draw(token), draw(st.one_of(st.none(), token))
    call_id = draw(word)
    number = draw(st.integers(0, 2**31 - 1))
    extra = draw(st.dictionaries(unknown_header_name().map(str.lower), header_value,
                                 max_size=4))
    body = draw(st.binary(max_size=64))
    fold = draw(st.booleans())
    sep = draw(st.sampled_from([":", ": ", " : ", ":\t"]))

    def line(name_strategy: st.SearchStrategy[str], value: str) -> str:
        name = draw(name_strategy)
        if fold and " " in value:
            head, _, tail = value.partition(" ")
            value = f"{head}\r\n {tail}"
        return f"{name}{sep}{value}"

    lines = [f"{method} {uri} SIP/2.0"]
    if draw(st.booleans()):
        lines.append(line(header_names("via"), ", ".join(via_values)))
    else:
        lines += [line(header_names("via"), v) for v in via_values]
    from_value = (f"{quote(display) + ' ' if display is not None else ''}"
                  f"<sip:caller@127.0.0.1>;tag={from_tag}")
    lines.append(line(header_names("from"), from_value))
    lines.append(line(header_names("to"), f"<{uri}>" + (f";tag={to_tag}" if to_tag else "")))
    lines.append(line(header_names("call-id"), call_id))
    lines.append(line(header_names("cseq"), f"{number} {method}"))
    lines += [line(st.just(name), value) for name, value in extra.items()]
    if body:
        lines.append(line(header_names("content-type"), "application/octet-stream"))
    lines.append(line(header_names("content-length"), str(len(body))))
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogatepass") + body
    fields = dict(method=method, uri=uri, vias=via_values, display=display, from_tag=from_tag,
                  to_tag=to_tag, call_id=call_id, cseq=number, extra=extra, body=body)
    return data, fields


def headers_of(message: Message) -> dict[str, list[str]]:
    """Headers, less Content-Length: serializing always writes the true one."""
    return {k: v for k, v in message.headers.items() if k != "content-length"}


def fields_of(message: Message) -> tuple:
    start = (message.method, message.uri) if isinstance(message, Request) else (
        message.status, message.reason)
    return (
        start, headers_of(message), message.body,
        [(v.transport, v.host, v.port, v.params) for v in message.vias],
        (message.from_.display, message.from_.uri, message.from_.params),
        (message.to.display, message.to.uri, message.to.params),
        message.call_id, (message.cseq.number, message.cseq.method),
    )


@fuzz
@given(valid_requests())
def test_serialize_parse_round_trip(case: tuple[bytes, dict]) -> None:
    EXAMPLES["round trip"] += 1
    data, want = case
    first = parse(data)
    assert isinstance(first, Request)
    assert (first.method, first.uri) == (want["method"], want["uri"])
    assert [str(v) for v in first.vias] == want["vias"] or \
        [v.branch for v in first.vias] == [v.rpartition("branch=")[2] for v in want["vias"]]
    assert first.from_.display == want["display"]
    assert (first.from_.tag, first.to.tag) == (want["from_tag"], want["to_tag"])
    assert first.call_id == want["call_id"]
    assert (first.cseq.number, first.cseq.method) == (want["cseq"], want["method"])
    for name, value in want["extra"].items():
        assert first.get_all(name) == [value]
    assert first.body == want["body"]
    second = parse(first.to_bytes())
    assert fields_of(second) == fields_of(first)
    assert second.to_bytes() == first.to_bytes()


@pytest.mark.parametrize("data", TORTURE or [b""], ids=range(len(TORTURE) or 1))
def test_torture_messages_round_trip(data: bytes) -> None:
    try:
        first = parse(data)
    except SipParseError:
        return
    second = parse(first.to_bytes())
    assert fields_of(second) == fields_of(first)


# -- 3. datagramReceived: no escape, one answer, responses unanswered, loopback only ---------

def is_response_line(data: bytes) -> bool:
    first = data.lstrip(b"\r\n").split(b"\n", 1)[0]
    return first[:4].upper() == b"SIP/"


SOURCES = st.sampled_from([("127.0.0.1", 5999), ("127.0.0.1", 5999), ("127.4.5.6", 7000),
                           ("192.0.2.7", 5060)])


@st.composite
def exchanges(draw: st.DrawFn) -> list[tuple[bytes, float]]:
    """A few datagrams (requests, responses, mutants) with time passing between them."""
    one = st.one_of(any_request, invites, responses, mutated(valid_messages),
                    st.binary(max_size=300))
    steps = draw(st.lists(st.tuples(one, st.sampled_from([0.0, 0.0, 0.6, 5.0, 40.0])),
                          min_size=1, max_size=3))
    return steps


def lenient(data: bytes) -> Message | None:
    """Parse what an instance sent: an answer to a malformed request copies its faults."""
    try:
        return parse(data)
    except SipParseError as exc:
        return exc.message


def _final_answers(sent: list[bytes]) -> collections.Counter:
    finals: collections.Counter = collections.Counter()
    for data in sent:
        message = lenient(data)
        assert isinstance(message, Response), f"the instance sent a non-response: {data[:80]!r}"
        if message.status >= 200:
            branch = message.headers.get("via", [""])[0]
            finals[(branch, message.headers.get("cseq", [""])[0])] += 1
    return finals


@fuzz
@given(exchanges(), SOURCES, st.booleans(), st.booleans())
def test_datagram_received_is_robust(steps: list[tuple[bytes, float]],
                                     source: tuple[str, int], serving: bool,
                                     auto_answer: bool) -> None:
    EXAMPLES["datagramReceived exchanges"] += 1
    EXAMPLES["datagramReceived datagrams"] += len(steps)
    network = FakeNetwork()
    instance = network.add_instance("100")
    if serving:
        instance.start_serving(auto_answer=auto_answer)
    with LoggedFailures() as failures:
        for data, pause in steps:
            before = len(network.log)
            instance.datagramReceived(data, source)  # must not raise
            sent = network.log[before:]
            if is_response_line(data):
                assert sent == [], "a response was answered"
            # Answers go back where the request came from, and never outside 127.0.0.0/8.
            assert all(d.destination == source for d in sent)
            finals = _final_answers([d.data for d in sent])
            assert all(count == 1 for count in finals.values()), finals
            network.advance(pause)
        network.run(network.cleanup())
        network.settle()
    assert failures.events == [], failures.summary()
    assert network.stray == []
    assert all(d.destination[0].startswith("127.") for d in network.log)
    assert network.clock.getDelayedCalls() == []


@fuzz
@given(invites, st.sampled_from(["ACK", "BYE", "CANCEL", "INVITE", "OPTIONS"]),
       st.booleans(), st.booleans())
def test_in_dialog_follow_ups_stay_on_loopback(invite: bytes, follow_up: str, with_tag: bool,
                                              same_branch: bool) -> None:
    """An answered call whose Contact/Record-Route point anywhere: the follow-ups, the 2xx
    retransmissions and the BYE at cleanup all stay on 127.0.0.0/8."""
    EXAMPLES["in-dialog follow-ups"] += 1
    source = ("127.0.0.1", 5999)
    network = FakeNetwork()
    instance = network.add_instance("100")
    instance.start_serving(auto_answer=True)
    with LoggedFailures() as failures:
        instance.datagramReceived(invite, source)
        try:
            request = parse(invite)
        except SipParseError:
            request = None
        answers = [lenient(d.data) for d in network.log]
        tags = [r.to.tag for r in answers if isinstance(r, Response) and r.status > 100
                and "to" in r and r.to.tag]
        if isinstance(request, Request):
            via = request.headers["via"][0]
            if not same_branch:
                via = "SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKfollow;rport"
            to = request.headers["to"][0]
            if with_tag and tags and ";tag=" not in to:
                to += f";tag={tags[0]}"
            number = request.cseq.number + (0 if follow_up in ("ACK", "CANCEL") else 1)
            message = Request(follow_up, request.uri, {
                "via": [via], "from": request.headers["from"], "to": [to],
                "call-id": request.headers["call-id"], "cseq": [f"{number} {follow_up}"],
                "max-forwards": ["70"],
                "contact": request.headers.get("contact", ["<sip:x@192.0.2.1>"]),
            })
            before = len(network.log)
            instance.datagramReceived(message.to_bytes(), source)
            finals = _final_answers([d.data for d in network.log[before:]])
            assert all(count == 1 for count in finals.values()), finals
        network.advance(40)
        network.run(network.cleanup())
        network.settle()
    assert failures.events == [], failures.summary()
    assert network.stray == []
    assert network.clock.getDelayedCalls() == []
