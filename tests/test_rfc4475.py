"""RFC 4475 (SIP torture test messages): all 49, over real UDP and at the parser.

The messages live byte-exact in ``tests/data/rfc4475`` (a copy of the shared corpus), with
EXPECTED.tsv saying what a user agent that is neither proxy nor registrar must do with each.

The network test sends each message from a socket the test owns to a running instance
(auto-answering), then an OPTIONS probe. Datagrams on loopback between two sockets keep their
order and the instance answers synchronously, so everything the instance says about the
torture message arrives before the probe's 200: that 200 is the proof that nothing else was
sent (no sleeping). Answers must go to the sender, never to the 192.0.2.x hosts that the
messages' Via headers name.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Callable, Iterator

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol

from twsip.manager import InstanceManager
from twsip.sip.message import Message, Request, Response, SipParseError, parse
from twsip.config import SipInstanceConfig
from twsip.testing import LoggedFailures


@pytest.fixture(autouse=True)
def no_logged_failures() -> Iterator[None]:
    """An exception caught inside twsip is a bug even though nothing escaped."""
    with LoggedFailures() as failures:
        yield
    assert failures.events == [], failures.summary()


TESTDATA = Path(__file__).resolve().parent / "data" / "rfc4475"
EXPECTED_TSV = TESTDATA / "EXPECTED.tsv"
WAIT = 5.0  # seconds: an upper bound for loopback answers, only reached when something is wrong


def _expectations() -> list[tuple[str, str, str, str]]:
    rows = []
    for line in EXPECTED_TSV.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, section, kind, outcome = line.split("\t")
        rows.append((name, section, kind, outcome))
    return rows


EXPECTED = _expectations()


def load(name: str) -> bytes:
    return (TESTDATA / name).read_bytes()


def msg(name: str) -> Message:
    return parse(load(name))


# -- over the network ------------------------------------------------------------------------

_ids = itertools.count(1)


class Peer(DatagramProtocol):
    """The test's own socket: records what arrives, answers BYEs from the instance."""

    def __init__(self) -> None:
        self.received: list[tuple[bytes, Message | None]] = []
        self._waiters: list[tuple[Callable[[Message], bool], defer.Deferred]] = []

    @property
    def port(self) -> int:
        return self.transport.getHost().port

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:  # noqa: N802
        try:
            message: Message | None = parse(data)
        except SipParseError as exc:
            # An answer to a malformed request copies its malformed headers (§8.2.6), so
            # it may not parse strictly itself: keep what the parser made of it.
            message = exc.message if isinstance(exc.message, Response) else None
        self.received.append((data, message))
        if message is None:
            return
        if isinstance(message, Request) and message.method == "BYE":
            self.transport.write(message.response(200).to_bytes(), addr)
        for waiter in list(self._waiters):
            predicate, d = waiter
            if predicate(message) and not d.called:
                self._waiters.remove(waiter)
                d.callback(message)

    def wait_for(self, predicate: Callable[[Message], bool]) -> defer.Deferred:
        for _, message in self.received:
            if message is not None and predicate(message):
                return defer.succeed(message)
        d: defer.Deferred = defer.Deferred()
        self._waiters.append((predicate, d))
        d.addTimeout(WAIT, reactor)
        return d

    def request(self, method: str, uri: str, *, call_id: str | None = None, cseq: int = 1,
                from_: str | None = None, to: str | None = None) -> Request:
        n = next(_ids)
        return Request(method, uri, {
            "via": [f"SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bKpeer{os.getpid()}x{n};rport"],
            "max-forwards": ["70"],
            "from": [from_ or f"<sip:peer@127.0.0.1:{self.port}>;tag=peer{n}"],
            "to": [to or f"<{uri}>"],
            "call-id": [call_id or f"probe{n}@127.0.0.1"],
            "cseq": [f"{cseq} {method}"],
        })


def _answers_to(call_id: str) -> Callable[[Message], bool]:
    return lambda m: isinstance(m, Response) and m.status >= 200 and m.get("call-id") == call_id


def _judge(outcome: str, status: int | None) -> bool:
    """Does the first non-100 status meet EXPECTED.tsv's outcome ('parse', 'drop', NNN, A|B)?"""
    for choice in outcome.split("|"):
        if choice == "drop" and status is None:
            return True
        if choice == "parse" and status is not None and status not in (400, 505):
            return True
        if choice.isdigit() and status == int(choice):
            return True
    return False


