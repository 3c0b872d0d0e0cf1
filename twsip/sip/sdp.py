"""SDP offer/answer (RFC 3264) for audio, as far as a signalling-only phone needs it.

twsip sends no RTP yet: the SDP advertises the instance's codecs at a port where nothing
listens, which is enough for SIP peers to negotiate and complete calls.
"""

from __future__ import annotations

from twsip.lexical import wire_number

__all__ = ["CODECS", "build_offer", "build_answer", "offer", "answer", "audio_payloads",
           "SdpError"]

# name -> (static payload type, rtpmap)
CODECS = {
    "PCMU": (0, "PCMU/8000"),
    "PCMA": (8, "PCMA/8000"),
}
TELEPHONE_EVENT = 101
_BY_PAYLOAD = {pt: name for name, (pt, _) in CODECS.items()}


class SdpError(ValueError):
    """No usable audio in an offer: the UAS answers 488."""


def _session(host: str, port: int, session_id: int, payloads: list[tuple[int, str]]) -> bytes:
    fmt = " ".join(str(pt) for pt, _ in payloads)
    lines = [
        "v=0",
        f"o=twsip {session_id} {session_id} IN IP4 {host}",
        "s=twsip",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {fmt}",
    ]
    lines += [f"a=rtpmap:{pt} {rtpmap}" for pt, rtpmap in payloads]
    lines += [f"a=fmtp:{pt} 0-16" for pt, rtpmap in payloads if rtpmap.startswith("telephone-event")]
    lines.append("a=sendrecv")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def build_offer(codecs: tuple[str, ...] | list[str], host: str, port: int,
                session_id: int = 1) -> bytes:
    payloads = [(CODECS[c][0], CODECS[c][1]) for c in codecs]
    payloads.append((TELEPHONE_EVENT, "telephone-event/8000"))
    return _session(host, port, session_id, payloads)


def audio_payloads(body: bytes) -> list[tuple[int, str]]:
    """The first audio stream's payloads as (payload type, encoding name, upper case)."""
    rtpmap: dict[int, str] = {}
    formats: list[int] | None = None
    for raw in body.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if line.startswith("m="):
            if formats is not None:
                break
            parts = line[2:].split()
            if len(parts) >= 4 and parts[0] == "audio":
                formats = [_payload_type(p, line) for p in parts[3:]]
        elif line.startswith("a=rtpmap:") and formats is not None:
            pt_text, _, encoding = line[9:].partition(" ")
            rtpmap[_payload_type(pt_text, line)] = encoding.partition("/")[0].upper()
    if formats is None:
        raise SdpError("the offer has no audio stream")
    return [(pt, rtpmap.get(pt) or _BY_PAYLOAD.get(pt, "")) for pt in formats]


def _payload_type(text: str, line: str) -> int:
    """An RTP/AVP payload type: ASCII digits from 0 to 127 (RFC 3551), else the offer is
    refused (488) rather than half read."""
    number = wire_number(text)
    if number is None or number > 127:
        raise SdpError(f"payload type {text[:12]!r} in {line[:60]!r} is not a number from 0 "
                       f"to 127")
    return number


def build_answer(offer: bytes, codecs: tuple[str, ...] | list[str], host: str, port: int,
                 session_id: int = 1) -> bytes:
    """Answer with the offered payloads we also know, in the offerer's order."""
    wanted = set(codecs)
    chosen: list[tuple[int, str]] = []
    event: tuple[int, str] | None = None
    for pt, name in audio_payloads(offer):
        if name in wanted:
            chosen.append((pt, CODECS[name][1]))
        elif name == "TELEPHONE-EVENT" and event is None:
            event = (pt, "telephone-event/8000")
    if not chosen:
        raise SdpError(f"none of the offered codecs is one of {', '.join(codecs)}")
    if event:
        chosen.append(event)
    return _session(host, port, session_id, chosen)


# Offers and answers are pure functions of their inputs, and under load the same few recur
# on every call (one offer per caller; SIPp sends one SDP for all its calls): keep the last
# few. Failures (SdpError) are never kept, nor large bodies.
_CACHE_SIZE = 256
_cache: dict[tuple, bytes] = {}


def offer(codecs: tuple[str, ...] | list[str], host: str, port: int) -> bytes:
    """`build_offer`, remembered."""
    key = ("offer", tuple(codecs), host, port)
    body = _cache.get(key)
    if body is None:
        body = build_offer(codecs, host, port)
        _remember(key, body)
    return body


def answer(offer_body: bytes, codecs: tuple[str, ...] | list[str], host: str,
           port: int) -> bytes:
    """`build_answer`, remembered (raises `SdpError` the same way)."""
    key = (offer_body, tuple(codecs), host, port)
    body = _cache.get(key)
    if body is None:
        body = build_answer(offer_body, codecs, host, port)
        if len(offer_body) <= 4096:
            _remember(key, body)
    return body


def _remember(key: tuple, body: bytes) -> None:
    if len(_cache) >= _CACHE_SIZE:
        _cache.clear()
    _cache[key] = body
