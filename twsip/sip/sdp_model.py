"""SDP (RFC 4566) bytes -> a small typed model, read once and strictly where the RFC is.

Offer/answer (RFC 3264) needs every m= line, in order, with what governs it: the effective
connection address (media-level c= over session-level), the effective direction (media-level
attribute over session-level, sendrecv when neither says), and for RTP streams the payload
types with their rtpmap, fmtp and ptime. Everything else is kept raw (`attributes`) or
skipped, so a peer's extensions never make a call fail.

Strict where a wrong reading would be worse than a refusal: the body starts with ``v=0``,
every line is ``<type>=<value>``, numbers are ASCII digits (``str.isdigit`` accepts "²"),
RTP payload types are 0-127, every m= line has a connection address, o= is well formed.
Lenient where peers differ harmlessly: LF-only line ends, blank lines, unknown line types and
attributes, upper/lower case in the media type and protocol, a missing s= or t=. Anything
that cannot be read is an `SdpError`, which the UAS answers with 488.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

from twsip.lexical import wire_number
from twsip.media.session import Direction

__all__ = ["SdpError", "Direction", "Origin", "Connection", "RtpMap", "Media",
           "SessionDescription", "parse", "STATIC_RTPMAP"]


class SdpError(ValueError):
    """An SDP that cannot be read, or an offer/answer that cannot be agreed: the UAS owes
    488 (Not Acceptable Here), the UAC fails the call or keeps the old session."""


_DIRECTIONS = {d.value: d for d in Direction}

# RFC 3551 table 4: static payload types an m= line may list without an rtpmap.
STATIC_RTPMAP: dict[int, tuple[str, int]] = {
    0: ("PCMU", 8000), 3: ("GSM", 8000), 4: ("G723", 8000), 5: ("DVI4", 8000),
    6: ("DVI4", 16000), 7: ("LPC", 8000), 8: ("PCMA", 8000), 9: ("G722", 8000),
    10: ("L16", 44100), 11: ("L16", 44100), 12: ("QCELP", 8000), 13: ("CN", 8000),
    14: ("MPA", 90000), 15: ("G728", 8000), 16: ("DVI4", 11025), 17: ("DVI4", 22050),
    18: ("G729", 8000), 25: ("CELB", 90000), 26: ("JPEG", 90000), 28: ("NV", 90000),
    31: ("H261", 90000), 32: ("MPV", 90000), 33: ("MP2T", 90000), 34: ("H263", 90000),
}

# RFC 4566 §9: token and proto; m= fields must be these, so an answer can copy them verbatim.
_TOKEN = r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+"
_TOKEN_RE = re.compile(_TOKEN + r"\Z", re.ASCII)
_PROTO_RE = re.compile(rf"{_TOKEN}(?:/{_TOKEN})*\Z", re.ASCII)
_PTIME_RE = re.compile(r"([0-9]{1,6})(?:\.[0-9]{1,6})?\Z", re.ASCII)
# o= session id and version are 64-bit in practice (WebRTC, NTP times): 20 digits, not the
# 12 that `wire_number` allows for ports and counters.
_ORIGIN_NUMBER_RE = re.compile(r"[0-9]{1,20}\Z", re.ASCII)


@dataclass(frozen=True, slots=True)
class Origin:
    """o=: who made the description; RFC 3264 §8 compares session id and version."""

    username: str
    session_id: int
    version: int
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Connection:
    """c=: where the media goes; `address` without any /ttl or /count suffix."""

    nettype: str
    addrtype: str
    address: str


@dataclass(frozen=True, slots=True)
class RtpMap:
    """a=rtpmap (or the RFC 3551 static mapping): encoding name upper-cased, as compared."""

    encoding: str
    clock_rate: int
    parameters: str = ""

    def __str__(self) -> str:
        tail = f"/{self.parameters}" if self.parameters else ""
        return f"{self.encoding}/{self.clock_rate}{tail}"


@dataclass(frozen=True, slots=True)
class Media:
    """One m= section with the session-level defaults already applied."""

    kind: str                       # "audio", "video", ... lower-cased
    port: int
    proto: str                      # as written ("RTP/AVP", "RTP/SAVP", "udptl", ...)
    formats: tuple[str, ...]        # as written, in order
    connection: Connection | None   # media-level c=, else the session's
    direction: Direction            # media-level attribute, else the session's, else sendrecv
    rtpmap: Mapping[int, RtpMap] = field(default_factory=dict)   # RTP streams only
    fmtp: Mapping[int, str] = field(default_factory=dict)        # RTP streams only
    ptime: int | None = None        # ms, rounded
    attributes: tuple[tuple[str, str | None], ...] = ()        # every a= line, raw
    port_count: int = 1

    @property
    def is_rtp(self) -> bool:
        return "RTP/" in self.proto.upper()

    @property
    def payload_types(self) -> tuple[int, ...]:
        """The formats as RTP payload types (validated when parsed); () for non-RTP."""
        return tuple(int(f) for f in self.formats) if self.is_rtp else ()

    def codec(self, payload_type: int) -> RtpMap | None:
        """What a payload type means here: its rtpmap, else the static RFC 3551 meaning."""
        found = self.rtpmap.get(payload_type)
        if found is None and payload_type in STATIC_RTPMAP:
            name, rate = STATIC_RTPMAP[payload_type]
            found = RtpMap(name, rate)
        return found


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """A whole SDP: the session-level fields and every m= section, in order."""

    origin: Origin
    name: str
    connection: Connection | None
    direction: Direction
    media: tuple[Media, ...]
    attributes: tuple[tuple[str, str | None], ...] = ()


def parse(body: bytes | str) -> SessionDescription:
    """Read a whole SDP, or raise `SdpError` saying which line is wrong."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    lines = [line.rstrip(" \t\r") for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    if not lines or lines[0] != "v=0":
        raise SdpError("an SDP must start with v=0")
    origin: Origin | None = None
    name = ""
    session_c: Connection | None = None
    session_dir: Direction | None = None
    session_attrs: list[tuple[str, str | None]] = []
    sections: list[_Section] = []
    for number, line in enumerate(lines[1:], 2):
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"SDP line {number} is not <type>=<value>: {line[:40]!r}")
        kind, value = line[0], line[2:]
        section = sections[-1] if sections else None
        if kind == "m":
            sections.append(_Section(value, number))
        elif kind == "a":
            attr, sep, attr_value = value.partition(":")
            pair = (attr, attr_value if sep else None)
            if section is not None:
                section.attribute(pair)
            else:
                session_attrs.append(pair)
                if pair[1] is None and attr in _DIRECTIONS:
                    session_dir = _DIRECTIONS[attr]
        elif kind == "c":
            connection = _connection(value, number)
            if section is not None:
                if section.connection is None:
                    section.connection = connection
            elif session_c is None:
                session_c = connection
        elif section is not None:
            continue  # i=, b=, k= of a stream: nothing offer/answer needs
        elif kind == "o":
            if origin is None:
                origin = _origin(value, number)
        elif kind == "s":
            name = value
    if origin is None:
        raise SdpError("the SDP has no o= line")
    default_dir = session_dir or Direction.SENDRECV
    media = tuple(s.build(session_c, default_dir) for s in sections)
    return SessionDescription(origin, name, session_c, default_dir, media, tuple(session_attrs))


