"""WAV files in and out: any PCM WAV -> 8 kHz mono 16-bit samples, and recordings back out.

A PlayAudio node names a file someone picked by hand: 44.1 kHz stereo, 8-bit, 24-bit, ...
`load_wav` converts whatever PCM it finds to the one format the media layer plays (8000 Hz,
mono, 16-bit signed, native byte order) with `audioop`, so a wrong format never reaches a
call. `probe_wav` reads only the header: the flow checker calls it before a run starts, so a
missing, unreadable or non-PCM file refuses the flow up front, naming the path (and the
checker adds the node), instead of failing half-way through a call.

`WavWriter` writes received audio (already 8 kHz mono 16-bit) as a standard WAV file.
"""

from __future__ import annotations

import os
import sys
import wave
from array import array
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Union

from twsip.media._audioop import audioop
from twsip.media.g711 import CLOCK_RATE, SAMPLE_WIDTH

__all__ = ["WavError", "WavInfo", "probe_wav", "load_wav", "convert_pcm", "WavWriter",
           "write_wav"]

PathLike = Union[str, "os.PathLike[str]"]
_BIG_ENDIAN = sys.byteorder == "big"


class WavError(ValueError):
    """A file that cannot be played: missing, unreadable, not a WAV, or not PCM.

    `path` is the file as given and `reason` says what is wrong in words a person acts on.
    """

    def __init__(self, path: PathLike, reason: str) -> None:
        super().__init__(f"cannot play {os.fspath(path)!s}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason


@dataclass(frozen=True)
class WavInfo:
    """What a WAV header says: enough to judge the file without reading its samples."""

    path: str
    channels: int
    sample_width: int  # bytes per sample: 1, 2, 3 or 4
    rate: int
    frames: int

    @property
    def duration(self) -> float:
        """Seconds of audio in the file."""
        return self.frames / self.rate if self.rate else 0.0


def _open(path: PathLike) -> wave.Wave_read:
    try:
        return wave.open(os.fspath(path), "rb")
    except FileNotFoundError:
        raise WavError(path, "no such file") from None
    except IsADirectoryError:
        raise WavError(path, "is a directory, not a WAV file") from None
    except PermissionError:
        raise WavError(path, "permission denied") from None
    except OSError as exc:
        raise WavError(path, f"cannot be read ({exc.strerror or exc})") from None
    except (wave.Error, EOFError) as exc:
        # wave.Error: not RIFF/WAVE, or a format other than PCM (e.g. "unknown format: 3"
        # for float, 6/7 for A-law/u-law WAVs); EOFError: a header cut short.
        raise WavError(path, f"not a PCM WAV file ({exc or 'truncated header'})") from None


def _info(path: PathLike, reader: wave.Wave_read) -> WavInfo:
    info = WavInfo(os.fspath(path), reader.getnchannels(), reader.getsampwidth(),
                   reader.getframerate(), reader.getnframes())
    if info.channels < 1:
        raise WavError(path, "the header names no audio channel")
    if info.sample_width not in (1, 2, 3, 4):
        raise WavError(path, f"{info.sample_width * 8}-bit samples are not supported "
                             "(8, 16, 24 or 32-bit PCM are)")
    if info.rate < 1:
        raise WavError(path, f"sample rate {info.rate} Hz is not a rate")
    return info


def probe_wav(path: PathLike) -> WavInfo:
    """The header of a playable WAV file, or `WavError`; reads no samples."""
    with _open(path) as reader:
        return _info(path, reader)


def load_wav(path: PathLike) -> bytes:
    """The file's audio as 8000 Hz mono 16-bit signed samples (native byte order).

    `WavError` for a missing, unreadable, non-WAV or non-PCM file, or one whose sample data
    is cut short.
    """
    with _open(path) as reader:
        info = _info(path, reader)
        try:
            frames = reader.readframes(info.frames)
        except (wave.Error, EOFError, OSError) as exc:
            raise WavError(path, f"the sample data cannot be read ({exc})") from None
    frame_size = info.channels * info.sample_width
    usable = len(frames) - len(frames) % frame_size
    return convert_pcm(frames[:usable], info.sample_width, info.channels, info.rate)


def convert_pcm(frames: bytes, width: int, channels: int, rate: int) -> bytes:
    """WAV sample data (little-endian, 8-bit unsigned, wider signed) -> 8 kHz mono 16-bit.

    The order matters for quality and cost: to 16-bit first (`lin2lin`), then mix the
    channels down (every channel weighted equally), then resample once (`ratecv`).
    """
    if width == 1:
        frames = audioop.bias(frames, 1, -128)  # 8-bit WAV samples are unsigned
    elif _BIG_ENDIAN:
        frames = audioop.byteswap(frames, width)
    if width != SAMPLE_WIDTH:
        frames = audioop.lin2lin(frames, width, SAMPLE_WIDTH)
    if channels == 2:
        frames = audioop.tomono(frames, SAMPLE_WIDTH, 0.5, 0.5)
    elif channels > 2:
        interleaved = array("h", frames)
        mixed = b""
        for channel in range(channels):
            part = audioop.mul(interleaved[channel::channels].tobytes(), SAMPLE_WIDTH,
                               1.0 / channels)
            mixed = audioop.add(mixed, part, SAMPLE_WIDTH) if mixed else part
        frames = mixed
    if rate != CLOCK_RATE and frames:
        frames, _state = audioop.ratecv(frames, SAMPLE_WIDTH, 1, rate, CLOCK_RATE, None)
    return frames


class WavWriter:
    """Writes 8000 Hz mono 16-bit samples to a WAV file as they arrive (a recording).

    `write` takes the samples an RTP endpoint decodes, in native byte order; the file is
    complete (its header sizes right) once `close` has run. Usable as a context manager.
    """

    def __init__(self, target: PathLike | IO[bytes]) -> None:
        name = target if isinstance(target, (str, os.PathLike)) else "<stream>"
        try:
            self._writer: wave.Wave_write = wave.open(
                os.fspath(target) if isinstance(target, (str, os.PathLike)) else target, "wb")
        except OSError as exc:
            raise WavError(name, f"cannot be written ({exc.strerror or exc})") from None
        self._writer.setnchannels(1)
        self._writer.setsampwidth(SAMPLE_WIDTH)
        self._writer.setframerate(CLOCK_RATE)
        self.samples = 0
        self.closed = False

    def write(self, samples: bytes) -> None:
        """Append 16-bit samples (an odd trailing byte is dropped)."""
        if self.closed:
            raise ValueError("write to a closed WavWriter")
        if len(samples) & 1:
            samples = samples[:-1]
        self.samples += len(samples) // SAMPLE_WIDTH
        self._writer.writeframesraw(audioop.byteswap(samples, SAMPLE_WIDTH)
                                    if _BIG_ENDIAN else samples)

    def close(self) -> None:
        """Finish the header and close the file; a second call does nothing."""
        if not self.closed:
            self.closed = True
            self._writer.close()

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def write_wav(target: PathLike | IO[bytes], samples: bytes) -> None:
    """Write 8000 Hz mono 16-bit samples as one WAV file."""
    with WavWriter(target) as writer:
        writer.write(samples)
