"""MediaSession: one dialog's offer/answer memory (RFC 3264 §4, §8)."""

from __future__ import annotations

import pytest

from twsip.sip.sdp import (
    Direction,
    MediaSession,
    OfferAnswerStateError,
    SdpError,
    build_offer,
    parse,
)

HOST = "127.0.0.1"


def peer_sdp(media: str, version: int = 1, connection: str = "127.0.0.7") -> bytes:
    return (f"v=0\r\no=peer 900 {version} IN IP4 127.0.0.7\r\ns=-\r\nc=IN IP4 {connection}\r\n"
            f"t=0 0\r\n" + media.replace("\n", "\r\n") + "\r\n").encode("ascii")


PEER_AUDIO = "m=audio 5000 RTP/AVP 0 96\na=rtpmap:96 telephone-event/8000\na=fmtp:96 0-15"


def session() -> MediaSession:
    return MediaSession(("PCMU", "PCMA"), HOST, 30000, session_id=555)


def origin(body: bytes) -> tuple[int, int]:
    o = parse(body).origin
    return o.session_id, o.version


def test_offerer_initial_exchange() -> None:
    s = session()
    offer = s.make_offer()
    assert origin(offer) == (555, 555) and s.offer_pending and s.negotiated is None
    negotiated = s.receive_answer(peer_sdp(PEER_AUDIO))
    assert not s.offer_pending
    assert s.negotiated is negotiated and s.local_sdp == offer
    assert negotiated.remote == ("127.0.0.7", 5000)
    assert (negotiated.telephone_event, negotiated.local_telephone_event) == (96, 101)


def test_a_re_offer_bumps_the_version_an_unchanged_one_keeps_it() -> None:
    s = session()
    s.make_offer()
    s.receive_answer(peer_sdp(PEER_AUDIO))
    refresh = s.make_offer()                    # identical content: same version (§8)
    assert origin(refresh) == (555, 555)
    s.receive_answer(peer_sdp(PEER_AUDIO))
    hold = s.make_hold_offer()
    assert origin(hold) == (555, 556)
    assert parse(hold).media[0].direction is Direction.SENDONLY
    s.receive_answer(peer_sdp(PEER_AUDIO + "\na=recvonly", 2))
    assert s.negotiated is not None and s.negotiated.local_direction is Direction.SENDONLY
    retrieve = s.make_offer(Direction.SENDRECV)
    assert origin(retrieve) == (555, 557)
    s.port = 30002                               # the endpoint moved: content changed
    s.receive_answer(peer_sdp(PEER_AUDIO, 3))
    assert origin(s.make_offer()) == (555, 558)


def test_a_failed_re_offer_keeps_the_old_state() -> None:
    s = session()
    s.make_offer()
    before = s.receive_answer(peer_sdp(PEER_AUDIO))
    local, remote = s.local_sdp, s.remote_sdp
    hold = s.make_hold_offer()
    with pytest.raises(SdpError):
        s.receive_answer(peer_sdp("m=audio 0 RTP/AVP 0", 2))
    assert s.negotiated is before and (s.local_sdp, s.remote_sdp) == (local, remote)
    assert not s.offer_pending
    # the version is never reused for different content: the next offer goes on from it
    assert origin(s.make_offer()) == (555, origin(hold)[1] + 1)


def test_a_cancelled_re_offer_keeps_the_old_state() -> None:
    s = session()
    s.make_offer()
    before = s.receive_answer(peer_sdp(PEER_AUDIO))
    s.make_hold_offer()
    s.cancel_offer()                              # 491 / timeout on the re-INVITE
    assert s.negotiated is before and not s.offer_pending
    assert s.receive_offer(peer_sdp(PEER_AUDIO, 2))[1].local_direction is Direction.SENDRECV


def test_a_refused_initial_offer_leaves_nothing_agreed() -> None:
    s = session()
    s.make_offer()
    with pytest.raises(SdpError):
        s.receive_answer(peer_sdp("m=audio 5000 RTP/AVP 18"))
    assert s.negotiated is None and s.local_sdp is None


