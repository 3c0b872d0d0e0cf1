"""RTP packets (RFC 3550 §5.1): bytes <-> `RtpPacket`, nothing else.

Every received datagram goes through `decode_rtp` and every sent one through `encode_rtp`,
1000 calls make 100,000 of each a second: both use one precompiled `struct.Struct` for the
fixed header and build no intermediate objects. A datagram that is not a well-formed RTP
version 2 packet raises `RtpError` (one type, a `ValueError`), so a receiver can drop and
count it with one `except` and a bad datagram never escapes `datagramReceived`.

Header extensions (X bit) and padding (P bit) are skipped on decode, as RFC 3550 §5.3.1 lets
a receiver that does not know the profile do; twsip never sends either.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = ["RtpPacket", "RtpError", "decode_rtp", "encode_rtp", "HEADER", "HEADER_SIZE",
           "RTP_VERSION"]

RTP_VERSION = 2
HEADER_SIZE = 12
# V/P/X/CC byte, M/PT byte, sequence, timestamp, SSRC: network order, no padding.
HEADER = struct.Struct("!BBHII")
_EXTENSION = struct.Struct("!HH")
_unpack_header = HEADER.unpack_from
_pack_header = HEADER.pack


class RtpError(ValueError):
    """A datagram that is not a well-formed RTP packet; the message says what is wrong."""


class RtpPacket(NamedTuple):
    """One RTP packet, immutable; a tuple so that decoding one costs one allocation."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()

    def encode(self) -> bytes:
        """The packet on the wire (no padding, no extension)."""
        return encode_rtp(self.payload_type, self.sequence, self.timestamp, self.ssrc,
                          self.payload, self.marker, self.csrcs)


def encode_rtp(payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes,
               marker: bool = False, csrcs: tuple[int, ...] = ()) -> bytes:
    """The bytes of an RTP packet; `ValueError` for a field out of its range.

    This is the send path's only work per packet besides the codec, so the common case
    (no CSRC) is one `Struct.pack` and one concatenation.
    """
    if not 0 <= payload_type <= 127:
        raise ValueError(f"RTP payload type {payload_type} is outside 0..127")
    if len(csrcs) > 15:
        raise ValueError(f"RTP allows at most 15 CSRCs, not {len(csrcs)}")
    try:
        header = _pack_header(0x80 | len(csrcs), (0x80 if marker else 0) | payload_type,
                              sequence, timestamp, ssrc)
        if csrcs:
            header += struct.pack(f"!{len(csrcs)}I", *csrcs)
    except struct.error as exc:
        raise ValueError(f"RTP field out of range: {exc}") from None
    return header + payload


def decode_rtp(data: bytes) -> RtpPacket:
    """Parse one datagram; `RtpError` for anything that is not an RTP version 2 packet.

    Checks every length before it is used (CSRC list, extension, padding), so a truncated or
    hostile datagram is refused instead of read past its end.
    """
    size = len(data)
    if size < HEADER_SIZE:
        raise RtpError(f"RTP packet too short: {size} bytes, the header alone is 12")
    first, second, sequence, timestamp, ssrc = _unpack_header(data)
    if first >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {first >> 6}, only version 2 exists")
    count = first & 0x0F
    offset = HEADER_SIZE + 4 * count
    if offset > size:
        raise RtpError(f"RTP packet too short for its {count} CSRCs: {size} bytes")
    csrcs: tuple[int, ...] = struct.unpack_from(f"!{count}I", data, HEADER_SIZE) if count else ()
    if first & 0x10:
        if offset + 4 > size:
            raise RtpError("RTP header extension is cut short")
        _profile, words = _EXTENSION.unpack_from(data, offset)
        offset += 4 + 4 * words
        if offset > size:
            raise RtpError(f"RTP header extension of {words} words runs past the packet end")
    end = size
    if first & 0x20:
        padding = data[-1]
        if padding == 0 or offset + padding > size:
            raise RtpError(f"RTP padding count {padding} does not fit the packet")
        end -= padding
    return RtpPacket(second & 0x7F, sequence, timestamp, ssrc, bytes(data[offset:end]),
                     bool(second & 0x80), csrcs)
