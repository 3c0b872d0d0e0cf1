"""RFC 3264 as the answerer (§6) and as the offerer (§7): what goes on the wire and what the
RTP layer is told."""

from __future__ import annotations

import pytest

from twsip.sip import sdp
from twsip.sip.sdp import Direction, SdpError, answer_offer, parse, process_answer

CODECS = ("PCMU", "PCMA")
HOST, PORT = "127.0.0.1", 30000


def offer_of(*media: str, connection: str = "127.0.0.7", session: str = "") -> bytes:
    text = (f"v=0\r\no=peer 42 42 IN IP4 127.0.0.7\r\ns=-\r\nc=IN IP4 {connection}\r\n"
            f"t=0 0\r\n{session}")
    for block in media:
        text += block.replace("\n", "\r\n") + "\r\n"
    return text.encode("ascii")


AUDIO = "m=audio 4000 RTP/AVP 0 8 101\na=rtpmap:101 telephone-event/8000\na=fmtp:101 0-16"


def answer(body: bytes, codecs: tuple[str, ...] = CODECS, **kw: object
           ) -> tuple[sdp.SessionDescription, sdp.NegotiatedMedia]:
    wire, negotiated = answer_offer(body, codecs, HOST, PORT, **kw)  # type: ignore[arg-type]
    return parse(wire), negotiated


# -- one answer m= line per offered m= line, in order ---------------------------------------

def test_video_and_unknown_streams_are_refused_in_place() -> None:
    body = offer_of("m=video 5000 RTP/AVP 31 34", AUDIO, "m=application 6000 UDP/BFCP *",
                    "m=image 7000 udptl t38")
    desc, negotiated = answer(body)
    assert [(m.kind, m.port, m.proto, m.formats) for m in desc.media] == [
        ("video", 0, "RTP/AVP", ("31", "34")),
        ("audio", PORT, "RTP/AVP", ("0", "8", "101")),
        ("application", 0, "UDP/BFCP", ("*",)),
        ("image", 0, "udptl", ("t38",)),
    ]
    assert negotiated.index == 1
    assert desc.connection == sdp.Connection("IN", "IP4", HOST)


def test_only_the_first_usable_audio_stream_is_taken() -> None:
    desc, negotiated = answer(offer_of(AUDIO, "m=audio 4002 RTP/AVP 0"))
    assert [m.port for m in desc.media] == [PORT, 0]
    assert negotiated.index == 0


def test_a_disabled_audio_stream_stays_disabled() -> None:
    desc, negotiated = answer(offer_of("m=audio 0 RTP/AVP 0", AUDIO))
    assert [(m.port, m.formats) for m in desc.media] == [(0, ("0",)), (PORT, ("0", "8",
                                                                              "101"))]
    assert negotiated.index == 1


def test_only_disabled_audio_is_a_488() -> None:
    with pytest.raises(SdpError, match="port 0"):
        answer_offer(offer_of("m=audio 0 RTP/AVP 0"), CODECS, HOST, PORT)


@pytest.mark.parametrize("proto", ["RTP/SAVP", "RTP/SAVPF", "UDP/TLS/RTP/SAVPF", "RTP/AVPF"])
def test_srtp_and_other_profiles_are_refused_not_answered_as_avp(proto: str) -> None:
    desc, negotiated = answer(offer_of(f"m=audio 4000 {proto} 0 8", AUDIO))
    assert (desc.media[0].port, desc.media[0].proto) == (0, proto)
    assert negotiated.index == 1
    with pytest.raises(SdpError, match="RTP/AVP only"):
        answer_offer(offer_of(f"m=audio 4000 {proto} 0 8"), CODECS, HOST, PORT)


def test_no_common_codec_is_a_488() -> None:
    body = offer_of("m=audio 4000 RTP/AVP 18 9 101\na=rtpmap:101 telephone-event/8000")
    with pytest.raises(SdpError, match="none of the offered codecs"):
        answer_offer(body, CODECS, HOST, PORT)
    with pytest.raises(SdpError):
        sdp.answer(body, CODECS, HOST, PORT)   # the byte-level helper screening uses


