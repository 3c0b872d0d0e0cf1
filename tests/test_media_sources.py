"""Sources of audio to send: tone pitch and level, endless tone/silence frames, echo
buffering with a bound, and the 'tone:440' / 'silence' / 'echo' spec parser."""

from __future__ import annotations

from array import array

import pytest

from twsip.media.g711 import PCMA, PCMU, Codec
from twsip.media.sources import (
    BufferSource,
    EchoSource,
    SilenceSource,
    ToneSource,
    make_source,
    silence,
    tone,
)


def crossings(samples: bytes) -> int:
    values = array("h", samples)
    return sum(1 for a, b in zip(values, values[1:]) if (a < 0) != (b < 0))


def test_tone_pitch_and_level() -> None:
    samples = tone(440, 1.0, amplitude=0.5)
    assert len(samples) == 16000
    assert crossings(samples) / 2 == pytest.approx(440, abs=1)
    assert max(array("h", samples)) == pytest.approx(16383, abs=2)
    assert silence(0.02) == bytes(320)
    with pytest.raises(ValueError):
        tone(4000, 1.0)


def test_endless_sources_give_full_frames() -> None:
    source = ToneSource(1000)
    frames = [source.next_frame() for _ in range(120)]  # 2.4 s: past the 1 s loop
    assert all(frame is not None and len(frame) == 320 for frame in frames)
    joined = b"".join(f for f in frames if f)
    assert crossings(joined) / 2 / 2.4 == pytest.approx(1000, abs=2)
    assert SilenceSource().next_frame() == bytes(320)


def test_buffer_source_ends_with_short_frame() -> None:
    source = BufferSource(bytes(2 * 400))
    assert [len(source.next_frame() or b"") for _ in range(4)] == [320, 320, 160, 0]


def test_echo_waits_for_a_full_frame_and_is_bounded() -> None:
    echo = EchoSource(max_seconds=0.1)
    assert echo.next_frame() is None
    echo.feed(b"\x01\x00" * 100)
    assert echo.next_frame() is None
    echo.feed(b"\x02\x00" * 2000)  # more than 0.1 s: the oldest goes
    assert echo.next_frame() == b"\x02\x00" * 160
    assert sum(1 for _ in iter(echo.next_frame, None)) == 4  # 800 samples kept, 5 frames


@pytest.mark.parametrize("spec, kind", [("silence", SilenceSource), ("echo", EchoSource),
                                        ("tone", ToneSource), ("Tone:1004.5", ToneSource)])
def test_make_source(spec: str, kind: type) -> None:
    assert isinstance(make_source(spec), kind)


@pytest.mark.parametrize("spec", ["noise", "tone:abc", "tone:0", "tone:5000", "echo:3", ""])
def test_make_source_refuses(spec: str) -> None:
    with pytest.raises(ValueError, match="source"):
        make_source(spec)


@pytest.mark.parametrize("codec", [PCMU, PCMA])
@pytest.mark.parametrize("frequency", [440.0, 1000.0, 1004.5])
def test_cached_tone_payloads_are_the_encoded_frames(codec: Codec, frequency: float) -> None:
    """A tone's payloads come from a loop encoded once and shared; byte for byte they are
    what encoding each frame would give, across the loop's end, and the two calls share
    one position in the tone."""
    by_frame, by_payload = ToneSource(frequency), ToneSource(frequency)
    expected = [codec.encode(by_frame.next_frame() or b"") for _ in range(120)]
    got = [by_payload.next_payload(codec) for _ in range(120)]
    assert got == expected and all(len(p) == 160 for p in got)
    mixed = ToneSource(frequency)
    interleaved = [mixed.next_payload(codec) if n % 2 else codec.encode(mixed.next_frame()
                                                                         or b"")
                   for n in range(120)]
    assert interleaved == expected
    # Shared, not copied: two streams of one pitch hand out the very same bytes objects.
    assert ToneSource(frequency).next_payload(codec) is ToneSource(frequency).next_payload(codec)
    assert SilenceSource().next_payload(codec) == codec.encode(bytes(320))


@pytest.mark.parametrize("codec", [PCMU, PCMA])
def test_buffer_payloads_are_the_encoded_frames_then_end(codec: Codec) -> None:
    samples = tone(700, 0.05)  # 400 samples: 160, 160, 80
    by_frame, by_payload = BufferSource(samples), BufferSource(samples)
    expected = [codec.encode(by_frame.next_frame() or b"") for _ in range(4)]
    got = [by_payload.next_payload(codec) for _ in range(4)]
    assert got == expected and [len(p) for p in got] == [160, 160, 80, 0]
    assert by_payload.remaining == 0
