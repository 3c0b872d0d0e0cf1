"""SDP for twsip's calls: the one module the dialogs import.

The work lives in two modules below this one: `sdp_model` reads an SDP (RFC 4566) into a
typed model, `offer_answer` negotiates (RFC 3264) and keeps a dialog's offer/answer state in
a `MediaSession`. This module names both, and keeps the original byte-level helpers
(`offer`, `answer`, `audio_payloads`) for the callers that only need a body or a yes/no:
`answer` is on the hot path of every incoming call (screening checks the offer, the UAS
answers it), so it keeps a cache of whole answer bodies.
"""

from __future__ import annotations

from typing import Sequence

from twsip.sip.offer_answer import (
    CODECS,
    DEFAULT_PTIME,
    TELEPHONE_EVENT,
    MediaSession,
    NegotiatedMedia,
    OfferAnswerStateError,
    answer_offer,
    build_offer,
    cache_key,
    process_answer,
)
from twsip.sip.sdp_model import (
    STATIC_RTPMAP,
    Connection,
    Direction,
    Media,
    Origin,
    RtpMap,
    SdpError,
    SessionDescription,
    parse,
)

__all__ = [
    # byte-level helpers (cached)
    "offer", "answer", "audio_payloads", "build_answer", "build_offer",
    # the model
    "parse", "SessionDescription", "Media", "Origin", "Connection", "RtpMap", "Direction",
    "SdpError", "STATIC_RTPMAP",
    # negotiation
    "answer_offer", "process_answer", "NegotiatedMedia", "MediaSession",
    "OfferAnswerStateError", "CODECS", "TELEPHONE_EVENT", "DEFAULT_PTIME",
]


def audio_payloads(body: bytes) -> list[tuple[int, str]]:
    """The first audio stream's payloads as (payload type, encoding name, upper case; ""
    when neither an rtpmap nor RFC 3551 names it)."""
    for media in parse(body).media:
        if media.kind == "audio" and media.is_rtp:
            return [(pt, rtpmap.encoding if (rtpmap := media.codec(pt)) else "")
                    for pt in media.payload_types]
    raise SdpError("the offer has no audio stream")


def build_answer(offer: bytes, codecs: Sequence[str], host: str, port: int,
                 session_id: int = 1) -> bytes:
    """An answer outside any session (o= version = session id); see `answer_offer`."""
    return answer_offer(offer, codecs, host, port, session_id=session_id)[0]


# Whole bodies, for the callers that need nothing else: under load the same few recur on
# every call (one offer per caller; SIPp sends one SDP for all its calls). Failures
# (SdpError) are never kept, nor large bodies.
_CACHE_SIZE = 256
_cache: dict[tuple[object, ...], bytes] = {}


def offer(codecs: Sequence[str], host: str, port: int) -> bytes:
    """`build_offer`, remembered."""
    key = ("offer", tuple(codecs), host, port)
    body = _cache.get(key)
    if body is None:
        body = build_offer(codecs, host, port)
        _remember(key, body)
    return body


def answer(offer_body: bytes, codecs: Sequence[str], host: str, port: int) -> bytes:
    """`build_answer`, remembered (raises `SdpError` the same way)."""
    key = (cache_key(offer_body), tuple(codecs), host, port)  # the answer's o= is ours
    body = _cache.get(key)
    if body is None:
        body = build_answer(offer_body, codecs, host, port)
        if len(offer_body) <= 4096:
            _remember(key, body)
    return body


def _remember(key: tuple[object, ...], body: bytes) -> None:
    if len(_cache) >= _CACHE_SIZE:
        _cache.clear()
    _cache[key] = body
