"""RTP packets (RFC 3550 §5.1): round trips, the skipped extension and padding, and refusal
of every malformed datagram with RtpError (never another exception)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twsip.media.rtp import RtpError, RtpPacket, decode_rtp, encode_rtp

packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=400),
    marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
)


@given(packets)
def test_round_trip(packet: RtpPacket) -> None:
    assert decode_rtp(packet.encode()) == packet


def test_header_layout_is_rfc3550() -> None:
    data = encode_rtp(8, 0x1234, 0xDEADBEEF, 0x01020304, b"\xd5" * 3, marker=True)
    assert data == bytes([0x80, 0x88, 0x12, 0x34, 0xDE, 0xAD, 0xBE, 0xEF, 1, 2, 3, 4]) + b"\xd5" * 3


@given(packets, st.binary(max_size=40).map(lambda b: b[: len(b) - len(b) % 4]),
       st.integers(1, 255))
def test_extension_and_padding_are_skipped(packet: RtpPacket, extension: bytes,
                                           padding: int) -> None:
    plain = bytearray(packet.encode())
    header_end = 12 + 4 * len(packet.csrcs)
    plain[0] |= 0x10 | 0x20  # X and P bits
    body = (bytes(plain[:header_end]) + struct.pack("!HH", 0xBEDE, len(extension) // 4)
            + extension + packet.payload + bytes(padding - 1) + bytes([padding]))
    assert decode_rtp(body) == packet


@pytest.mark.parametrize("data, words", [
    (b"", "too short"),
    (b"\x80\x00" + bytes(9), "too short"),
    (b"\x40\x00" + bytes(10), "version 1"),
    (b"\x00\x00" + bytes(10), "version 0"),
    (b"\x83\x00" + bytes(10) + bytes(8), "CSRCs"),  # 3 CSRCs announced, 2 present
    (b"\x90\x00" + bytes(10) + b"\x00\x00", "extension"),
    (b"\x90\x00" + bytes(10) + b"\x00\x00\x00\x02" + bytes(4), "extension"),
    (b"\xa0\x00" + bytes(10) + b"\x00", "padding"),  # padding count 0
    (b"\xa0\x00" + bytes(10) + b"\x05", "padding"),  # more padding than packet
])
def test_malformed_named(data: bytes, words: str) -> None:
    with pytest.raises(RtpError, match=words):
        decode_rtp(data)


@given(st.binary(max_size=80))
def test_any_datagram_decodes_or_raises_rtp_error(data: bytes) -> None:
    try:
        packet = decode_rtp(data)
    except RtpError:
        return
    assert 0 <= packet.payload_type <= 127 and len(packet.payload) <= len(data) - 12


@pytest.mark.parametrize("fields", [
    dict(payload_type=128), dict(sequence=1 << 16), dict(timestamp=-1), dict(ssrc=1 << 32),
])
def test_encode_refuses_out_of_range(fields: dict) -> None:
    args = dict(payload_type=0, sequence=0, timestamp=0, ssrc=0, payload=b"") | fields
    with pytest.raises(ValueError):
        encode_rtp(**args)
