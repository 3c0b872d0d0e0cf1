"""A libpcap file of what twsip sent and received, written by twsip itself.

A failed run is easiest to study in Wireshark, tshark or sngrep, and capturing on the
loopback interface needs privileges a CI job rarely has. twsip knows every datagram it
sends and receives, so it writes them itself: each one as an Ethernet/IPv4/UDP packet with
the real loopback addresses and ports, at the time it was sent or received (Ethernet with
zero MAC addresses is also what Linux's own loopback capture records).

A datagram between two of twsip's own sockets is seen twice, sent by one and received by
the other, but crossed the loopback wire once: it is written once, when sent. Datagrams
from anybody else (SIPp, a softphone) are written when received. The UDP checksum is left
at zero, which IPv4 defines as "not computed"; the IPv4 header checksum is real.
"""

from __future__ import annotations

import socket
import struct
from typing import BinaryIO

from twsip.interfaces import TimeSource
from twsip.lexical import Address
from twsip.sip.observers import MessageEvent

__all__ = ["LINKTYPE_ETHERNET", "PcapCapture", "PcapWriter", "check_writable"]

LINKTYPE_ETHERNET = 1
SNAPLEN = 262144
_GLOBAL_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET)
_ETHERNET = bytes(12) + b"\x08\x00"  # zero MACs, EtherType IPv4
_RECORD = struct.Struct("<IIII")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_UDP = struct.Struct("!HHHH")


def check_writable(path: str) -> str | None:
    """Why `path` cannot be written as a new file, or None when it can.

    Asked before anything starts, so that a typo in ``--pcap`` is a usage error and not
    a run whose capture is lost at the end.
    """
    import os

    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return "is a folder"
    if not os.path.isdir(folder):
        return f"no folder {folder}"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return "not writable"
    if not os.path.exists(path) and not os.access(folder, os.W_OK):
        return f"cannot create files in {folder}"
    return None


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class PcapWriter:
    """Writes IPv4/UDP datagrams to a libpcap file (microsecond timestamps, Ethernet)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: BinaryIO | None = open(path, "wb")
        self._file.write(_GLOBAL_HEADER)
        self._ident = 0
        self.packets = 0

    def write(self, time: float, src: Address, dst: Address, payload: bytes) -> None:
        """One UDP datagram from `src` to `dst`, seen at `time` (seconds since the epoch)."""
        if self._file is None:
            return
        self._ident = (self._ident + 1) & 0xFFFF
        udp_length = 8 + len(payload)
        total = 20 + udp_length
        if total > 0xFFFF:  # cannot be a real UDP datagram; keep the file readable
            return
        source, destination = socket.inet_aton(src[0]), socket.inet_aton(dst[0])
        header = _IPV4.pack(0x45, 0, total, self._ident, 0x4000, 64, socket.IPPROTO_UDP, 0,
                            source, destination)
        header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
        frame = b"".join((_ETHERNET, header, _UDP.pack(src[1], dst[1], udp_length, 0),
                          payload))
        seconds = int(time)
        micros = min(int(round((time - seconds) * 1_000_000)), 999_999)
        self._file.write(_RECORD.pack(seconds, micros, len(frame), len(frame)))
        self._file.write(frame)
        self.packets += 1

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class PcapCapture:
    """Feeds a `PcapWriter` from the instances' message observers and the RTP taps.

    `sip` is a message observer (``ua.observers.append(capture.sip)``); `rtp` an RTP tap
    (``rtp_taps(reactor).append(capture.rtp)``); `clock` stamps the RTP packets.
    """

    def __init__(self, writer: PcapWriter, clock: TimeSource) -> None:
        self.writer = writer
        self.clock = clock
        self._senders: set[Address] = set()  # our sockets that have sent something

    def sip(self, event: MessageEvent) -> None:
        local = (event.instance.host, event.instance.port)
        self._packet(event.direction, event.time, local, (event.peer[0], event.peer[1]),
                     event.wire)

    def rtp(self, direction: str, data: bytes, local: Address, peer: Address) -> None:
        self._packet(direction, self.clock.seconds(), local, peer, data)

    def _packet(self, direction: str, time: float, local: Address, peer: Address,
                data: bytes) -> None:
        if direction == "out":
            self._senders.add(local)
            self.writer.write(time, local, peer, data)
        elif peer not in self._senders:  # ours were written when they were sent
            self.writer.write(time, peer, local, data)
