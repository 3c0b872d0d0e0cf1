"""G.711 codecs (ITU-T G.711, RTP payload types from RFC 3551 §4.5.14): PCMU = 0, PCMA = 8.

Audio inside twsip is 16-bit signed linear PCM, 8000 Hz, mono, native byte order (what
`audioop` works on); a codec turns it into one byte per sample and back. The conversion is
`audioop`'s C code, no table of our own, so one call encodes a whole file at once and a
packet is a slice of the result.

`CODECS` is the registry by SDP encoding name (upper case, as the builder's flow JSON and SDP
rtpmap spell them); `codec_for` looks one up case-insensitively.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from twsip.media._audioop import audioop

__all__ = ["Codec", "PCMU", "PCMA", "CODECS", "STATIC_PAYLOAD_TYPES", "codec_for",
           "CLOCK_RATE", "PTIME_MS", "SAMPLES_PER_PACKET", "SAMPLE_WIDTH"]

CLOCK_RATE = 8000
PTIME_MS = 20
SAMPLES_PER_PACKET = CLOCK_RATE * PTIME_MS // 1000  # 160
SAMPLE_WIDTH = 2  # bytes per linear sample


@dataclass(frozen=True)
class Codec:
    """One G.711 variant: its SDP name, static payload type and the two conversions.

    `payload_type` is the static number of RFC 3551; what a sender actually puts in its
    packets is the number the receiver's SDP maps to this codec (usually the same).
    """

    name: str
    payload_type: int
    _encode: Callable[[bytes, int], bytes]
    _decode: Callable[[bytes, int], bytes]
    clock_rate: int = CLOCK_RATE

    def encode(self, linear: bytes) -> bytes:
        """16-bit linear samples -> one G.711 byte each (an odd trailing byte is dropped)."""
        if len(linear) & 1:
            linear = linear[:-1]
        return self._encode(linear, SAMPLE_WIDTH)

    def decode(self, payload: bytes) -> bytes:
        """G.711 bytes -> 16-bit linear samples, two bytes each."""
        return self._decode(payload, SAMPLE_WIDTH)

    @property
    def silence(self) -> bytes:
        """The encoded form of one zero sample (0xFF for PCMU, 0xD5 for PCMA)."""
        return self._encode(b"\x00\x00", SAMPLE_WIDTH)


PCMU = Codec("PCMU", 0, audioop.lin2ulaw, audioop.ulaw2lin)
PCMA = Codec("PCMA", 8, audioop.lin2alaw, audioop.alaw2lin)

CODECS: dict[str, Codec] = {PCMU.name: PCMU, PCMA.name: PCMA}
STATIC_PAYLOAD_TYPES: dict[int, Codec] = {PCMU.payload_type: PCMU, PCMA.payload_type: PCMA}


def codec_for(name: str) -> Codec:
    """The codec of an SDP encoding name ("PCMU", "pcma", "PCMU/8000"); `KeyError` otherwise."""
    key = name.split("/", 1)[0].strip().upper()
    try:
        return CODECS[key]
    except KeyError:
        raise KeyError(f"unknown audio codec {name!r}; twsip knows "
                       f"{', '.join(CODECS)}") from None
