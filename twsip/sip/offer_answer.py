"""RFC 3264 offer/answer for one audio stream over RTP/AVP, and what it leaves the RTP layer.

twsip's phones have one RTP endpoint per call, G.711 (PCMU, PCMA) and RFC 4733
telephone-event, no SRTP and no video. So an answer accepts the first audio RTP/AVP stream
with a codec in common and refuses every other stream with port 0, one answer m= line per
offered m= line in the same order (§6). What both sides agreed is a `NegotiatedMedia`:
where to send, with which payload type numbers (the *receiver's*: telephone-event is
dynamic and differs between peers), at which ptime, and in which direction.

`MediaSession` is the per-dialog memory RFC 3264 asks for: the o= session id and version
(§5, §8: a changed SDP bumps the version, an unchanged one keeps it), the offer in flight,
the hold wish that a later refresh must not undo, and the agreed state, which a failed
re-offer leaves in place (§8).
"""

from __future__ import annotations

import itertools
import re
import time
from dataclasses import dataclass
from typing import Sequence

from twsip.lexical import Address, ipv4_literal, is_loopback, wire_number
from twsip.sip.sdp_model import Direction, Media, SdpError, SessionDescription, parse

__all__ = ["CODECS", "TELEPHONE_EVENT", "NegotiatedMedia", "OfferAnswerStateError",
           "build_offer", "answer_offer", "process_answer", "MediaSession"]

# The codecs we can send and receive: name -> (static payload type, rtpmap).
CODECS = {
    "PCMU": (0, "PCMU/8000"),
    "PCMA": (8, "PCMA/8000"),
}
TELEPHONE_EVENT = 101   # our own dynamic number for RFC 4733 events in offers
_CLOCK_RATE = 8000
_EVENT_NAME = "TELEPHONE-EVENT"
_EVENTS_WE_HANDLE = frozenset(range(17))   # RFC 4733 DTMF 0-9 * # A-D, and flash (16)
DEFAULT_PTIME = 20


class OfferAnswerStateError(RuntimeError):
    """An offer or answer at a moment RFC 3264 §4 forbids it (an offer while ours is
    pending: the dialog owes 491; an answer with no offer out). Not an `SdpError`, so it
    is never mistaken for a 488."""


@dataclass(frozen=True, slots=True)
class NegotiatedMedia:
    """The agreed audio stream, as the RTP endpoint needs it.

    `remote` is None when nothing may be sent there: an address outside 127.0.0.0/8 in
    local mode, a name rather than a literal, or RFC 2543's 0.0.0.0 hold (RFC 3264 §8.4:
    neither RTP nor RTCP goes to the peer). Payload types: send with `payload_type` and
    `telephone_event` (the peer's numbers; None when it takes no telephone-event), read
    incoming packets by `local_payload_type` and `local_telephone_event` (our SDP's).
    `remote_direction` is the peer's, with a 0.0.0.0 hold already folded in (it then
    receives nothing); `local_direction` is what our SDP said.
    """

    remote: Address | None
    codec: str
    payload_type: int
    telephone_event: int | None
    ptime: int
    local_direction: Direction
    remote_direction: Direction
    local_payload_type: int
    local_telephone_event: int | None
    index: int = 0          # which m= line carries the audio

    @property
    def sends(self) -> bool:
        """RTP may go out now (direction allows it and there is somewhere to send)."""
        return self.remote is not None and self.local_direction.sends

    @property
    def held_by_peer(self) -> bool:
        """The peer put us on hold (sendonly, inactive or 0.0.0.0): for HELD events."""
        return not self.remote_direction.receives


# -- building our SDP ------------------------------------------------------------------------

def _body(username: str, session_id: int, version: int, host: str, rest: str) -> bytes:
    return (f"v=0\r\no={username} {session_id} {version} IN IP4 {host}\r\n"
            f"{rest}").encode("ascii")


def _session_head(host: str) -> str:
    return f"s=twsip\r\nc=IN IP4 {host}\r\nt=0 0\r\n"


def _audio_tail(payloads: Sequence[tuple[int, str]], event: tuple[int, str] | None,
                ptime: int | None, direction: Direction) -> str:
    """Everything of an audio m= line after its port: formats, rtpmaps, fmtp, direction."""
    formats = [pt for pt, _ in payloads]
    lines = [f"a=rtpmap:{pt} {rtpmap}" for pt, rtpmap in payloads]
    fmtp = []
    if event is not None:
        formats.append(event[0])
        lines.append(f"a=rtpmap:{event[0]} telephone-event/{_CLOCK_RATE}")
        fmtp.append(f"a=fmtp:{event[0]} {event[1]}")
    lines += fmtp
    if ptime is not None:
        lines.append(f"a=ptime:{ptime}")
    lines.append(f"a={direction.value}")
    return " RTP/AVP " + " ".join(map(str, formats)) + "\r\n" + "\r\n".join(lines) + "\r\n"


