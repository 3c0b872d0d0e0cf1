"""One RTP endpoint per call: a UDP socket on 127.0.0.1 that plays, sends DTMF and listens.

The SIP dialog that owns a call creates one `RtpEndpoint`, binds it with `listen_rtp` (like
the SIP ports: the port asked for, else +2, +4, ...), tells it where the peer's media goes
(`set_remote`, from the peer's SDP) and which payload type numbers to use, and closes it
when the call ends. What the endpoint does on its own:

- sends from the socket it receives on (symmetric RTP), and, unless told not to, latches on
  the source address of the first valid packet from the peer (a peer behind a port mapping
  is then still reached);
- sends only to an ASCII dotted-quad in 127.0.0.0/8 (never a name: that would be a DNS
  query blocking the reactor); any other destination is dropped and counted;
- picks a random SSRC, initial sequence number and timestamp (RFC 3550 §5.1); the timestamp
  follows the pacing clock (8000 per second, +160 per 20 ms packet), so a pause between two
  files shows as a timestamp jump, as on a real phone;
- sends with the payload types of the *receiver's* SDP (`send` formats: audio and the
  dynamic telephone-event number), and reads incoming packets by its own SDP's numbers
  (`receive` formats);
- obeys the SDP direction: no sending when recvonly/inactive (a playing file goes on in
  time, unheard, as on hold), no receiving when sendonly/inactive;
- always listens when allowed to: per-SSRC statistics (`stats`), RFC 4733 digits
  (`on_dtmf`, each digit once), decoded audio to an optional `recorder`.

The endpoint itself keeps the socket, the addresses, the direction and the RTP header fields
(SSRC, sequence); what to send on each 20 ms tick is `sending.SendJobs`' job, what to do with
each received datagram is `receiving.RtpReceiver`'s. `close()` stops everything, unregisters,
and stops listening: no DelayedCall and no bound port remain.
"""
from __future__ import annotations

import secrets
import weakref
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import IReactorTime, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from twsip.media.dtmf import DEFAULT_DURATION_MS, DEFAULT_INTERVAL_MS, DtmfDetector, DtmfDigit
from twsip.media.net import Address, is_loopback, listen_rtp
from twsip.media.pacing import PacingScheduler, scheduler_for
# MAX_STREAMS and MAX_GAP_FILL stay importable from here, where they were first defined.
from twsip.media.receiving import MAX_GAP_FILL, MAX_STREAMS, RtpReceiver  # noqa: F401
from twsip.media.rtp import HEADER, encode_rtp
from twsip.media.sending import SendJobs
from twsip.media.session import (
    AudioSink,
    Direction,
    EndpointCounters,
    EndpointReport,
    PayloadTypes,
)
from twsip.media.sources import EchoSource, FrameSource, make_source
from twsip.media.stats import StreamStats
from twsip.media.wav import load_wav

__all__ = ["RtpEndpoint", "Direction", "PayloadTypes", "AudioSink", "EndpointCounters",
           "EndpointReport", "RtpTap", "open_endpoint", "rtp_taps"]

log = Logger()
_pack_header = HEADER.pack  # V/P/X/CC, M/PT, sequence, timestamp, SSRC

# Sees each datagram an endpoint sent or received: (direction "out" or "in", the datagram,
# the endpoint's own address, the peer's). A pcap capture is one.
RtpTap = Callable[[str, bytes, Address, Address], object]
_taps: weakref.WeakKeyDictionary[IReactorTime, list[RtpTap]] = weakref.WeakKeyDictionary()


def rtp_taps(clock: IReactorTime) -> list[RtpTap]:
    """The taps of every endpoint on `clock` (append to capture, remove to stop).

    Kept per reactor rather than per endpoint because the endpoints are made deep inside
    each call, while a capture is wanted for the whole process; an empty list costs one
    truth test per packet.
    """
    return _taps.setdefault(clock, [])


