"""Audio to send: generated tones and silence, and the frame sources an endpoint plays from.

Samples are 16-bit signed linear, 8000 Hz mono (see `g711`). A `FrameSource` hands the
endpoint one packet's worth (160 samples at 20 ms) per tick: `ToneSource` and
`SilenceSource` never end (an endpoint left "talking" for a whole call), `EchoSource` sends
back what the endpoint received, `BufferSource` plays a finite buffer (a WAV file).
`make_source` turns a short spec ("tone:440", "silence", "echo") into one, for a command-line
option.

Sources whose audio does not depend on what was received also offer `next_payload(codec)`:
the same frame as `next_frame`, already encoded. A tone is encoded once per pitch and codec
and shared by every stream playing it, a buffer once per source, so 1000 streams playing a
tone pay no codec call per packet; G.711 encodes each sample on its own, so a slice of the
encoded loop is byte for byte the encoding of the same slice of samples.
"""

from __future__ import annotations

import math
from array import array
from functools import lru_cache
from typing import Protocol

from twsip.media.g711 import CLOCK_RATE, SAMPLE_WIDTH, SAMPLES_PER_PACKET, Codec

__all__ = ["tone", "silence", "FrameSource", "EncodedFrameSource", "BufferSource",
           "ToneSource", "SilenceSource", "EchoSource", "make_source", "DEFAULT_AMPLITUDE"]

DEFAULT_AMPLITUDE = 0.5  # of full scale: loud enough to hear, far from clipping in G.711
FRAME_BYTES = SAMPLES_PER_PACKET * SAMPLE_WIDTH


def tone(frequency: float, seconds: float, *, amplitude: float = DEFAULT_AMPLITUDE,
         rate: int = CLOCK_RATE) -> bytes:
    """A sine tone as 16-bit samples (`seconds` long, `amplitude` a fraction of full scale)."""
    if not 0 < frequency < rate / 2:
        raise ValueError(f"a {frequency} Hz tone cannot be sampled at {rate} Hz")
    if not 0.0 <= amplitude <= 1.0:
        raise ValueError(f"amplitude {amplitude} is outside 0..1")
    count = max(0, round(seconds * rate))
    peak = amplitude * 32767.0
    step = 2.0 * math.pi * frequency / rate
    return array("h", [round(peak * math.sin(step * n)) for n in range(count)]).tobytes()


def silence(seconds: float, *, rate: int = CLOCK_RATE) -> bytes:
    """Zero samples, `seconds` long."""
    return bytes(max(0, round(seconds * rate)) * SAMPLE_WIDTH)


class FrameSource(Protocol):
    """Where an endpoint takes the audio of its next packet from."""

    def next_frame(self) -> bytes | None:
        """Up to one packet of samples; b"" when the source has ended; None for "nothing
        this tick, ask again" (an echo with nothing received yet)."""


class EncodedFrameSource(FrameSource, Protocol):
    """A source that can hand out its next frame already encoded (see the module text)."""

    def next_payload(self, codec: Codec) -> bytes:
        """`codec.encode(next_frame())`, without encoding per packet; b"" at the end."""


class BufferSource:
    """A finite buffer played once, one frame per call; the last frame may be shorter."""

    def __init__(self, samples: bytes) -> None:
        self._samples = samples[: len(samples) - len(samples) % SAMPLE_WIDTH]
        self._offset = 0
        self._codec: Codec | None = None
        self._encoded = b""

    @property
    def remaining(self) -> int:
        """Samples not yet handed out."""
        return (len(self._samples) - self._offset) // SAMPLE_WIDTH

    def next_frame(self) -> bytes | None:
        frame = self._samples[self._offset:self._offset + FRAME_BYTES]
        self._offset += len(frame)
        return frame

    def next_payload(self, codec: Codec) -> bytes:
        """The next frame encoded: the whole buffer is encoded once, on first use."""
        if codec is not self._codec:
            self._codec = codec
            self._encoded = codec.encode(self._samples)
        offset = self._offset
        self._offset = min(len(self._samples), offset + FRAME_BYTES)
        start = offset // SAMPLE_WIDTH
        return self._encoded[start:start + SAMPLES_PER_PACKET]


