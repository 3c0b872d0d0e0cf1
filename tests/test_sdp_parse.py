"""Reading SDP (RFC 4566): the model offer/answer relies on, strict where the RFC is."""

from __future__ import annotations

import pytest

from twsip.sip.sdp import Connection, Direction, Origin, RtpMap, SdpError, parse

HEAD = "v=0\r\no=alice 2890844526 2890844527 IN IP4 127.0.0.1\r\ns=-\r\n"


def sdp(*lines: str, head: str = HEAD, eol: str = "\r\n") -> bytes:
    text = head + "".join(line + "\r\n" for line in lines)
    return text.replace("\r\n", eol).encode("utf-8")


def test_a_whole_description_with_several_streams() -> None:
    desc = parse(sdp("c=IN IP4 127.0.0.1", "t=0 0",
                     "m=audio 49170 RTP/AVP 0 8 97",
                     "a=rtpmap:97 iLBC/8000", "a=fmtp:97 mode=30", "a=ptime:30",
                     "m=video 51372 RTP/AVP 31 32",
                     "a=rtpmap:31 H261/90000",
                     "m=application 9 UDP/BFCP *"))
    assert desc.origin == Origin("alice", 2890844526, 2890844527, "IN", "IP4", "127.0.0.1")
    assert desc.connection == Connection("IN", "IP4", "127.0.0.1")
    assert [m.kind for m in desc.media] == ["audio", "video", "application"]
    audio, video, app = desc.media
    assert (audio.port, audio.proto, audio.formats) == (49170, "RTP/AVP", ("0", "8", "97"))
    assert audio.payload_types == (0, 8, 97)
    assert audio.codec(97) == RtpMap("ILBC", 8000)
    assert audio.codec(0) == RtpMap("PCMU", 8000)      # static, no rtpmap needed
    assert audio.codec(8) == RtpMap("PCMA", 8000)
    assert audio.fmtp == {97: "mode=30"}
    assert audio.ptime == 30
    assert video.ptime is None and video.codec(31) == RtpMap("H261", 90000)
    assert app.formats == ("*",) and not app.is_rtp and app.payload_types == ()
    assert all(m.connection == desc.connection for m in desc.media)


def test_media_level_connection_overrides_the_session_one() -> None:
    desc = parse(sdp("c=IN IP4 127.0.0.1", "t=0 0",
                     "m=audio 4000 RTP/AVP 0", "c=IN IP4 127.0.0.9",
                     "m=audio 4002 RTP/AVP 8"))
    assert desc.media[0].connection == Connection("IN", "IP4", "127.0.0.9")
    assert desc.media[1].connection == Connection("IN", "IP4", "127.0.0.1")


def test_connection_ttl_suffix_is_not_part_of_the_address() -> None:
    desc = parse(sdp("t=0 0", "m=audio 4000 RTP/AVP 0", "c=IN IP4 224.2.1.1/127/3"))
    assert desc.media[0].connection == Connection("IN", "IP4", "224.2.1.1")


def test_every_stream_needs_a_connection_somewhere() -> None:
    with pytest.raises(SdpError, match="c="):
        parse(sdp("t=0 0", "m=audio 4000 RTP/AVP 0", "c=IN IP4 127.0.0.1",
                  "m=audio 4002 RTP/AVP 0"))


@pytest.mark.parametrize("session, media, expected", [
    (None, None, Direction.SENDRECV),
    ("sendonly", None, Direction.SENDONLY),
    ("sendonly", "recvonly", Direction.RECVONLY),
    (None, "inactive", Direction.INACTIVE),
    ("inactive", "sendrecv", Direction.SENDRECV),
])
def test_direction_media_level_over_session_level_default_sendrecv(
        session: str | None, media: str | None, expected: Direction) -> None:
    lines = ["c=IN IP4 127.0.0.1", "t=0 0"]
    if session:
        lines.append(f"a={session}")
    lines.append("m=audio 4000 RTP/AVP 0")
    if media:
        lines.append(f"a={media}")
    lines.append("m=audio 4002 RTP/AVP 0")
    desc = parse(sdp(*lines))
    assert desc.media[0].direction is expected
    assert desc.media[1].direction is (Direction(session) if session else Direction.SENDRECV)


def test_lf_only_line_ends_blank_lines_and_unknown_lines_are_fine() -> None:
    body = sdp("c=IN IP4 127.0.0.1", "t=0 0", "", "x=whatever", "z=2882844526 -1h",
               "a=tool:foo", "m=audio 4000 RTP/AVP 0 101", "i=voice", "b=AS:64",
               "a=rtpmap:101 Telephone-Event/8000", "a=fmtp:101 0-15", "a=unknown-thing",
               "a=rtcp:4001", "", eol="\n")
    desc = parse(body)
    media = desc.media[0]
    assert media.codec(101) == RtpMap("TELEPHONE-EVENT", 8000)
    assert ("rtcp", "4001") in media.attributes and ("unknown-thing", None) in media.attributes
    assert desc.attributes == (("tool", "foo"),)