class RtpEndpoint(DatagramProtocol):
    """The RTP side of one call; see the module docstring for what it does by itself.

    `clock` is the reactor (tests: a `Clock`); `scheduler` defaults to the clock's shared
    `PacingScheduler`. `rng_bits(n)` supplies the random SSRC, sequence and timestamp start
    (tests pass a seeded one). `on_dtmf` is called once per received digit.
    """

    noisy = False  # one endpoint per call: no "Starting protocol" line each

    def __init__(self, clock: IReactorTime, *, send: PayloadTypes = PayloadTypes(),
                 receive: PayloadTypes | None = None,
                 direction: Direction | str = Direction.SENDRECV,
                 remote: Address | None = None, latch: bool = True,
                 on_dtmf: Callable[[DtmfDigit], object] | None = None,
                 recorder: AudioSink | None = None, source: FrameSource | str | None = None,
                 scheduler: PacingScheduler | None = None,
                 rng_bits: Callable[[int], int] = secrets.randbits,
                 dtmf_quiet: float = 0.3) -> None:
        self.clock = clock
        self.scheduler = scheduler if scheduler is not None else scheduler_for(clock)
        self.direction = Direction(direction)
        self._sends = self.direction.sends  # read per packet: a plain attribute
        self.latched = False
        self.ssrc = rng_bits(32)
        self._sequence = rng_bits(16)
        self.counters = EndpointCounters()
        self._taps = rtp_taps(clock)
        self._jobs = SendJobs(self.scheduler, self._send, send, timestamp_base=rng_bits(32),
                              origin=clock.seconds())
        self._receiver = RtpReceiver(clock, self.counters,
                                     receive if receive is not None else send,
                                     on_dtmf=on_dtmf, recorder=recorder, dtmf_quiet=dtmf_quiet)
        self._receiver.enabled = self.direction.receives
        self._receiver.wake = self._jobs.wake
        self.latch = latch
        self._remote: Address | None = None
        self._remote_ok = False
        self._sendto: Callable[[bytes, Address], object] | None = None
        self.closed = False
        if remote is not None:
            self.set_remote(*remote)
        if source is not None:
            self.set_source(source)

    # -- configuration ---------------------------------------------------------------------
    @property
    def remote(self) -> Address | None:
        """Where packets go: the peer's SDP address, or the latched source address."""
        return self._remote

    @property
    def local_port(self) -> int | None:
        """The bound UDP port, or None before listening / after close."""
        if self.transport is None:
            return None
        return int(self.transport.getHost().port)

    @property
    def latch(self) -> bool:
        """Whether the first valid packet's source address may replace the remote."""
        return self._latch

    @latch.setter
    def latch(self, latch: bool) -> None:
        self._latch = latch
        self._receiver.latch = self._latch_on if latch and not self.latched else None

    def set_remote(self, host: str, port: int) -> None:
        """The peer's media address (SDP c= and m= port); not loopback: sends are refused."""
        self._remote = (host, port)
        self._remote_ok = is_loopback(host) and isinstance(port, int) and 0 < port < 65536
        if not self._remote_ok:
            log.warn("RTP: not sending to {host}:{port}, outside 127.0.0.0/8",
                     host=host, port=port)

    def _latch_on(self, addr: Any) -> bool:
        """Symmetric RTP: answer to where the peer sends from, if that is loopback."""
        host, port = addr[0], addr[1]
        if not is_loopback(host):
            return False
        self.latched = True
        if self._remote != (host, port):
            log.debug("RTP latched on {host}:{port}", host=host, port=port)
        self._remote, self._remote_ok = (host, port), True
        return True

    def set_direction(self, direction: Direction | str) -> None:
        """Change the SDP direction (hold / retrieve); takes effect on the next packet."""
        self.direction = Direction(direction)
        self._sends = self.direction.sends
        self._receiver.enabled = self.direction.receives and not self.closed

    @property
    def send_types(self) -> PayloadTypes:
        return self._jobs.types

    @property
    def receive_types(self) -> PayloadTypes:
        return self._receiver.types

    def set_payload_types(self, send: PayloadTypes | None = None,
                          receive: PayloadTypes | None = None) -> None:
        """New payload type numbers after an offer/answer (re-INVITE)."""
        if send is not None:
            self._jobs.set_types(send)
        if receive is not None:
            self._receiver.set_types(receive)

    def set_source(self, source: FrameSource | str | None) -> None:
        """What to send when no file or digit is playing: a source, a spec ('tone:440',
        'silence', 'echo'), or None for nothing."""
        frames = make_source(source) if isinstance(source, str) else source
        self._jobs.set_source(frames)
        self._receiver.echo = frames if isinstance(frames, EchoSource) else None

    # The receive side's settings, reachable where they were before it moved out.
    @property
    def on_dtmf(self) -> Callable[[DtmfDigit], object] | None:
        return self._receiver.on_dtmf

    @on_dtmf.setter
    def on_dtmf(self, on_dtmf: Callable[[DtmfDigit], object] | None) -> None:
        self._receiver.on_dtmf = on_dtmf

    @property
    def recorder(self) -> AudioSink | None:
        return self._receiver.recorder

    @recorder.setter
    def recorder(self, recorder: AudioSink | None) -> None:
        self._receiver.recorder = recorder

    @property
    def dtmf_quiet(self) -> float:
        return self._receiver.dtmf_quiet

    @property
    def detector(self) -> DtmfDetector:
        return self._receiver.detector

    @property
    def samples_per_packet(self) -> int:
        return self._jobs.samples_per_packet

    # -- sending ---------------------------------------------------------------------------
    def play(self, samples: bytes) -> Deferred[bool]:
        """Play 16-bit 8 kHz mono samples; fires True once the last packet went out.

        Fires False if `stop` or `close` ends it first; cancelling the Deferred stops it too.
        Files queue: a second `play` starts when the first has ended.
        """
        return self._jobs.play(samples)

    def play_file(self, path: str) -> Deferred[bool]:
        """`play(load_wav(path))`; `WavError` (raised at once) for a file that cannot play."""
        return self.play(load_wav(path))

    def send_dtmf(self, digits: str, interval_ms: int = DEFAULT_INTERVAL_MS,
                  duration_ms: int = DEFAULT_DURATION_MS) -> Deferred[bool]:
        """Send digits as RFC 4733 events; fires True when the last end packet went out.

        `DtmfError` at once for invalid digits or timing, or when the peer's SDP offered no
        telephone-event. Fires False if stopped or closed first.
        """
        return self._jobs.send_dtmf(digits, interval_ms, duration_ms)

    def stop(self) -> None:
        """Stop every file and digit string (their Deferreds fire False) and the source."""
        self._jobs.stop()
        self._receiver.echo = None

    @property
    def playing(self) -> bool:
        """True while a file, a digit string or a source is being sent."""
        return self._jobs.playing

    def startProtocol(self) -> None:
        """Pick the send call once: the socket's own `sendto` when the transport has one.

        Twisted's `udp.Port.write` checks the address with `isIPAddress` three times per
        datagram, two thirds of the cost of a send; `set_remote` and latching have checked
        it once already (an ASCII loopback literal, so `sendto` never resolves anything).
        Other transports (test fakes, other reactors) are written to through `write`.
        """
        sock = getattr(self.transport, "socket", None)
        sendto = getattr(sock, "sendto", None)
        if callable(sendto):
            self._sendto = sendto
        elif self.transport is not None:
            self._sendto = self.transport.write

    def stopProtocol(self) -> None:
        self._sendto = None

    def _send(self, payload_type: int, timestamp: int, payload: bytes, marker: bool) -> None:
        """Called by the send jobs once per packet: the header fields and the wire are the
        endpoint's, because the SSRC and sequence belong to the socket, not to a job."""
        counters = self.counters
        if not self._sends:
            counters.suppressed += 1
            return
        remote = self._remote
        sendto = self._sendto
        if remote is None or sendto is None:
            counters.unsent += 1
            return
        if not self._remote_ok:
            counters.refused_destination += 1
            return
        sequence = self._sequence
        self._sequence = (sequence + 1) & 0xFFFF
        if 0 <= payload_type <= 127:
            # The common case built in place: one pack, one concatenation, no call.
            data = _pack_header(0x80, payload_type | 0x80 if marker else payload_type,
                                sequence, timestamp, self.ssrc) + payload
        else:
            data = encode_rtp(payload_type, sequence, timestamp, self.ssrc, payload, marker)
        try:
            sendto(data, remote)
        except (OSError, MessageLengthError) as exc:  # EAGAIN (buffer full), EMSGSIZE, ...
            counters.send_errors += 1
            log.debug("RTP send to {peer} failed: {error}", peer=remote, error=exc)
            return
        counters.sent_packets += 1
        counters.sent_octets += len(payload)
        if self._taps:
            self._tap("out", data, remote)

    def _tap(self, direction: str, data: bytes, peer: Address) -> None:
        transport = self.transport
        if transport is None:
            return
        local = transport.getHost()
        for tap in list(self._taps):
            try:
                tap(direction, data, (local.host, local.port), (peer[0], peer[1]))
            except Exception:
                log.failure("an RTP tap failed")

    # -- receiving -------------------------------------------------------------------------
    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Everything about a received datagram is the receive side's; see `RtpReceiver`."""
        if self._taps:
            self._tap("in", datagram, addr)
        self._receiver.datagram(datagram, addr)

    # -- results and cleanup ---------------------------------------------------------------
    def stats(self) -> dict[int, StreamStats]:
        """Receive statistics per SSRC, as plain data."""
        return self._receiver.stats()

    def report(self) -> EndpointReport:
        """Everything a call report shows about this endpoint."""
        return EndpointReport(self.ssrc, self.local_port, self._remote, self.direction.value,
                              dict(vars(self.counters)),
                              tuple(self._receiver.stats().values()),
                              tuple(d.digit for d in self._receiver.detector.digits))

    def close(self) -> Deferred[None]:
        """Stop sending, report a pending digit, cancel timers, stop listening.

        The Deferred fires once the port is released. The recorder is the caller's: it is
        not closed here. A second call does nothing.
        """
        if self.closed:
            return succeed(None)
        self.stop()
        self._jobs.close()
        self.closed = True
        self._receiver.close()
        transport = self.transport
        if transport is None:
            return succeed(None)
        stopped = transport.stopListening()
        return stopped if isinstance(stopped, Deferred) else succeed(None)


def open_endpoint(reactor: IReactorUDP, clock: IReactorTime, port: int = 0, *,
                  host: str = "127.0.0.1", **options: Any) -> RtpEndpoint:
    """Create an `RtpEndpoint` and bind it with `listen_rtp` (the real reactor is both
    `reactor` and `clock`); `options` go to `RtpEndpoint`."""
    endpoint = RtpEndpoint(clock, **options)
    listen_rtp(reactor, endpoint, port, host=host)
    return endpoint