def _offer_rest(codecs: Sequence[str], host: str, port: int, direction: Direction,
                telephone_event: int | None, ptime: int | None) -> str:
    payloads = [CODECS[name] for name in codecs if name in CODECS]
    if not payloads:
        raise SdpError(f"none of the codecs {', '.join(codecs)} is one twsip can offer")
    event = (telephone_event, "0-16") if telephone_event is not None else None
    return (_session_head(host) + f"m=audio {port}"
            + _audio_tail(payloads, event, ptime, direction))


def build_offer(codecs: Sequence[str], host: str, port: int, session_id: int = 1, *,
                version: int | None = None, direction: Direction = Direction.SENDRECV,
                telephone_event: int | None = TELEPHONE_EVENT, ptime: int | None = None,
                username: str = "twsip") -> bytes:
    """An audio offer of our codecs (in our order of preference) plus telephone-event."""
    rest = _offer_rest(codecs, host, port, direction, telephone_event, ptime)
    return _body(username, session_id, session_id if version is None else version, host,
                 rest)


# -- answering -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _AnswerPlan:
    """An answer without our address: the same offer gives the same plan, whatever port
    the call's RTP endpoint got, so the plan is what the hot path caches."""

    before: str             # refused m= lines ahead of the audio one
    after: str              # the audio line after its port, then the later refused lines
    negotiated: NegotiatedMedia

    def rest(self, host: str, port: int) -> str:
        return f"{_session_head(host)}{self.before}m=audio {port}{self.after}"


def _remote(media: Media, local_only: bool) -> tuple[Address | None, bool]:
    """Where this stream's RTP may go, and whether the address is RFC 2543's 0.0.0.0 hold."""
    connection = media.connection
    if connection is None or connection.nettype != "IN" or connection.addrtype != "IP4":
        return None, False
    address = connection.address
    if address == "0.0.0.0":
        return None, True
    allowed = is_loopback(address) if local_only else ipv4_literal(address) is not None
    return ((address, media.port) if allowed and media.port else None), False


def _peer_direction(media: Media, held: bool) -> Direction:
    return media.direction.narrowed(Direction.SENDONLY) if held else media.direction


def _events(fmtp: str | None) -> str | None:
    """The telephone-event fmtp to answer: the offered events we handle (RFC 4733 §2.4.1:
    none named means 0-15), or None when we share none. A list we cannot read counts as
    the default rather than refusing the whole call over DTMF."""
    offered: set[int] = set()
    for item in (fmtp or "0-15").replace(" ", "").split(","):
        low_text, dash, high_text = item.partition("-")
        low = wire_number(low_text)
        high = wire_number(high_text) if dash else low
        if low is None or high is None or high < low:
            offered = set(range(16))
            break
        offered.update(range(low, min(high, 255) + 1))
    shared = sorted(offered & _EVENTS_WE_HANDLE)
    if not shared:
        return None
    ranges: list[str] = []
    start = previous = shared[0]
    for event in shared[1:] + [-2]:
        if event != previous + 1:
            ranges.append(str(start) if start == previous else f"{start}-{previous}")
            start = event
        previous = event
    return ",".join(ranges)


def _refused(media: Media) -> str:
    """A refused stream (§6: port 0, formats copied from the offer)."""
    return f"m={media.kind} 0 {media.proto} {' '.join(media.formats)}\r\n"


def _why_refused(media: Media) -> str | None:
    if media.kind != "audio":
        return f"{media.kind} streams are not supported"
    if media.port == 0:
        return "the offered audio stream is disabled (port 0)"
    if media.proto.upper() != "RTP/AVP":
        return f"audio over {media.proto} is not supported (RTP/AVP only, no SRTP)"
    return None