def test_a_stream_without_a_common_codec_is_refused_when_another_is_taken() -> None:
    desc, negotiated = answer(offer_of("m=audio 4000 RTP/AVP 18", AUDIO))
    assert [m.port for m in desc.media] == [0, PORT] and negotiated.index == 1


def test_no_media_at_all_is_a_488() -> None:
    with pytest.raises(SdpError):
        answer_offer(offer_of(), CODECS, HOST, PORT)
    with pytest.raises(SdpError):
        answer_offer(offer_of("m=video 5000 RTP/AVP 31"), CODECS, HOST, PORT)


# -- codecs and payload types ---------------------------------------------------------------

def test_codecs_in_the_offerers_order_filtered_by_ours() -> None:
    desc, negotiated = answer(offer_of("m=audio 4000 RTP/AVP 18 8 3 0"))
    assert desc.media[0].formats == ("8", "0")
    assert (negotiated.codec, negotiated.payload_type) == ("PCMA", 8)
    assert negotiated.telephone_event is None and negotiated.local_telephone_event is None


def test_a_pcma_only_offer() -> None:
    desc, negotiated = answer(offer_of("m=audio 4000 RTP/AVP 8\na=rtpmap:8 PCMA/8000"))
    assert desc.media[0].formats == ("8",)
    assert (negotiated.codec, negotiated.payload_type, negotiated.local_payload_type) == (
        "PCMA", 8, 8)
    with pytest.raises(SdpError):
        answer_offer(offer_of("m=audio 4000 RTP/AVP 8"), ("PCMU",), HOST, PORT)


def test_our_codec_list_limits_the_answer() -> None:
    desc, negotiated = answer(offer_of(AUDIO), codecs=("PCMA",))
    assert desc.media[0].formats == ("8", "101") and negotiated.codec == "PCMA"


def test_a_dynamic_number_for_a_known_codec_is_the_senders_number() -> None:
    desc, negotiated = answer(offer_of("m=audio 4000 RTP/AVP 112\na=rtpmap:112 pcmu/8000"))
    assert desc.media[0].formats == ("112",)
    assert (negotiated.codec, negotiated.payload_type) == ("PCMU", 112)


@pytest.mark.parametrize("rtpmap", ["PCMU/16000", "PCMU/8000/2"])
def test_a_codec_at_another_rate_or_in_stereo_is_not_ours(rtpmap: str) -> None:
    with pytest.raises(SdpError):
        answer_offer(offer_of(f"m=audio 4000 RTP/AVP 96\na=rtpmap:96 {rtpmap}"),
                     CODECS, HOST, PORT)


@pytest.mark.parametrize("pt", [96, 127, 100])
def test_telephone_event_is_answered_with_the_offerers_number(pt: int) -> None:
    body = offer_of(f"m=audio 4000 RTP/AVP 0 {pt}\na=rtpmap:{pt} telephone-event/8000\n"
                    f"a=fmtp:{pt} 0-15")
    desc, negotiated = answer(body)
    media = desc.media[0]
    assert media.formats == ("0", str(pt))
    assert media.codec(pt) == sdp.RtpMap("TELEPHONE-EVENT", 8000)
    assert media.fmtp == {pt: "0-15"}
    assert b"101" not in answer_offer(body, CODECS, HOST, PORT)[0].split(b"m=audio")[1]
    assert negotiated.telephone_event == negotiated.local_telephone_event == pt


@pytest.mark.parametrize("offered, answered", [
    ("0-16", "0-16"), ("0-15", "0-15"), (None, "0-15"), ("0-15,66,70", "0-15"),
    ("0-11", "0-11"), ("0-9,11", "0-9,11"), ("garbage", "0-15"),
])
def test_telephone_event_fmtp_is_what_both_handle(offered: str | None, answered: str) -> None:
    fmtp = f"\na=fmtp:96 {offered}" if offered is not None else ""
    desc, _ = answer(offer_of(f"m=audio 4000 RTP/AVP 0 96\na=rtpmap:96 telephone-event/8000"
                              f"{fmtp}"))
    assert desc.media[0].fmtp == {96: answered}