async def _end_call(peer: Peer, target: tuple[str, int], invite_call_id: str,
                    ok: Response) -> None:
    """ACK the 2xx and hang up with BYE, as the caller would."""
    uri = ok.contact[0].uri if ok.contact else f"sip:100@{target[0]}:{target[1]}"
    number = ok.cseq.number
    frm, to = ok.headers["from"][0], ok.headers["to"][0]
    ack = peer.request("ACK", uri, call_id=invite_call_id, cseq=number, from_=frm, to=to)
    bye = peer.request("BYE", uri, call_id=invite_call_id, cseq=number + 1, from_=frm, to=to)
    peer.transport.write(ack.to_bytes(), target)
    peer.transport.write(bye.to_bytes(), target)
    answer = await peer.wait_for(
        lambda m: isinstance(m, Response) and m.get("call-id") == invite_call_id
        and m.get("cseq", "").endswith("BYE") and m.status >= 200)
    assert answer.status == 200


@pytest.mark.parametrize(("name", "section", "kind", "outcome"), EXPECTED,
                         ids=[row[0].removesuffix(".dat") for row in EXPECTED])
@pytest_twisted.ensureDeferred
async def test_torture_message_over_udp(name: str, section: str, kind: str,
                                        outcome: str) -> None:
    data = load(name)
    manager = InstanceManager(base_port=0)
    managed = manager.create_instance(SipInstanceConfig(id="uas", label="uas", dn="100"))
    manager.start_serving(auto_answer=True)
    target = ("127.0.0.1", managed.port)
    written: list[tuple[str, int]] = []  # every address the instance sent a datagram to
    managed.ua.observers.append(
        lambda event: written.append(event.peer) if event.direction == "out" else None)
    peer = Peer()
    peer_port = reactor.listenUDP(0, peer, interface="127.0.0.1")
    try:
        peer.transport.write(data, target)
        probe = peer.request("OPTIONS", f"sip:100@127.0.0.1:{managed.port}")
        peer.transport.write(probe.to_bytes(), target)
        probe_answer = await peer.wait_for(_answers_to(probe.call_id))
        assert probe_answer.status == 200

        before_probe = []
        for raw, message in peer.received:
            assert message is not None, f"the instance sent something unparsable: {raw[:200]!r}"
            if message is probe_answer:
                break
            if message.get("call-id") != probe.call_id:
                before_probe.append(message)
        assert all(isinstance(m, Response) for m in before_probe), before_probe
        answers = [m for m in before_probe if isinstance(m, Response)]
        first = next((m for m in answers if m.status != 100), None)
        status = first.status if first is not None else None
        if kind == "response":
            # Parsed or not, a response matching no transaction is never answered.
            assert answers == [], f"{name}: a response was answered with {answers!r}"
        else:
            assert _judge(outcome, status), (
                f"{name} (RFC 4475 §{section}): expected {outcome}, got "
                f"{'nothing' if first is None else f'{first.status} {first.reason}'}"
                f"{'' if first is None else ' / ' + str(first.get('warning'))}")
        print(f"{name}: expected {outcome}, answered "
              f"{' '.join(str(m.status) for m in answers) or 'nothing'}")
        finals = [m for m in answers if m.status >= 200]
        assert len(finals) <= 1, f"{name}: more than one final answer: {finals!r}"

        invite_ok = next((m for m in answers if 200 <= m.status < 300
                          and m.get("cseq", "").endswith("INVITE")), None)
        if invite_ok is not None:
            await _end_call(peer, target, invite_ok.call_id, invite_ok)

        again = peer.request("OPTIONS", f"sip:100@127.0.0.1:{managed.port}")
        peer.transport.write(again.to_bytes(), target)
        assert (await peer.wait_for(_answers_to(again.call_id))).status == 200
        assert not managed.ua.calls, f"{name}: a call is still up: {managed.ua.calls!r}"
        assert written and set(written) == {("127.0.0.1", peer.port)}, written
    finally:
        await manager.cleanup()
        await peer_port.stopListening()


# -- at the parser (§3.1.1: valid messages, fields checked) ----------------------------------

def test_expected_table_is_complete() -> None:
    assert len(EXPECTED) == 49
    assert {row[0] for row in EXPECTED} == {p.name for p in TESTDATA.glob("*.dat")}