def _plan_answer(offer: SessionDescription, codecs: Sequence[str], want: Direction | None,
                 local_only: bool) -> _AnswerPlan:
    wanted = {name.upper() for name in codecs if name.upper() in CODECS}
    before: list[str] = []
    after: list[str] = []
    negotiated: NegotiatedMedia | None = None
    reasons: list[str] = []
    for index, media in enumerate(offer.media):
        if negotiated is None:
            reason = _why_refused(media)
            if reason is None:
                found = _accept_audio(index, media, wanted, want, local_only)
                if isinstance(found, str):
                    reason = found
                else:
                    negotiated, tail = found
                    after.append(tail)
                    continue
            reasons.append(reason)
        (before if negotiated is None else after).append(_refused(media))
    if negotiated is None:
        raise SdpError(reasons[0] if reasons else "the offer has no media stream")
    return _AnswerPlan("".join(before), "".join(after), negotiated)


def _accept_audio(index: int, media: Media, wanted: set[str], want: Direction | None,
                  local_only: bool) -> tuple[NegotiatedMedia, str] | str:
    chosen: list[tuple[int, str]] = []
    names: set[str] = set()
    event: tuple[int, str] | None = None
    for pt in media.payload_types:
        rtpmap = media.codec(pt)
        if rtpmap is None or rtpmap.clock_rate != _CLOCK_RATE \
                or rtpmap.parameters not in ("", "1"):
            continue
        name = rtpmap.encoding
        if name in wanted and name not in names:
            names.add(name)
            chosen.append((pt, CODECS[name][1]))
        elif name == _EVENT_NAME and event is None:
            events = _events(media.fmtp.get(pt))
            if events is not None:
                event = (pt, events)
    if not chosen:
        return f"none of the offered codecs is one of {', '.join(sorted(wanted)) or 'ours'}"
    remote, held = _remote(media, local_only)
    peer = _peer_direction(media, held)
    ours = peer.mirrored().narrowed(want)
    event_pt = event[0] if event is not None else None
    negotiated = NegotiatedMedia(
        remote=remote, codec=chosen[0][1].partition("/")[0], payload_type=chosen[0][0],
        telephone_event=event_pt, ptime=media.ptime or DEFAULT_PTIME, local_direction=ours,
        remote_direction=peer, local_payload_type=chosen[0][0],
        local_telephone_event=event_pt, index=index)
    return negotiated, _audio_tail(chosen, event, media.ptime, ours)


# Plans are pure functions of the offer's bytes and our wishes, and under load the same offer
# recurs on every call (SIPp sends one SDP for all its calls): keep the last few. So do
# the offerer's results (SIPp's uac answers every call alike, and our offers differ only in
# the o= line, which the key leaves out). Failures (SdpError) are never kept, nor large
# bodies; a full cache is emptied, which costs one miss per entry, not a growing dict.
_CACHE_SIZE = 256
_MAX_CACHED_BODY = 4096
_plans: dict[tuple[bytes, tuple[str, ...], Direction | None, bool], _AnswerPlan] = {}
_agreed: dict[tuple[str, bytes, bool], NegotiatedMedia] = {}


# The o= line's session id and version are all that differ between the SDPs one peer
# sends on its calls (each call's session has its own id), and nothing in a negotiation
# reads them: only that they are 1-20 ASCII digits (RFC 4566 5.2, `sdp_model`). So the
# caches take bodies with those two numbers as "0 0", and one peer's calls share an entry.
_ORIGIN_NUMBERS = re.compile(rb"v=0\r\no=([^ \r\n]+) [0-9]{1,20} [0-9]{1,20} ")


def cache_key(body: bytes) -> bytes:
    """`body` as the negotiation caches know it: the o= numbers as "0 0" when they are
    valid (any valid pair parses alike), else unchanged."""
    match = _ORIGIN_NUMBERS.match(body)
    if match is None:
        return body
    return b"v=0\r\no=" + match.group(1) + b" 0 0 " + body[match.end():]


def _cached_plan(offer: bytes, codecs: Sequence[str], want: Direction | None,
                 local_only: bool) -> _AnswerPlan:
    key = (cache_key(offer), tuple(codecs), want, local_only)
    plan = _plans.get(key)
    if plan is None:
        plan = _plan_answer(parse(offer), codecs, want, local_only)
        if len(offer) <= _MAX_CACHED_BODY:
            if len(_plans) >= _CACHE_SIZE:
                _plans.clear()
            _plans[key] = plan
    return plan