def test_telephone_event_with_no_event_we_handle_is_left_out() -> None:
    desc, negotiated = answer(offer_of("m=audio 4000 RTP/AVP 0 96\n"
                                       "a=rtpmap:96 telephone-event/8000\na=fmtp:96 66,70"))
    assert desc.media[0].formats == ("0",) and negotiated.telephone_event is None


def test_an_offer_with_ptime_30() -> None:
    desc, negotiated = answer(offer_of("m=audio 4000 RTP/AVP 0\na=ptime:30"))
    assert negotiated.ptime == 30 and desc.media[0].ptime == 30
    desc, negotiated = answer(offer_of("m=audio 4000 RTP/AVP 0"))
    assert negotiated.ptime == 20 and desc.media[0].ptime is None


# -- direction --------------------------------------------------------------------------------

@pytest.mark.parametrize("offered, answered", [
    ("sendrecv", Direction.SENDRECV), ("sendonly", Direction.RECVONLY),
    ("recvonly", Direction.SENDONLY), ("inactive", Direction.INACTIVE),
])
def test_direction_is_mirrored(offered: str, answered: Direction) -> None:
    desc, negotiated = answer(offer_of(f"m=audio 4000 RTP/AVP 0\na={offered}"))
    assert desc.media[0].direction is answered
    assert negotiated.local_direction is answered
    assert negotiated.remote_direction is Direction(offered)
    assert negotiated.held_by_peer is (offered in ("sendonly", "inactive"))


def test_session_level_direction_is_mirrored_too() -> None:
    desc, negotiated = answer(offer_of("m=audio 4000 RTP/AVP 0", session="a=sendonly\r\n"))
    assert desc.media[0].direction is Direction.RECVONLY


@pytest.mark.parametrize("offered, want, answered", [
    ("sendrecv", Direction.SENDONLY, Direction.SENDONLY),    # we hold
    ("sendonly", Direction.SENDONLY, Direction.INACTIVE),    # both hold
    ("recvonly", Direction.RECVONLY, Direction.INACTIVE),
    ("sendrecv", Direction.INACTIVE, Direction.INACTIVE),
    ("recvonly", Direction.SENDRECV, Direction.SENDONLY),    # never wider than mirrored
])
def test_the_answerer_may_narrow_the_direction(offered: str, want: Direction,
                                               answered: Direction) -> None:
    desc, negotiated = answer(offer_of(f"m=audio 4000 RTP/AVP 0\na={offered}"), want=want)
    assert desc.media[0].direction is answered is negotiated.local_direction


# -- where to send ----------------------------------------------------------------------------

def test_remote_address_from_media_level_connection() -> None:
    _, negotiated = answer(offer_of("m=audio 4000 RTP/AVP 0\nc=IN IP4 127.0.0.9"))
    assert negotiated.remote == ("127.0.0.9", 4000) and negotiated.sends


@pytest.mark.parametrize("address", ["192.0.2.1", "pbx.example.com", "127.0.0.0",
                                     "127.255.255.255", "::1"])
def test_a_non_loopback_address_is_answered_but_not_sent_to(address: str) -> None:
    kind = "IP6" if ":" in address else "IP4"
    body = offer_of("m=audio 4000 RTP/AVP 0").replace(
        b"c=IN IP4 127.0.0.7", f"c=IN {kind} {address}".encode())
    desc, negotiated = answer(body)
    assert desc.media[0].port == PORT
    assert negotiated.remote is None and not negotiated.sends
    assert negotiated.local_direction is Direction.SENDRECV


def test_a_public_address_is_usable_outside_local_mode() -> None:
    _, negotiated = answer(offer_of("m=audio 4000 RTP/AVP 0", connection="192.0.2.1"),
                           local_only=False)
    assert negotiated.remote == ("192.0.2.1", 4000)
    _, negotiated = answer(offer_of("m=audio 4000 RTP/AVP 0", connection="pbx.example"),
                           local_only=False)
    assert negotiated.remote is None        # a name would be a DNS query: never