def test_wsinv_whitespace_folding_and_escapes() -> None:
    m = msg("wsinv.dat")
    assert isinstance(m, Request)
    assert (m.method, m.uri) == ("INVITE", "sip:vivekg@chair-dnrc.example.com;unknownparam")
    # Folded header values, whitespace around names and colons, mixed case, compact forms.
    assert m.to.uri == "sip:vivekg@chair-dnrc.example.com"
    assert m.to.tag == "1918181833n"
    assert m.from_.display == 'J Rosenberg \\"'
    assert m.from_.uri == "sip:jdrosen@example.com"
    assert m.from_.tag == "98asjd8"
    assert m.max_forwards == 68
    assert m.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert (m.cseq.number, m.cseq.method) == (9, "INVITE")
    assert m.get("subject") == ""  # "s :" is an empty Subject
    assert m.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    assert m.get("content-type") == "application/sdp"
    assert m.get("route") == "<sip:services.example.com;lr;unknownwith=value;unknown-no-value>"
    # Three Vias: one folded over three lines, two in one comma-separated compact header.
    assert [(v.transport, v.host, v.port, v.branch) for v in m.vias] == [
        ("UDP", "192.0.2.2", None, "390skdjuw"),
        ("TCP", "spindle.example.com", None, "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", None, "z9hG4bK30239"),
    ]
    [contact] = m.contact
    assert contact.display == 'Quoted string ""'
    assert contact.uri == "sip:jdrosen@example.com"
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert len(m.body) == 150 and m.body.startswith(b"v=0\r\n")


def test_intmeth_unusual_method_token() -> None:
    m = msg("intmeth.dat")
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert isinstance(m, Request)
    assert m.method == method and m.cseq.method == method
    assert m.cseq.number == 139122385
    assert m.uri == ("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,"
                     "weird!*pas$wo~d_too.(doesn't-it)@example.com")
    assert m.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    assert m.to.display == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert m.from_.display == "token1~` token2'+_ token3*%!.-"
    assert m.from_.tag == "_token~1'+`*%!-."
    assert m.from_.params["fromparam''~+*_!.-%"] == '"работающий"'
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert m.max_forwards == 255
    assert m.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    assert m.body == b""


def test_esc01_escaped_uris_stay_as_sent() -> None:
    m = msg("esc01.dat")
    assert m.uri == "sip:sips%3Auser%40example.com@example.net"
    assert m.to.uri == "sip:%75se%72@example.com"
    assert m.from_.uri == "sip:I%20have%20spaces@example.net"
    assert m.call_id == "esc01.239409asdfakjkn23onasd0-3234"  # compact i:
    assert m.get("content-type") == "application/sdp"      # compact c:
    assert [c.uri for c in m.contact] == [
        "sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31"]
    assert m.max_forwards == 87 and len(m.body) == 150


def test_escnull_escaped_nul_in_uris() -> None:
    m = msg("escnull.dat")
    assert m.method == "REGISTER"
    assert m.to.uri == "sip:null-%00-null@example.com"
    assert m.from_.uri == "sip:null-%00-null@example.com"
    assert [c.uri for c in m.contact] == ["sip:%00@host5.example.com",
                                          "sip:%00%00@host5.example.com"]
    assert m.body == b""


def test_esc02_escaped_method_is_just_a_token() -> None:
    m = msg("esc02.dat")
    assert m.method == "RE%47IST%45R" and m.cseq.method == "RE%47IST%45R"
    assert m.to.display == "%Z%45" and m.from_.display == "%Z%45"
    assert m.top_via.branch == "z9hG4bK209%fzsnel234"
    # C%6Fntact is an unknown header, not a Contact.
    assert [c.uri for c in m.contact] == ["sip:alias1@host1.example.com",
                                          "sip:alias3@host3.example.com"]
    assert m.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_lwsdisp_display_name_without_space() -> None:
    m = msg("lwsdisp.dat")
    assert m.from_.display == "caller"
    assert m.from_.uri == "sip:caller@example.com" and m.from_.tag == "323"


def test_longreq_long_values_and_every_spelling_of_via() -> None:
    data = load("longreq.dat")
    m = parse(data)
    assert len(m.vias) == 34
    assert [v.host for v in m.vias[:33]] == [f"sip{n}.example.com" for n in range(33, 0, -1)]
    assert all(v.transport == "TCP" for v in m.vias)
    last = m.vias[-1]
    assert last.host == "host.example.com" and last.received == "192.0.2.5"
    assert last.branch.startswith("verylonglong") and len(last.branch) > 100
    assert m.to.display.startswith("I have a user name of extremeextreme")
    assert m.to.display.endswith("proportion")
    assert m.to.uri.startswith("sip:user@example.com:6000;unknownparam1=verylong")
    assert len(m.from_.tag) > 100
    assert "unknownheaderparamnamenamenamename" in "".join(m.from_.params)
    assert len(m.call_id) > 100
    long_name = "unknown-" + "long" * 20 + "-name"
    assert m.get(long_name).startswith("unknown-longlong")
    assert m.cseq.number == 3882340 and m.max_forwards == 70
    assert len(m.body) == 150  # compact "l: 150"