def _cached_agreement(offer_rest: str, answer: bytes, local_only: bool) -> NegotiatedMedia:
    """`process_answer` for an offer of ours known by everything after its o= line."""
    key = (offer_rest, cache_key(answer), local_only)
    negotiated = _agreed.get(key)
    if negotiated is None:
        offer = _body("twsip", 0, 0, "127.0.0.1", offer_rest)
        negotiated = process_answer(offer, answer, local_only=local_only)
        if len(answer) <= _MAX_CACHED_BODY:
            if len(_agreed) >= _CACHE_SIZE:
                _agreed.clear()
            _agreed[key] = negotiated
    return negotiated


def answer_offer(offer: bytes, codecs: Sequence[str], host: str, port: int, *,
                 session_id: int = 1, version: int | None = None,
                 want: Direction | None = None, local_only: bool = True,
                 username: str = "twsip") -> tuple[bytes, NegotiatedMedia]:
    """Answer an offer once, outside any session (`MediaSession.receive_offer` keeps the
    o= version across a dialog); raises `SdpError` when no stream can be accepted."""
    plan = _cached_plan(offer, codecs, want, local_only)
    body = _body(username, session_id, session_id if version is None else version, host,
                 plan.rest(host, port))
    return body, plan.negotiated


# -- the offerer's side ----------------------------------------------------------------------

def process_answer(offer: bytes | SessionDescription, answer: bytes | SessionDescription, *,
                   local_only: bool = True) -> NegotiatedMedia:
    """What an answer to our offer agreed; `SdpError` when it breaks §6 or refuses our
    audio, which the caller turns into a failed call or a failed re-INVITE."""
    ours = parse(offer) if not isinstance(offer, SessionDescription) else offer
    theirs = parse(answer) if not isinstance(answer, SessionDescription) else answer
    if len(theirs.media) != len(ours.media):
        raise SdpError(f"the answer has {len(theirs.media)} m= lines for the offer's "
                       f"{len(ours.media)} (RFC 3264 §6)")
    candidates = [i for i, m in enumerate(ours.media)
                  if m.kind == "audio" and m.port and m.proto.upper() == "RTP/AVP"]
    if not candidates:
        raise SdpError("our offer has no audio stream to agree on")
    for i in candidates:
        media = theirs.media[i]
        if media.kind != "audio" or media.proto.upper() != "RTP/AVP":
            raise SdpError(f"the answer's m= line {i + 1} is {media.kind} {media.proto}, "
                           f"not the audio RTP/AVP offered")
    # the first of our audio streams the answerer took (ours have one; others' may not)
    index = next((i for i in candidates if theirs.media[i].port), None)
    if index is None:
        raise SdpError("the answer refuses our audio stream (port 0)")
    offered, media = ours.media[index], theirs.media[index]
    our_numbers: dict[str, int] = {}
    for pt in offered.payload_types:
        rtpmap = offered.codec(pt)
        if rtpmap is not None and rtpmap.clock_rate == _CLOCK_RATE:
            our_numbers.setdefault(rtpmap.encoding, pt)
    codec: tuple[str, int] | None = None
    event: int | None = None
    for pt in media.payload_types:
        rtpmap = media.codec(pt)
        if rtpmap is None or rtpmap.clock_rate != _CLOCK_RATE \
                or rtpmap.encoding not in our_numbers:
            continue
        if rtpmap.encoding == _EVENT_NAME:
            event = pt if event is None else event
        elif codec is None and rtpmap.encoding in CODECS:
            codec = (rtpmap.encoding, pt)
    if codec is None:
        raise SdpError("the answer names none of the codecs we offered")
    remote, held = _remote(media, local_only)
    peer = _peer_direction(media, held)
    return NegotiatedMedia(
        remote=remote, codec=codec[0], payload_type=codec[1], telephone_event=event,
        ptime=media.ptime or DEFAULT_PTIME,
        local_direction=offered.direction.narrowed(peer.mirrored()), remote_direction=peer,
        local_payload_type=our_numbers[codec[0]],
        local_telephone_event=our_numbers.get(_EVENT_NAME) if event is not None else None,
        index=index)


# -- one dialog's offer/answer state ---------------------------------------------------------

_session_ids = itertools.count(int(time.time()))


