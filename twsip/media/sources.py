"""Audio to send: generated tones and silence, and the frame sources an endpoint plays from.

Samples are 16-bit signed linear, 8000 Hz mono (see `g711`). A `FrameSource` hands the
endpoint one packet's worth (160 samples at 20 ms) per tick: `ToneSource` and
`SilenceSource` never end (an endpoint left "talking" for a whole call), `EchoSource` sends
back what the endpoint received, `BufferSource` plays a finite buffer (a WAV file).
`make_source` turns a short spec ("tone:440", "silence", "echo") into one, for a command-line
option.
"""

from __future__ import annotations

import math
from array import array
from functools import lru_cache
from typing import Protocol

from twsip.media.g711 import CLOCK_RATE, SAMPLE_WIDTH, SAMPLES_PER_PACKET

__all__ = ["tone", "silence", "FrameSource", "BufferSource", "ToneSource", "SilenceSource",
           "EchoSource", "make_source", "DEFAULT_AMPLITUDE"]

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


class BufferSource:
    """A finite buffer played once, one frame per call; the last frame may be shorter."""

    def __init__(self, samples: bytes) -> None:
        self._samples = samples[: len(samples) - len(samples) % SAMPLE_WIDTH]
        self._offset = 0

    @property
    def remaining(self) -> int:
        """Samples not yet handed out."""
        return (len(self._samples) - self._offset) // SAMPLE_WIDTH

    def next_frame(self) -> bytes | None:
        frame = self._samples[self._offset:self._offset + FRAME_BYTES]
        self._offset += len(frame)
        return frame


class ToneSource:
    """An endless sine tone; one second is generated once and looped."""

    def __init__(self, frequency: float, *, amplitude: float = DEFAULT_AMPLITUDE) -> None:
        self.frequency = frequency
        self._loop = _tone_loop(frequency, amplitude)
        self._offset = 0

    def next_frame(self) -> bytes | None:
        start = self._offset
        end = start + FRAME_BYTES
        frame = self._loop[start:end]
        if len(frame) < FRAME_BYTES:
            end = FRAME_BYTES - len(frame)
            frame += self._loop[:end]
        self._offset = end % len(self._loop)
        return frame


@lru_cache(maxsize=32)
def _tone_loop(frequency: float, amplitude: float) -> bytes:
    """One second of tone, shared by every ToneSource of that pitch: generating it costs
    8000 sin() calls (~2 ms), which 1000 calls starting a tone at once would pay 1000 times.
    A whole number of periods fits one second exactly for a whole frequency, so the loop
    has no seam; a fractional one gets a tiny phase step once a second."""
    return tone(frequency, 1.0, amplitude=amplitude)


class SilenceSource:
    """Endless silence (a phone that is connected but quiet)."""

    _FRAME = bytes(FRAME_BYTES)

    def next_frame(self) -> bytes | None:
        return self._FRAME


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