@pytest.mark.parametrize("offered, peer, ours", [
    ("sendrecv", Direction.SENDONLY, Direction.RECVONLY),
    ("recvonly", Direction.INACTIVE, Direction.INACTIVE),
])
def test_rfc2543_hold_with_address_zero(offered: str, peer: Direction, ours: Direction) -> None:
    desc, negotiated = answer(offer_of(f"m=audio 4000 RTP/AVP 0\na={offered}",
                                       connection="0.0.0.0"))
    assert negotiated.remote is None and not negotiated.sends and negotiated.held_by_peer
    assert negotiated.remote_direction is peer and negotiated.local_direction is ours
    assert desc.media[0].direction is ours


# -- the byte-level helpers keep working ------------------------------------------------------

SIPP_OFFER = (b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n"
              b"c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6004 RTP/AVP 0\r\n"
              b"a=rtpmap:0 PCMU/8000\r\n")


def test_answer_is_the_same_object_for_the_same_offer() -> None:
    first = sdp.answer(SIPP_OFFER, CODECS, HOST, PORT)
    assert sdp.answer(SIPP_OFFER, list(CODECS), HOST, PORT) is first
    assert first == (b"v=0\r\no=twsip 1 1 IN IP4 127.0.0.1\r\ns=twsip\r\n"
                     b"c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n"
                     b"a=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")


def test_offer_and_audio_payloads() -> None:
    body = sdp.offer(CODECS, HOST, PORT)
    assert sdp.offer(CODECS, HOST, PORT) is body
    assert sdp.audio_payloads(body) == [(0, "PCMU"), (8, "PCMA"), (101, "TELEPHONE-EVENT")]
    media = parse(body).media[0]
    assert media.fmtp == {101: "0-16"} and media.direction is Direction.SENDRECV
    assert sdp.audio_payloads(offer_of("m=video 1 RTP/AVP 31", "m=audio 2 RTP/AVP 8 99")) \
        == [(8, "PCMA"), (99, "")]
    with pytest.raises(SdpError):
        sdp.audio_payloads(offer_of("m=video 1 RTP/AVP 31"))


def test_answers_to_different_ports_share_the_negotiation() -> None:
    a, first = answer_offer(SIPP_OFFER, CODECS, HOST, 30000)
    b, second = answer_offer(SIPP_OFFER, CODECS, HOST, 30002)
    assert first is second and a != b and b"m=audio 30002 " in b


# -- the offerer's side ------------------------------------------------------------------------

def our_offer(direction: Direction = Direction.SENDRECV) -> bytes:
    return sdp.build_offer(CODECS, HOST, PORT, 7, direction=direction)


def answer_body(*media: str, connection: str = "127.0.0.7") -> bytes:
    return offer_of(*media, connection=connection)


def test_build_offer_options() -> None:
    desc = parse(sdp.build_offer(("PCMA",), HOST, PORT, 77, version=80,
                                 direction=Direction.SENDONLY, telephone_event=96, ptime=30))
    assert (desc.origin.session_id, desc.origin.version) == (77, 80)
    media = desc.media[0]
    assert (media.formats, media.direction, media.ptime) == (("8", "96"), Direction.SENDONLY,
                                                             30)
    assert media.codec(96) == sdp.RtpMap("TELEPHONE-EVENT", 8000)
    no_events = parse(sdp.build_offer(CODECS, HOST, PORT, telephone_event=None)).media[0]
    assert no_events.formats == ("0", "8")
    with pytest.raises(SdpError):
        sdp.build_offer(("G729",), HOST, PORT)


def test_process_an_answer() -> None:
    negotiated = process_answer(our_offer(), answer_body(
        "m=audio 5000 RTP/AVP 8 96\na=rtpmap:96 telephone-event/8000\na=ptime:30"))
    assert negotiated.remote == ("127.0.0.7", 5000)
    assert (negotiated.codec, negotiated.payload_type, negotiated.local_payload_type) == (
        "PCMA", 8, 8)
    assert (negotiated.telephone_event, negotiated.local_telephone_event) == (96, 101)
    assert negotiated.ptime == 30
    assert negotiated.local_direction is negotiated.remote_direction is Direction.SENDRECV


def test_an_answer_without_telephone_event() -> None:
    negotiated = process_answer(our_offer(), answer_body("m=audio 5000 RTP/AVP 0"))
    assert negotiated.telephone_event is None and negotiated.local_telephone_event is None