class ToneSource:
    """An endless sine tone; one second is generated once and looped."""

    def __init__(self, frequency: float, *, amplitude: float = DEFAULT_AMPLITUDE) -> None:
        self.frequency = frequency
        self.amplitude = amplitude
        self._loop = _tone_loop(frequency, amplitude)
        self._frames = len(self._loop) // FRAME_BYTES  # one second: 50 whole frames
        self._index = 0  # the frame to hand out next
        self._codec: Codec | None = None
        self._payloads: tuple[bytes, ...] = ()

    def next_frame(self) -> bytes | None:
        index = self._index
        self._index = (index + 1) % self._frames
        start = index * FRAME_BYTES
        return self._loop[start:start + FRAME_BYTES]

    def next_payload(self, codec: Codec) -> bytes:
        """The next frame, taken from the loop encoded once per pitch and codec."""
        if codec is not self._codec:
            self._codec = codec
            self._payloads = _encoded_tone_loop(self.frequency, self.amplitude, codec)
        index = self._index
        self._index = (index + 1) % self._frames
        return self._payloads[index]


@lru_cache(maxsize=32)
def _tone_loop(frequency: float, amplitude: float) -> bytes:
    """One second of tone, shared by every ToneSource of that pitch: generating it costs
    8000 sin() calls (~2 ms), which 1000 calls starting a tone at once would pay 1000 times.
    A whole number of periods fits one second exactly for a whole frequency, so the loop
    has no seam; a fractional one gets a tiny phase step once a second."""
    samples = tone(frequency, 1.0, amplitude=amplitude)
    assert len(samples) % FRAME_BYTES == 0  # 8000 samples: the loop is whole frames
    return samples


@lru_cache(maxsize=32)
def _encoded_tone_loop(frequency: float, amplitude: float, codec: Codec) -> tuple[bytes, ...]:
    """The loop's frames, each encoded: shared by every ToneSource of that pitch and codec,
    so a packet costs a tuple lookup instead of a codec call and a slice."""
    loop = _tone_loop(frequency, amplitude)
    encoded = codec.encode(loop)
    step = SAMPLES_PER_PACKET
    return tuple(encoded[start:start + step] for start in range(0, len(encoded), step))


class SilenceSource:
    """Endless silence (a phone that is connected but quiet)."""

    _FRAME = bytes(FRAME_BYTES)

    def next_frame(self) -> bytes | None:
        return self._FRAME

    def next_payload(self, codec: Codec) -> bytes:
        """One encoded silent frame, the same object every time."""
        return _encoded_silence(codec)


@lru_cache(maxsize=8)
def _encoded_silence(codec: Codec) -> bytes:
    return codec.encode(SilenceSource._FRAME)


class EchoSource:
    """Sends back the audio the endpoint received, one frame per tick, in order.

    At most `max_seconds` of audio waits; beyond that the oldest is dropped, so a peer that
    sends faster than we pace cannot make the buffer grow without end.
    """

    def __init__(self, max_seconds: float = 1.0) -> None:
        self._buffer = bytearray()
        self._limit = int(max_seconds * CLOCK_RATE) * SAMPLE_WIDTH

    def feed(self, samples: bytes) -> None:
        """Received audio to echo."""
        self._buffer += samples
        excess = len(self._buffer) - self._limit
        if excess > 0:
            del self._buffer[:excess + excess % SAMPLE_WIDTH]

    def next_frame(self) -> bytes | None:
        if len(self._buffer) < FRAME_BYTES:
            return None
        frame = bytes(self._buffer[:FRAME_BYTES])
        del self._buffer[:FRAME_BYTES]
        return frame


def make_source(spec: str) -> ToneSource | SilenceSource | EchoSource:
    """'silence', 'echo', 'tone' (440 Hz) or 'tone:<Hz>' -> a source; `ValueError` otherwise."""
    kind, _, argument = spec.strip().lower().partition(":")
    if kind == "silence" and not argument:
        return SilenceSource()
    if kind == "echo" and not argument:
        return EchoSource()
    if kind == "tone":
        try:
            frequency = float(argument) if argument else 440.0
        except ValueError:
            frequency = math.nan
        if not 0 < frequency < CLOCK_RATE / 2:
            raise ValueError(f"media source {spec!r}: tone frequency must be a number of Hz "
                             f"between 0 and {CLOCK_RATE // 2}")
        return ToneSource(frequency)
    raise ValueError(f"unknown media source {spec!r}: use silence, echo, tone or tone:<Hz>")