def test_a_str_body_and_trailing_spaces() -> None:
    text = HEAD + "c=IN IP4 127.0.0.1 \r\nm=audio  4000  RTP/AVP  0 \r\na=sendonly \r\n"
    media = parse(text).media[0]
    assert (media.port, media.formats, media.direction) == (4000, ("0",), Direction.SENDONLY)


def test_port_count_and_case_of_media_type() -> None:
    media = parse(sdp("c=IN IP4 127.0.0.1", "m=Audio 4000/2 RTP/AVP 0")).media[0]
    assert (media.kind, media.port, media.port_count) == ("audio", 4000, 2)


def test_a_description_without_media_is_still_a_description() -> None:
    assert parse(sdp("c=IN IP4 127.0.0.1", "t=0 0")).media == ()


def test_origin_numbers_may_be_64_bit() -> None:
    desc = parse(sdp("c=IN IP4 127.0.0.1",
                     head="v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n"))
    assert (desc.origin.session_id, desc.origin.version) == (4611731400430051336, 2)


def test_ptime_with_a_fraction_is_rounded() -> None:
    assert parse(sdp("c=IN IP4 127.0.0.1", "m=audio 4000 RTP/AVP 0",
                     "a=ptime:20.0")).media[0].ptime == 20


@pytest.mark.parametrize("body", [
    b"",
    b"\r\n",
    b"o=x 1 1 IN IP4 127.0.0.1\r\nv=0\r\n",                     # v= not first
    b"v=1\r\no=x 1 1 IN IP4 127.0.0.1\r\n",                     # unknown version
    b"v=0\r\nc=IN IP4 127.0.0.1\r\n",                           # no o=
    b"v=0\r\no=x 1 IN IP4 127.0.0.1\r\n",                       # o= short
    b"v=0\r\no=x one 1 IN IP4 127.0.0.1\r\n",
    b"v=0\r\no=x 1 \xd9\xa1 IN IP4 127.0.0.1\r\n",              # Arabic-Indic one
    b"v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\nthis is not sdp\r\n",
    b"v=0\r\no=x 1 1 IN IP4 127.0.0.1\r\nc=IN IP4\r\n",
])
def test_unreadable_descriptions(body: bytes) -> None:
    with pytest.raises(SdpError):
        parse(body)


@pytest.mark.parametrize("lines", [
    ("m=audio 4000 RTP/AVP",),                       # no format
    ("m=audio four RTP/AVP 0",),
    ("m=audio ²000 RTP/AVP 0",),                     # superscript two
    ("m=audio 4\u0660\u0660\u0660 RTP/AVP 0",),      # Arabic-Indic zeros
    ("m=audio 70000 RTP/AVP 0",),
    ("m=audio -1 RTP/AVP 0",),
    ("m=audio 4000/0 RTP/AVP 0",),
    ("m=audio 4000 RTP/AVP 128",),
    ("m=audio 4000 RTP/AVP 0 \u0669",),
    ("m=audio 4000 RTP/SAVP x",),                    # RTP formats are payload types
    ("m=au(dio 4000 RTP/AVP 0",),
    ("m=audio 4000 RTP/AVP 0", "a=rtpmap:\u0660 PCMU/8000"),
    ("m=audio 4000 RTP/AVP 0", "a=rtpmap:0 PCMU/８000"),      # fullwidth digit
    ("m=audio 4000 RTP/AVP 0", "a=rtpmap:0 PCMU"),
    ("m=audio 4000 RTP/AVP 0", "a=fmtp:x 0-15"),
    ("m=audio 4000 RTP/AVP 0", "a=ptime:²0"),
    ("m=audio 4000 RTP/AVP 0", "a=ptime:0"),
    ("m=audio 4000 RTP/AVP 0", "a=ptime:twenty"),
])
def test_odd_numbers_in_streams_are_an_sdp_error(lines: tuple[str, ...]) -> None:
    with pytest.raises(SdpError):
        parse(sdp("c=IN IP4 127.0.0.1", "t=0 0", *lines))


def test_non_rtp_formats_are_tokens_not_numbers() -> None:
    media = parse(sdp("c=IN IP4 127.0.0.1", "m=image 4000 udptl t38")).media[0]
    assert (media.kind, media.proto, media.formats, media.is_rtp) == ("image", "udptl",
                                                                      ("t38",), False)


def test_the_model_is_immutable() -> None:
    desc = parse(sdp("c=IN IP4 127.0.0.1", "m=audio 4000 RTP/AVP 0"))
    with pytest.raises(AttributeError):
        desc.media[0].port = 1  # type: ignore[misc]