def _origin(value: str, number: int) -> Origin:
    parts = value.split()
    if len(parts) != 6 or not _ORIGIN_NUMBER_RE.match(parts[1]) \
            or not _ORIGIN_NUMBER_RE.match(parts[2]):
        raise SdpError(f"SDP line {number}: o= needs <username> <sess-id> <sess-version> "
                       f"<nettype> <addrtype> <address>, with ASCII digits")
    return Origin(parts[0], int(parts[1]), int(parts[2]), parts[3], parts[4], parts[5])


def _connection(value: str, number: int) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise SdpError(f"SDP line {number}: c= needs <nettype> <addrtype> <address>")
    return Connection(parts[0], parts[1], parts[2].partition("/")[0])


def payload_type(text: str, where: str) -> int:
    """An RTP payload type: ASCII digits from 0 to 127 (RFC 3551), else the SDP is refused
    (488) rather than half read."""
    value = wire_number(text)
    if value is None or value > 127:
        raise SdpError(f"payload type {text[:12]!r} in {where[:60]!r} is not a number from 0 "
                       f"to 127")
    return value


class _Section:
    """An m= section while its attribute lines are being read."""

    __slots__ = ("kind", "port", "port_count", "proto", "formats", "rtp", "connection",
                 "direction", "rtpmap", "fmtp", "ptime", "attributes")

    def __init__(self, value: str, number: int) -> None:
        where = f"m={value}"
        parts = value.split()
        if len(parts) < 4:
            raise SdpError(f"SDP line {number}: m= needs <media> <port> <proto> <fmt> ...")
        kind, port_text, proto = parts[0], parts[1], parts[2]
        if not _TOKEN_RE.match(kind) or not _PROTO_RE.match(proto):
            raise SdpError(f"SDP line {number}: {where[:60]!r} has an odd media or protocol")
        port_part, slash, count_part = port_text.partition("/")
        port = wire_number(port_part)
        count = wire_number(count_part) if slash else 1
        if port is None or port > 65535 or count is None or count < 1:
            raise SdpError(f"SDP line {number}: port {port_text[:12]!r} is not a number from "
                           f"0 to 65535")
        self.kind = kind.lower()
        self.port = port
        self.port_count = count
        self.proto = proto
        self.rtp = "RTP/" in proto.upper()
        for fmt in parts[3:]:
            if not _TOKEN_RE.match(fmt):
                raise SdpError(f"SDP line {number}: format {fmt[:12]!r} is not a token")
            if self.rtp:
                payload_type(fmt, where)
        self.formats = tuple(parts[3:])
        self.connection: Connection | None = None
        self.direction: Direction | None = None
        self.rtpmap: dict[int, RtpMap] = {}
        self.fmtp: dict[int, str] = {}
        self.ptime: int | None = None
        self.attributes: list[tuple[str, str | None]] = []

    def attribute(self, pair: tuple[str, str | None]) -> None:
        self.attributes.append(pair)
        name, value = pair
        if value is None:
            if name in _DIRECTIONS:
                self.direction = _DIRECTIONS[name]
        elif name == "ptime":
            self.ptime = _ptime(value)
        elif self.rtp and name == "rtpmap":
            pt_text, _, mapping = value.strip().partition(" ")
            pt = payload_type(pt_text, f"a={name}:{value}")
            encoding, _, rest = mapping.strip().partition("/")
            rate_text, _, params = rest.partition("/")
            rate = wire_number(rate_text)
            if not encoding or rate is None or rate == 0:
                raise SdpError(f"a=rtpmap:{value[:40]!r} needs <encoding>/<clock rate>")
            self.rtpmap.setdefault(pt, RtpMap(encoding.upper(), rate, params))
        elif self.rtp and name == "fmtp":
            pt_text, _, params = value.strip().partition(" ")
            self.fmtp.setdefault(payload_type(pt_text, f"a={name}:{value}"), params.strip())

    def build(self, session_c: Connection | None, session_dir: Direction) -> Media:
        connection = self.connection or session_c
        if connection is None:
            raise SdpError(f"m={self.kind} has no c= line, nor has the session (RFC 4566 "
                           f"§5.7)")
        return Media(self.kind, self.port, self.proto, self.formats, connection,
                     self.direction or session_dir, self.rtpmap, self.fmtp, self.ptime,
                     tuple(self.attributes), self.port_count)


def _ptime(value: str) -> int:
    found = _PTIME_RE.match(value.strip())
    milliseconds = round(float(found.group(0))) if found else 0
    if milliseconds <= 0:
        raise SdpError(f"a=ptime:{value[:12]!r} is not a packet time in milliseconds")
    return milliseconds
