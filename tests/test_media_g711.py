"""G.711 PCMU/PCMA: payload types, registry, and the round trip's error bound (G.711 keeps
about 13-14 bits of the 16: the error grows with the amplitude but stays within a few %)."""

from __future__ import annotations

from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twsip.media.g711 import CODECS, PCMA, PCMU, SAMPLES_PER_PACKET, codec_for

samples16 = st.lists(st.integers(-32768, 32767), min_size=1, max_size=400)


def test_registry_and_payload_types() -> None:
    assert (PCMU.payload_type, PCMA.payload_type) == (0, 8)
    assert CODECS == {"PCMU": PCMU, "PCMA": PCMA}
    assert codec_for("pcmu") is PCMU and codec_for("PCMA/8000") is PCMA
    assert SAMPLES_PER_PACKET == 160 and PCMU.clock_rate == 8000
    with pytest.raises(KeyError, match="G729"):
        codec_for("G729")


def test_one_byte_per_sample_and_silence() -> None:
    frame = bytes(2 * SAMPLES_PER_PACKET)
    assert len(PCMU.encode(frame)) == 160 and len(PCMA.encode(frame)) == 160
    assert PCMU.silence == b"\xff" and PCMA.silence == b"\xd5"
    assert PCMU.decode(PCMU.encode(frame)) == frame


@given(codec=st.sampled_from([PCMU, PCMA]), values=samples16)
def test_round_trip_error_bound(codec, values: list[int]) -> None:
    decoded = array("h", codec.decode(codec.encode(array("h", values).tobytes())))
    assert len(decoded) == len(values)
    for original, back in zip(values, decoded):
        # Logarithmic quantisation: half a step is at most 1/16 of the value, with a floor of 16
        # (PCMA's smallest step is 16 in 16-bit terms, PCMU's 8) bounds the error.
        assert abs(original - back) <= max(16, abs(original) / 16), (original, back)
        assert original * back >= 0 or abs(original) <= 16  # sign kept
