"""What an endpoint is told by offer/answer and what it tells a call report.

These types sit in their own module because the endpoint, its send side and its receive
side all need them, and none of those should have to import another to get them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from twsip.media.g711 import PCMU, Codec
from twsip.media.net import Address
from twsip.media.stats import StreamStats

__all__ = ["Direction", "PayloadTypes", "AudioSink", "EndpointCounters", "EndpointReport"]


class Direction(str, Enum):
    """An SDP direction attribute (RFC 3264 §5.1, §6.1), seen from the side that wrote it:
    what an endpoint's media does, and what offer/answer (twsip.sip.sdp) negotiates."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in _SENDING

    @property
    def receives(self) -> bool:
        return self in _RECEIVING

    def mirrored(self) -> Direction:
        """What the other side of a stream says: sendonly <-> recvonly (RFC 3264 §6.1)."""
        return _MIRROR[self]

    def narrowed(self, other: Direction | None) -> Direction:
        """Both sides' wishes at once: sending only if both allow it, receiving likewise.
        An answerer may narrow what the mirrored offer allows (hold), never widen it."""
        if other is None:
            return self
        return _FROM_FLAGS[(self.sends and other.sends, self.receives and other.receives)]


_SENDING = frozenset((Direction.SENDRECV, Direction.SENDONLY))
_RECEIVING = frozenset((Direction.SENDRECV, Direction.RECVONLY))
_MIRROR = {Direction.SENDRECV: Direction.SENDRECV, Direction.SENDONLY: Direction.RECVONLY,
           Direction.RECVONLY: Direction.SENDONLY, Direction.INACTIVE: Direction.INACTIVE}
_FROM_FLAGS = {(True, True): Direction.SENDRECV, (True, False): Direction.SENDONLY,
               (False, True): Direction.RECVONLY, (False, False): Direction.INACTIVE}


@dataclass(frozen=True)
class PayloadTypes:
    """The payload type numbers one SDP gave: the audio codec's and telephone-event's.

    For sending, take them from the receiver's SDP; for receiving, from our own. None for
    `telephone_event` means the SDP offered no telephone-event (DTMF cannot be sent).
    """

    codec: Codec = PCMU
    audio: int | None = None  # None: the codec's static number
    telephone_event: int | None = 101

    @property
    def audio_pt(self) -> int:
        return self.codec.payload_type if self.audio is None else self.audio


class AudioSink(Protocol):
    """Takes decoded audio (16-bit 8 kHz mono); `io.BytesIO` and `WavWriter` both fit."""

    def write(self, samples: bytes, /) -> Any: ...


@dataclass
class EndpointCounters:
    """What happened to datagrams, beyond the per-stream statistics.

    One instance is shared by the endpoint's send and receive sides, so a report reads a
    single set of numbers.
    """

    sent_packets: int = 0
    sent_octets: int = 0  # payload octets
    send_errors: int = 0  # the socket refused (EMSGSIZE, ...)
    refused_destination: int = 0  # remote outside 127.0.0.0/8 or not a literal: not sent
    unsent: int = 0  # no remote known yet, or no socket
    suppressed: int = 0  # not sent because the direction forbids sending
    received_datagrams: int = 0
    malformed: int = 0
    dropped_direction: int = 0  # received while the direction forbids receiving
    rtcp: int = 0  # RTCP multiplexed on the RTP port (RFC 5761), ignored
    unknown_payload: int = 0
    ignored_ssrc: int = 0  # beyond MAX_STREAMS sources


@dataclass(frozen=True)
class EndpointReport:
    """Plain-data summary of an endpoint for call reports."""

    ssrc: int
    local_port: int | None
    remote: Address | None
    direction: str
    counters: dict[str, int]
    streams: tuple[StreamStats, ...]
    digits: tuple[str, ...]
