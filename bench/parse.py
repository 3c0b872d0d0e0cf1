"""Parser throughput: a typical INVITE, up to the fields a transaction layer reads.

Three parsers do the same job on the same bytes, one message at a time:

- twsip: `twsip.message.parse`, then top Via branch, From tag, To tag, Call-ID, CSeq;
- sipmessage (benchmark-only dependency): `Message.parse`, then the same five fields
  through its own typed accessors (`via`, `from_address`, `to_address`, `call_id`, `cseq`);
- twisted.protocols.sip: the raw split only (`MessagesParser.dataReceived` + `dataDone`, the
  way its `Base.datagramReceived` does it), which never looks inside a header.
"""

from __future__ import annotations

import sys
from typing import Callable

from . import Row, best_rate

SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 127.0.0.1\r\n"
    b"s=-\r\n"
    b"c=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 97 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:97 iLBC/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

HEAD = (
    "INVITE sip:bob@127.0.0.1:5062 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK74bf9a1c3e7d5b;rport\r\n"
    "Max-Forwards: 70\r\n"
    'From: "Alice Liddell" <sip:alice@127.0.0.1:5061>;tag=9fxced76sl\r\n'
    "To: Bob <sip:bob@127.0.0.1:5062>\r\n"
    "Call-ID: 3848276298220188511@127.0.0.1\r\n"
    "CSeq: 314159 INVITE\r\n"
    "Contact: <sip:alice@127.0.0.1:5061;transport=udp>\r\n"
    "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, INFO, UPDATE\r\n"
    "Supported: replaces, timer, 100rel\r\n"
    "Accept: application/sdp\r\n"
    "Accept-Language: en\r\n"
    "User-Agent: twsip-bench/1.0\r\n"
    "Session-Expires: 1800;refresher=uac\r\n"
    "Min-SE: 90\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {length}\r\n"
    "\r\n"
)

#: A typical INVITE with SDP, about 900 bytes.
INVITE = HEAD.format(length=len(SDP)).encode("ascii") + SDP

FIELDS = ("z9hG4bK74bf9a1c3e7d5b", "9fxced76sl", None, "3848276298220188511@127.0.0.1",
          (314159, "INVITE"))


def twsip_fields(data: bytes) -> tuple:
    from twsip.sip.message import parse

    message = parse(data)
    cseq = message.cseq
    return (message.top_via.branch, message.from_.tag, message.to.tag, message.call_id,
            (cseq.number, cseq.method))


def sipmessage_fields(data: bytes) -> tuple:
    from sipmessage import Message

    message = Message.parse(data)
    cseq = message.cseq
    return (message.via[0].parameters.get("branch"), message.from_address.parameters.get("tag"),
            message.to_address.parameters.get("tag"), message.call_id,
            (cseq.sequence, cseq.method))


def twsip_work() -> Callable[[int], None]:
    from twsip.sip.message import parse

    data = INVITE

    def work(n: int) -> None:
        for _ in range(n):
            message = parse(data)
            message.top_via.branch
            message.from_.tag
            message.to.tag
            message.call_id
            message.cseq
    return work


def sipmessage_work() -> Callable[[int], None]:
    from sipmessage import Message

    data = INVITE

    def work(n: int) -> None:
        for _ in range(n):
            message = Message.parse(data)
            message.via[0].parameters.get("branch")
            message.from_address.parameters.get("tag")
            message.to_address.parameters.get("tag")
            message.call_id
            message.cseq
    return work


def twisted_raw_work() -> Callable[[int], None]:
    from twisted.protocols.sip import MessagesParser

    data = INVITE
    messages: list = []
    parser = MessagesParser(messages.append)

    def work(n: int) -> None:
        for _ in range(n):
            parser.dataReceived(data)
            parser.dataDone()
            if not messages:
                raise AssertionError("twisted.protocols.sip parsed nothing")
            messages.clear()
    return work


def twisted_raw_check() -> None:
    from twisted.protocols.sip import MessagesParser

    messages: list = []
    parser = MessagesParser(messages.append)
    parser.dataReceived(INVITE)
    parser.dataDone()
    assert len(messages) == 1 and messages[0].method == "INVITE", messages
    assert messages[0].body.encode() == SDP


def run(quick: bool = False, workdir: str | None = None) -> list[Row]:
    seconds, repeats = (0.1, 2) if quick else (0.5, 7)
    assert twsip_fields(INVITE) == FIELDS, twsip_fields(INVITE)
    notes = [f"typical INVITE with SDP, {len(INVITE)} bytes"]
    twsip_rate = best_rate(twsip_work(), seconds, repeats)
    print(f"  parse: twsip {twsip_rate:,.0f} msgs/s", file=sys.stderr)
    rows = []
    try:
        assert sipmessage_fields(INVITE) == FIELDS, sipmessage_fields(INVITE)
    except ImportError:
        rows.append(Row("parse INVITE + 5 fields vs sipmessage", twsip_rate, "msgs/s",
                        target=">= 2x sipmessage", skipped="sipmessage is not installed "
                        "(pip install sipmessage)", notes=notes))
    else:
        ref = best_rate(sipmessage_work(), seconds, repeats)
        print(f"  parse: sipmessage {ref:,.0f} msgs/s", file=sys.stderr)
        rows.append(Row("parse INVITE + 5 fields vs sipmessage", twsip_rate, "msgs/s",
                        target=">= 2x sipmessage", met=twsip_rate >= 2 * ref, reference=ref,
                        reference_label="sipmessage, same 5 fields", notes=notes))
    twisted_raw_check()
    ref = best_rate(twisted_raw_work(), seconds, repeats)
    print(f"  parse: twisted.protocols.sip raw {ref:,.0f} msgs/s", file=sys.stderr)
    rows.append(Row("parse INVITE + 5 fields vs twisted raw split", twsip_rate, "msgs/s",
                    target="> twisted.protocols.sip raw", met=twsip_rate > ref, reference=ref,
                    reference_label="twisted.protocols.sip MessagesParser, no header parsing",
                    notes=notes))
    return rows
