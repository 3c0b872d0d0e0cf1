"""WAV loading: every PCM format becomes 8 kHz mono 16-bit with the right length and pitch;
missing, non-WAV and non-PCM files raise WavError naming the path. Recordings write back."""

from __future__ import annotations

import math
import struct
import wave
from array import array
from pathlib import Path

import pytest

from twsip.media.wav import WavError, WavWriter, load_wav, probe_wav, write_wav


def zero_crossing_frequency(samples: bytes, rate: int = 8000) -> float:
    values = array("h", samples)
    crossings = sum(1 for a, b in zip(values, values[1:]) if (a < 0) != (b < 0))
    return crossings / 2 / (len(values) / rate)


def make_wav(path: Path, *, rate: int, width: int, channels: int, seconds: float = 1.0,
             frequency: float = 440.0) -> Path:
    """A sine at `frequency` in every channel (channel k scaled by 1/(k+1)), PCM WAV."""
    frames = bytearray()
    peak = 0.5 * (2 ** (8 * width - 1) - 1)
    for n in range(round(rate * seconds)):
        value = math.sin(2 * math.pi * frequency * n / rate)
        for channel in range(channels):
            sample = round(peak * value / (channel + 1))
            if width == 1:
                frames.append(sample + 128)  # 8-bit WAV is unsigned
            else:
                frames += sample.to_bytes(width, "little", signed=True)
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(bytes(frames))
    return path


@pytest.mark.parametrize("rate, width, channels", [
    (8000, 1, 1),      # 8-bit unsigned: must be biased, else a DC offset and no crossings
    (44100, 2, 2),     # CD stereo
    (48000, 3, 1),     # 24-bit
    (22050, 4, 1),     # 32-bit
    (16000, 2, 1),     # wideband mono
    (8000, 2, 1),      # already the target format
    (11025, 2, 6),     # 5.1
])
def test_pcm_formats_convert_to_8k_mono_16bit(tmp_path: Path, rate: int, width: int,
                                              channels: int) -> None:
    path = make_wav(tmp_path / "in.wav", rate=rate, width=width, channels=channels)
    info = probe_wav(path)
    assert (info.rate, info.sample_width, info.channels) == (rate, width, channels)
    assert info.duration == pytest.approx(1.0, abs=1e-3)
    samples = load_wav(path)
    assert len(samples) // 2 == pytest.approx(8000, abs=2)  # 1 s at 8000 Hz, 2 bytes each
    assert zero_crossing_frequency(samples) == pytest.approx(440, abs=3)
    values = array("h", samples)
    mean = sum(values) / len(values)
    assert abs(mean) < 200  # no DC offset (an unbiased 8-bit file would sit near -16384)
    expected_peak = 0.5 * 32767 * (sum(1 / (k + 1) for k in range(channels)) / channels)
    assert max(values) == pytest.approx(expected_peak, rel=0.06)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    for function in (probe_wav, load_wav):
        with pytest.raises(WavError, match="no such file") as caught:
            function(path)
        assert caught.value.path == str(path) and str(path) in str(caught.value)


def test_garbage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_bytes(b"this is not audio at all, just text\n" * 4)
    with pytest.raises(WavError, match="not a PCM WAV") as caught:
        load_wav(path)
    assert str(path) in str(caught.value)


def test_truncated_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "short.wav"
    path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfm")
    with pytest.raises(WavError, match="not a PCM WAV"):
        probe_wav(path)


def test_float_wav_is_refused_as_non_pcm(tmp_path: Path) -> None:
    """A 32-bit IEEE float WAV (format tag 3) is RIFF/WAVE but not PCM."""
    data = struct.pack("<4f", 0.0, 0.5, -0.5, 0.0)
    fmt = struct.pack("<HHIIHH", 3, 1, 8000, 32000, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt \
        + b"data" + struct.pack("<I", len(data)) + data
    path = tmp_path / "float.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(WavError, match="not a PCM WAV"):
        load_wav(path)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WavError, match="directory"):
        load_wav(tmp_path)


def test_writer_round_trip(tmp_path: Path) -> None:
    samples = array("h", [0, 1000, -1000, 32767, -32768]).tobytes()
    path = tmp_path / "rec.wav"
    with WavWriter(path) as writer:
        writer.write(samples[:4])
        writer.write(samples[4:])
    assert writer.samples == 5
    with wave.open(str(path), "rb") as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, 8000)
        assert reader.readframes(10) == samples
    write_wav(tmp_path / "two.wav", samples)
    assert load_wav(tmp_path / "two.wav") == samples
    with pytest.raises(ValueError):
        writer.write(samples)