def test_answerer_exchange_and_version_rules() -> None:
    s = session()
    answer, negotiated = s.receive_offer(peer_sdp(PEER_AUDIO))
    assert origin(answer) == (555, 555) and s.negotiated is negotiated
    assert parse(answer).media[0].formats == ("0", "96")
    same, _ = s.receive_offer(peer_sdp(PEER_AUDIO))          # unchanged re-offer
    assert same == answer
    held, negotiated = s.receive_offer(peer_sdp(PEER_AUDIO + "\na=sendonly", 2))
    assert origin(held) == (555, 556) and negotiated.held_by_peer
    assert parse(held).media[0].direction is Direction.RECVONLY


def test_a_bad_re_offer_changes_nothing_and_spends_no_version() -> None:
    s = session()
    answer, before = s.receive_offer(peer_sdp(PEER_AUDIO))
    with pytest.raises(SdpError):
        s.receive_offer(peer_sdp("m=audio 5000 RTP/AVP 18", 2))
    assert s.negotiated is before and s.local_sdp == answer
    assert origin(s.receive_offer(peer_sdp(PEER_AUDIO + "\na=sendonly", 3))[0])[1] == 556


def test_hold_survives_the_peers_session_refresh() -> None:
    s = session()
    s.receive_offer(peer_sdp(PEER_AUDIO))
    s.make_hold_offer()
    s.receive_answer(peer_sdp(PEER_AUDIO + "\na=recvonly", 2))
    answer, negotiated = s.receive_offer(peer_sdp(PEER_AUDIO, 3))   # refresh, sendrecv
    assert negotiated.local_direction is Direction.SENDONLY
    answer, negotiated = s.receive_offer(peer_sdp(PEER_AUDIO, 3),
                                         want_direction=Direction.SENDRECV)
    assert negotiated.local_direction is Direction.SENDRECV


def test_holding_a_peer_that_holds_us_is_inactive() -> None:
    s = session()
    s.receive_offer(peer_sdp(PEER_AUDIO + "\na=sendonly"))
    assert parse(s.make_hold_offer()).media[0].direction is Direction.INACTIVE


def test_offer_in_the_2xx_answer_in_the_ack() -> None:
    s = session()
    offer = s.make_offer()
    negotiated = s.receive_answer(peer_sdp("m=audio 5000 RTP/AVP 8"))
    assert negotiated.codec == "PCMA" and s.local_sdp == offer


def test_glare_and_stray_answers_are_state_errors_not_488() -> None:
    s = session()
    with pytest.raises(OfferAnswerStateError):
        s.receive_answer(peer_sdp(PEER_AUDIO))
    s.make_offer()
    with pytest.raises(OfferAnswerStateError):
        s.receive_offer(peer_sdp(PEER_AUDIO))
    with pytest.raises(OfferAnswerStateError):
        s.make_offer()
    assert not issubclass(OfferAnswerStateError, SdpError)


def test_session_ids_differ_between_sessions() -> None:
    a = MediaSession(("PCMU",), HOST, 1)
    b = MediaSession(("PCMU",), HOST, 1)
    assert a.session_id != b.session_id


def test_a_session_offer_is_build_offer() -> None:
    s = session()
    assert s.make_offer() == build_offer(("PCMU", "PCMA"), HOST, 30000, 555)


def test_the_same_answer_to_the_same_offer_content_is_read_once() -> None:
    """Under load every call's session offers alike (only o= differs) and SIPp answers alike:
    the agreement is shared, not recomputed per call."""
    first, second = session(), MediaSession(("PCMU", "PCMA"), HOST, 30000, session_id=9)
    first.make_offer()
    second.make_offer()
    assert first.receive_answer(peer_sdp(PEER_AUDIO)) is second.receive_answer(
        peer_sdp(PEER_AUDIO))
    third = session()
    third.make_offer()
    with pytest.raises(SdpError):
        third.receive_answer(peer_sdp("m=audio 5000 RTP/AVP 18"))
    third.make_offer()
    with pytest.raises(SdpError):                  # failures are never cached as successes
        third.receive_answer(peer_sdp("m=audio 5000 RTP/AVP 18"))
