"""Fuzzing SDP: parsing never raises anything but SdpError, and every answer has exactly one
m= line per offered m= line (RFC 3264 §6), whatever the offer holds.

Profiles as in test_fuzz.py: "ci" (derandomized, the default) or "long" with
HYPOTHESIS_PROFILE=long.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twsip.sip.sdp import (
    Direction,
    MediaSession,
    SdpError,
    answer,
    answer_offer,
    parse,
    process_answer,
)

_PROFILES = {
    "ci": settings(max_examples=300, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow]),
    "long": settings(max_examples=20_000, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow]),
}
fuzz = _PROFILES.get(os.environ.get("HYPOTHESIS_PROFILE", "ci"), _PROFILES["ci"])

CODECS = ("PCMU", "PCMA")
LINE_TYPES = "vosicbtrzkamx"
numbers = st.one_of(st.integers(0, 70000).map(str),
                    st.sampled_from(["²", "٠", "１", "-1", "", "4000/2", "4000/x", "1e3",
                                     "99999999999999999999"]))
pieces = st.one_of(numbers, st.sampled_from([
    "audio", "video", "image", "application", "RTP/AVP", "RTP/SAVP", "udptl", "UDP/BFCP",
    "IN", "IP4", "IP6", "127.0.0.1", "0.0.0.0", "192.0.2.1", "::1", "*", "t38",
    "rtpmap:", "fmtp:", "ptime:", "sendonly", "recvonly", "inactive", "sendrecv",
    "PCMU/8000", "PCMA/8000", "telephone-event/8000", "0-15", "0-16", "/", ":", " ",
]), st.text(max_size=6))


@st.composite
def sdp_lines(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(LINE_TYPES))
    return kind + "=" + " ".join(draw(st.lists(pieces, max_size=6)))


@st.composite
def sdp_texts(draw: st.DrawFn) -> bytes:
    head = draw(st.sampled_from(["v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\nc=IN IP4 127.0.0.1\r\n",
                                 "v=0\no=x 1 1 IN IP4 127.0.0.1\n", "", "v=0\r\n"]))
    eol = draw(st.sampled_from(["\r\n", "\n", "\r"]))
    body = head + eol.join(draw(st.lists(sdp_lines(), max_size=12)))
    return body.encode("utf-8", "surrogatepass")


@fuzz
@given(st.one_of(st.binary(max_size=300), sdp_texts()))
def test_parse_and_answer_raise_only_sdp_error(body: bytes) -> None:
    for attempt in (parse, lambda b: answer(b, CODECS, "127.0.0.1", 30000)):
        try:
            attempt(body)
        except SdpError:
            pass


# -- offers that parse: the answer mirrors their shape ---------------------------------------

media_kinds = st.sampled_from(["audio", "audio", "audio", "video", "image", "application"])
protos = st.sampled_from(["RTP/AVP", "RTP/AVP", "RTP/SAVP", "RTP/AVPF", "udptl", "TCP/MSRP"])
payload_types = st.lists(st.sampled_from([0, 3, 8, 9, 18, 96, 97, 101, 127]), min_size=1,
                         max_size=5)
attributes = st.lists(st.sampled_from([
    "a=rtpmap:96 telephone-event/8000", "a=rtpmap:97 PCMA/8000", "a=rtpmap:101 opus/48000/2",
    "a=rtpmap:127 telephone-event/8000", "a=fmtp:96 0-15", "a=fmtp:127 0-16,32",
    "a=ptime:30", "a=ptime:10", "a=sendonly", "a=recvonly", "a=inactive", "a=sendrecv",
    "c=IN IP4 127.0.0.9", "c=IN IP4 0.0.0.0", "c=IN IP4 192.0.2.1", "a=rtcp-mux", "b=AS:64",
]), max_size=4)


@st.composite
def media_blocks(draw: st.DrawFn) -> str:
    kind, proto = draw(media_kinds), draw(protos)
    port = draw(st.sampled_from([0, 4000, 65535]))
    if "RTP" in proto:
        formats = " ".join(map(str, draw(payload_types)))
    else:
        formats = draw(st.sampled_from(["t38", "*", "x y"]))
    return "\r\n".join([f"m={kind} {port} {proto} {formats}"] + draw(attributes))


@st.composite
def offers(draw: st.DrawFn) -> bytes:
    session = draw(st.sampled_from(["", "a=sendonly\r\n", "a=inactive\r\n"]))
    blocks = draw(st.lists(media_blocks(), max_size=6))
    return ("v=0\r\no=peer 9 9 IN IP4 127.0.0.7\r\ns=-\r\nc=IN IP4 127.0.0.7\r\nt=0 0\r\n"
            + session + "".join(b + "\r\n" for b in blocks)).encode("ascii")


@fuzz
@given(offers(), st.sampled_from([None, *Direction]))
def test_answers_have_one_m_line_per_offered_line(offer: bytes, want: Direction | None
                                                  ) -> None:
    offered = parse(offer).media
    try:
        body, negotiated = answer_offer(offer, CODECS, "127.0.0.1", 30000, want=want)
    except SdpError:
        return   # refused as a whole (488): the shape rules concern answers only
    answered = parse(body).media
    assert len(answered) == len(offered)
    for index, (o, a) in enumerate(zip(offered, answered)):
        assert a.kind == o.kind
        assert a.proto == o.proto
        if o.port == 0 or index != negotiated.index:
            assert a.port == 0
    assert answered[negotiated.index].port == 30000
    assert offered[negotiated.index].proto == "RTP/AVP"
    # the answer is one the offerer side reads back consistently
    again = process_answer(offer, body)
    assert again.codec == negotiated.codec and again.index == negotiated.index


@fuzz
@given(st.lists(st.tuples(offers(), st.booleans()), max_size=5))
def test_a_session_never_goes_backwards(exchanges: list[tuple[bytes, bool]]) -> None:
    s = MediaSession(CODECS, "127.0.0.1", 30000, session_id=1)
    last_version = s.version
    for offer, as_offerer in exchanges:
        before = s.negotiated
        try:
            if as_offerer:
                s.make_offer()
                s.receive_answer(offer)
            else:
                s.receive_offer(offer)
        except SdpError:
            assert s.negotiated is before
        assert s.version >= last_version and not s.offer_pending
        last_version = s.version
