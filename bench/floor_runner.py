"""The floor: a do-nothing Twisted answerer, the cheapest a SIP UAS can be on CPython.

    python -m bench.floor_runner [--port 0]

No parser, no transactions, no timers, no dialogs: each datagram is split by string
surgery and answered with canned text (INVITE: 180 and 200 with a fixed SDP; BYE and
anything else but ACK: 200; ACK: nothing). Six datagrams per call through a Twisted
`DatagramProtocol`, as twsip's (which also sends 100 Trying: seven). What twsip spends
per call beyond this process is what its SIP layer costs; BENCHMARKS.md compares the two
side by side with SIPp's own uas (C++). Prints ``READY <port>`` once bound and its CPU
time (``CPU`` line) at SIGTERM, as `bench.uas_runner` does.
"""

from __future__ import annotations

import argparse
import os
import sys

from twisted.internet.protocol import DatagramProtocol

SDP = (b"v=0\r\no=floor 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
WANTED = (b"via:", b"from:", b"to:", b"call-id:", b"cseq:", b"v:", b"f:", b"t:", b"i:")


class Floor(DatagramProtocol):
    """Answers by copying Via/From/To/Call-ID/CSeq lines into canned responses."""

    noisy = False

    def __init__(self) -> None:
        self.port = 0

    def startProtocol(self) -> None:  # noqa: N802
        self.port = self.transport.getHost().port  # type: ignore[union-attr]

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:  # noqa: N802
        head = data.split(b"\r\n\r\n", 1)[0]
        lines = head.split(b"\r\n")
        method = lines[0].split(b" ", 1)[0]
        if method == b"ACK" or method.startswith(b"SIP/"):
            return
        copied = []
        for line in lines[1:]:
            lower = line[:9].lower()
            if lower.startswith(WANTED):
                if lower.startswith((b"to:", b"t:")) and b"tag=" not in line:
                    line += b";tag=floor"
                copied.append(line)
        common = b"\r\n".join(copied)
        write = self.transport.write  # type: ignore[union-attr]
        if method == b"INVITE":
            write(b"SIP/2.0 180 Ringing\r\n" + common + b"\r\nContent-Length: 0\r\n\r\n", addr)
            write(b"SIP/2.0 200 OK\r\n" + common + b"\r\nContact: <sip:floor@127.0.0.1:"
                  + str(self.port).encode() + b">\r\nContent-Type: application/sdp\r\n"
                  b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP, addr)
        else:
            write(b"SIP/2.0 200 OK\r\n" + common + b"\r\nContent-Length: 0\r\n\r\n", addr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor_runner")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    from twisted.internet import reactor

    listening = reactor.listenUDP(args.port, Floor(), interface="127.0.0.1",  # type: ignore[attr-defined]
                                  maxPacketSize=65535)
    print(f"READY {listening.getHost().port}", flush=True)
    reactor.run()  # type: ignore[attr-defined]
    times = os.times()
    print(f"CPU {times.user + times.system:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