def test_dblreq_second_request_is_ignored() -> None:
    m = msg("dblreq.dat")
    assert isinstance(m, Request)
    assert m.method == "REGISTER" and m.cseq.method == "REGISTER"
    assert m.body == b""
    assert m.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    assert m.top_via.branch == "z9hG4bKkdjuw23492"


def test_semiuri_semicolon_in_user_part() -> None:
    m = msg("semiuri.dat")
    assert m.uri == "sip:user;par=u%40example.net@example.com"
    assert m.get_all("accept") == ["application/sdp", "application/pkcs7-mime",
                                   "multipart/mixed", "multipart/signed", "message/sip",
                                   "message/sipfrag"]
    assert m.max_forwards == 3


def test_transports_five_vias() -> None:
    m = msg("transports.dat")
    assert [(v.transport, v.host, v.branch) for v in m.vias] == [
        ("UDP", "t1.example.com", "z9hG4bKkdjuw"),
        ("SCTP", "t2.example.com", "z9hG4bKklasjdhf"),
        ("TLS", "t3.example.com", "z9hG4bK2980unddj"),
        ("UNKNOWN", "t4.example.com", "z9hG4bKasd0f3en"),
        ("TCP", "t5.example.com", "z9hG4bK0a9idfnee"),
    ]
    assert m.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def test_mpart01_binary_multipart_body_intact() -> None:
    data = load("mpart01.dat")
    m = parse(data)
    assert m.method == "MESSAGE"
    assert m.get("content-type") == "multipart/mixed;boundary=7a9cbec02ceef655"
    assert int(m.get("content-length")) == 553
    start = data.index(b"\r\n\r\n") + 4
    assert m.body == data[start:start + 553]
    assert len(m.body) == 553
    assert m.body.startswith(b"--7a9cbec02ceef655\r\n")
    assert any(b > 0x7F for b in m.body), "the binary part is there"
    # Serialized and parsed again, the body is still the same bytes.
    assert parse(m.to_bytes()).body == m.body


def test_unreason_utf8_reason_phrase() -> None:
    m = msg("unreason.dat")
    assert isinstance(m, Response)
    assert m.status == 200
    assert m.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert len(m.body) == 154
    assert parse(m.to_bytes()).reason == m.reason


def test_noreason_empty_reason_phrase() -> None:
    m = msg("noreason.dat")
    assert isinstance(m, Response)
    assert (m.status, m.reason) == (100, "")
    assert m.call_id == "noreason.asndj203insdf99223ndf"
    assert parse(m.to_bytes()).reason == ""


# -- at the parser (§3.1.2 and §3.3: what is rejected, and with what) ------------------------

@pytest.mark.parametrize(("name", "status"), [
    ("badinv01.dat", 400), ("clerr.dat", 400), ("ncl.dat", 400), ("scalar02.dat", 400),
    ("quotbal.dat", 400), ("ltgtruri.dat", 400), ("lwsruri.dat", 400), ("badvers.dat", 505),
    ("mismatch01.dat", 400), ("insuf.dat", 400), ("multi01.dat", 400), ("mcl01.dat", 400),
])
def test_invalid_requests_raise_with_an_answerable_request(name: str, status: int) -> None:
    with pytest.raises(SipParseError) as info:
        parse(load(name))
    assert info.value.status == status
    assert info.value.reason
    request = info.value.message
    assert isinstance(request, Request), "the error carries what an answer must copy"
    answer = request.response(status)
    assert answer.get("via") and answer.get("cseq")


@pytest.mark.parametrize("name", ["scalarlg.dat", "bigcode.dat"])
def test_invalid_responses_raise(name: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse(load(name))
    assert not isinstance(info.value.message, Request)


def test_ncl_negative_content_length_and_clerr_too_large() -> None:
    with pytest.raises(SipParseError, match="Content-Length"):
        parse(load("ncl.dat"))
    with pytest.raises(SipParseError, match="Content-Length"):
        parse(load("clerr.dat"))