@pytest.mark.parametrize("mine, theirs, local", [
    (Direction.SENDONLY, "recvonly", Direction.SENDONLY),
    (Direction.SENDONLY, "inactive", Direction.INACTIVE),
    (Direction.SENDRECV, "recvonly", Direction.SENDONLY),
    (Direction.INACTIVE, "inactive", Direction.INACTIVE),
    (Direction.RECVONLY, "sendonly", Direction.RECVONLY),
])
def test_direction_from_the_answer(mine: Direction, theirs: str, local: Direction) -> None:
    negotiated = process_answer(our_offer(mine), answer_body(
        f"m=audio 5000 RTP/AVP 0\na={theirs}"))
    assert negotiated.local_direction is local
    assert negotiated.remote_direction is Direction(theirs)


@pytest.mark.parametrize("media, reason", [
    (("m=audio 0 RTP/AVP 0",), "refuses"),
    (("m=audio 5000 RTP/AVP 18",), "none of the codecs"),
    (("m=audio 5000 RTP/AVP 101\na=rtpmap:101 telephone-event/8000",), "none of the codecs"),
    (("m=audio 5000 RTP/AVP 0", "m=video 0 RTP/AVP 31"), "m= lines"),
    ((), "m= lines"),
    (("m=video 5000 RTP/AVP 31",), "not the audio"),
    (("m=audio 5000 RTP/SAVP 0",), "not the audio"),
])
def test_answers_that_refuse_our_stream(media: tuple[str, ...], reason: str) -> None:
    with pytest.raises(SdpError, match=reason):
        process_answer(our_offer(), answer_body(*media))


def test_an_answer_on_hold_by_address_zero() -> None:
    negotiated = process_answer(our_offer(), answer_body("m=audio 5000 RTP/AVP 0",
                                                         connection="0.0.0.0"))
    assert negotiated.remote is None and negotiated.held_by_peer
    assert negotiated.local_direction is Direction.RECVONLY


def test_directions_convert_to_the_rtp_layers_by_value() -> None:
    from twsip.media.endpoint import Direction as RtpDirection
    for direction in Direction:
        assert RtpDirection(direction).value == direction.value
        assert Direction(RtpDirection(direction.value)) is direction


# -- the negotiation caches key on the SDP without its o= numbers (issue 14, set-up rate) --

def test_offers_differing_only_in_their_o_numbers_share_one_cache_entry() -> None:
    from twsip.sip import offer_answer

    one = sdp.build_offer(["PCMU"], "127.0.0.1", 30000, session_id=111)
    two = sdp.build_offer(["PCMU"], "127.0.0.1", 30000, session_id=222, version=7)
    assert one != two and offer_answer.cache_key(one) == offer_answer.cache_key(two)
    assert offer_answer.cache_key(one) == one.replace(b" 111 111 ", b" 0 0 ", 1)
    assert answer_offer(one, ["PCMU"], "127.0.0.1", 40000) \
        == answer_offer(two, ["PCMU"], "127.0.0.1", 40000)
    # Numbers the parser refuses are left as they are, so they still fail the same way.
    bad = one.replace(b" 111 111 ", b" 111 x1 ", 1)
    assert offer_answer.cache_key(bad) == bad
    with pytest.raises(SdpError):
        answer_offer(bad, ["PCMU"], "127.0.0.1", 40000)
    too_long = one.replace(b" 111 111 ", b" 111 " + b"1" * 21 + b" ", 1)
    assert offer_answer.cache_key(too_long) == too_long
    with pytest.raises(SdpError):
        answer_offer(too_long, ["PCMU"], "127.0.0.1", 40000)


def test_answers_differing_only_in_their_o_numbers_agree_alike() -> None:
    from twsip.sip.offer_answer import MediaSession

    agreed = []
    for session_id in (5, 6):
        caller = MediaSession(["PCMU", "PCMA"], "127.0.0.1", 30000)
        offer = caller.make_offer()
        callee = MediaSession(["PCMA"], "127.0.0.1", 40000, session_id=session_id)
        answer, _ = callee.receive_offer(offer)
        agreed.append(caller.receive_answer(answer))
    assert agreed[0] == agreed[1] and agreed[0].codec == "PCMA"