class MediaSession:
    """The offer/answer memory of one dialog (RFC 3264 §4, §8).

    `host` and `port` are our RTP address; change `port` when the endpoint moves (the next
    SDP then differs and its version goes up). `negotiated` is the state in force, None
    until the first exchange completes; `local_sdp`/`remote_sdp` are the bodies it came
    from. A failed exchange (`SdpError`) changes none of them.

    Every call keeps one for as long as it is up (thousands at once): `__slots__` keep
    it small.
    """

    __slots__ = ("codecs", "host", "port", "session_id", "version", "local_only",
                 "telephone_event", "ptime", "username", "negotiated", "local_sdp",
                 "remote_sdp", "wanted", "_sent", "_pending", "_pending_rest",
                 "_pending_wish")

    def __init__(self, codecs: Sequence[str], host: str, port: int, *,
                 session_id: int | None = None, local_only: bool = True,
                 telephone_event: int | None = TELEPHONE_EVENT, ptime: int | None = None,
                 username: str = "twsip") -> None:
        self.codecs = tuple(codecs)
        self.host = host
        self.port = port
        self.session_id = next(_session_ids) if session_id is None else session_id
        self.version = self.session_id   # o= version of the last SDP we sent
        self.local_only = local_only
        self.telephone_event = telephone_event
        self.ptime = ptime
        self.username = username
        self.negotiated: NegotiatedMedia | None = None
        self.local_sdp: bytes | None = None
        self.remote_sdp: bytes | None = None
        # The direction we want (sendonly while we hold): answers to the peer's refreshes
        # narrow to it, so a session refresh never silently takes a call off hold.
        self.wanted = Direction.SENDRECV
        self._sent: str | None = None           # our last SDP without its o= line
        self._pending: bytes | None = None      # our offer awaiting its answer
        self._pending_rest = ""
        self._pending_wish = Direction.SENDRECV

    @property
    def offer_pending(self) -> bool:
        """Our offer is out and unanswered: an incoming offer now is glare (491)."""
        return self._pending is not None

    def _stamp(self, rest: str) -> bytes:
        """Our next SDP: the version goes up only when the content changed (§8)."""
        if self._sent is not None and rest != self._sent:
            self.version += 1
        self._sent = rest
        return _body(self.username, self.session_id, self.version, self.host, rest)

    def make_offer(self, direction: Direction = Direction.SENDRECV) -> bytes:
        """An offer (initial or re-offer); remembered until `receive_answer` or
        `cancel_offer`. `direction`: sendonly to hold, inactive to hold a peer that holds
        us, recvonly, or sendrecv to retrieve."""
        if self._pending is not None:
            raise OfferAnswerStateError("an offer is already waiting for its answer")
        rest = _offer_rest(self.codecs, self.host, self.port, direction,
                           self.telephone_event, self.ptime)
        body = self._stamp(rest)
        self._pending = body
        self._pending_rest = rest
        self._pending_wish = direction
        return body

    def make_hold_offer(self) -> bytes:
        """The re-offer that holds the peer (RFC 3264 §8.4): sendonly, or inactive when
        the peer already holds us."""
        held = self.negotiated is not None and self.negotiated.held_by_peer
        body = self.make_offer(Direction.INACTIVE if held else Direction.SENDONLY)
        # The wish is still "we hold": once the peer retrieves us, answers say sendonly.
        self._pending_wish = Direction.SENDONLY
        return body

    def cancel_offer(self) -> None:
        """Our offer's transaction failed (488, 491, timeout): the old state stays."""
        self._pending = None

    def receive_answer(self, body: bytes) -> NegotiatedMedia:
        """The answer to our pending offer; on `SdpError` the offer is dropped and the
        previous negotiated state stays in force (§8: a failed re-offer changes nothing)."""
        offer = self._pending
        if offer is None:
            raise OfferAnswerStateError("an answer arrived with no offer of ours out")
        self._pending = None
        negotiated = _cached_agreement(self._pending_rest, body, self.local_only)
        self.wanted = self._pending_wish
        self.negotiated, self.local_sdp, self.remote_sdp = negotiated, offer, body
        return negotiated

    def receive_offer(self, body: bytes, want_direction: Direction | None = None
                      ) -> tuple[bytes, NegotiatedMedia]:
        """Answer the peer's offer (initial or re-offer). `want_direction` narrows what we
        agree to (default: what our last offer wished, e.g. still on hold). On `SdpError`
        (488) nothing changes and no version is spent."""
        if self._pending is not None:
            raise OfferAnswerStateError("an offer arrived while ours is pending (glare)")
        want = self.wanted if want_direction is None else want_direction
        plan = _cached_plan(body, self.codecs,
                            None if want is Direction.SENDRECV else want, self.local_only)
        answer = self._stamp(plan.rest(self.host, self.port))
        if want_direction is not None:
            self.wanted = want_direction
        self.negotiated, self.local_sdp, self.remote_sdp = plan.negotiated, answer, body
        return answer, plan.negotiated
