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

Playing is paced by the reactor's shared `PacingScheduler`: an endpoint registers only while
it has something to send, so an idle endpoint costs no timer at all. DTMF has priority over
audio: a file pauses while digits are sent and resumes after them.
`close()` stops everything, unregisters, and stops listening: no DelayedCall and no bound
port remain.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Iterator, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import MessageLengthError
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from twsip.media.dtmf import (
    DEFAULT_DURATION_MS,
    DEFAULT_INTERVAL_MS,
    DtmfDetector,
    DtmfDigit,
    DtmfError,
    EventPacket,
    dtmf_ticks,
)
from twsip.media.g711 import CLOCK_RATE, PCMU, STATIC_PAYLOAD_TYPES, Codec
from twsip.media.net import Address, is_loopback, listen_rtp
from twsip.media.pacing import PacingScheduler, scheduler_for
from twsip.media.rtp import RtpError, decode_rtp, encode_rtp
from twsip.media.sources import EchoSource, FrameSource, make_source
from twsip.media.stats import ReceiveStats, StreamStats
from twsip.media.wav import load_wav

__all__ = ["RtpEndpoint", "Direction", "PayloadTypes", "AudioSink", "EndpointCounters",
           "EndpointReport", "open_endpoint"]

log = Logger()

MAX_STREAMS = 16  # SSRCs tracked per endpoint: a peer has one, a re-INVITE may add one
MAX_GAP_FILL = 2 * CLOCK_RATE  # recorder: timestamp gaps up to 2 s become silence


class Direction(str, Enum):
    """The SDP direction attribute of this endpoint's media (RFC 3264 §5.1)."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)


@dataclass(frozen=True)
class PayloadTypes:
    """The payload type numbers one SDP gave: the audio codec's and telephone-event's.

    For sending, take them from the receiver's SDP; for receiving, from our own. None for
    `telephone_event` means the SDP offered no telephone-event (DTMF cannot be sent).
    """

    codec: Codec = PCMU
    audio: int | None = None  # None: the codec's static number
    telephone_event: int | None = 101

    @property
    def audio_pt(self) -> int:
        return self.codec.payload_type if self.audio is None else self.audio


class AudioSink(Protocol):
    """Takes decoded audio (16-bit 8 kHz mono); `io.BytesIO` and `WavWriter` both fit."""

    def write(self, samples: bytes, /) -> Any: ...


@dataclass
class EndpointCounters:
    """What happened to datagrams, beyond the per-stream statistics."""

    sent_packets: int = 0
    sent_octets: int = 0  # payload octets
    send_errors: int = 0  # the socket refused (EMSGSIZE, ...)
    refused_destination: int = 0  # remote outside 127.0.0.0/8 or not a literal: not sent
    unsent: int = 0  # no remote known yet, or no socket
    suppressed: int = 0  # not sent because the direction forbids sending
    received_datagrams: int = 0
    malformed: int = 0
    dropped_direction: int = 0  # received while the direction forbids receiving
    rtcp: int = 0  # RTCP multiplexed on the RTP port (RFC 5761), ignored
    unknown_payload: int = 0
    ignored_ssrc: int = 0  # beyond MAX_STREAMS sources


@dataclass(frozen=True)
class EndpointReport:
    """Plain-data summary of an endpoint for call reports."""

    ssrc: int
    local_port: int | None
    remote: Address | None
    direction: str
    counters: dict[str, int]
    streams: tuple[StreamStats, ...]
    digits: tuple[str, ...]


class _PlayJob:
    __slots__ = ("encoded", "offset", "deferred")

    def __init__(self, encoded: bytes, deferred: Deferred[bool]) -> None:
        self.encoded = encoded
        self.offset = 0
        self.deferred = deferred


class _DtmfJob:
    __slots__ = ("ticks", "deferred", "timestamp")

    def __init__(self, ticks: Iterator[EventPacket | None], deferred: Deferred[bool]) -> None:
        self.ticks = ticks
        self.deferred = deferred
        self.timestamp = 0


class RtpEndpoint(DatagramProtocol):
    """The RTP side of one call; see the module docstring for what it does by itself.

    `clock` is the reactor (tests: a `Clock`); `scheduler` defaults to the clock's shared
    `PacingScheduler`. `rng_bits(n)` supplies the random SSRC, sequence and timestamp start
    (tests pass a seeded one). `on_dtmf` is called once per received digit.
    """

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
        self.send_types = send
        self.receive_types = receive if receive is not None else send
        self._send_audio_pt = send.audio_pt  # per-packet lookups, kept as plain attributes
        self._receive_audio_pt = self.receive_types.audio_pt
        self.direction = Direction(direction)
        self._sends = self.direction.sends
        self._receives = self.direction.receives
        self.latch = latch
        self.latched = False
        self.on_dtmf = on_dtmf
        self.recorder = recorder
        self.dtmf_quiet = dtmf_quiet
        # One packet per tick: its size follows the scheduler's ptime (160 at 20 ms).
        self.samples_per_packet = round(self.scheduler.ptime * CLOCK_RATE)
        self.ssrc = rng_bits(32)
        self._sequence = rng_bits(16)
        self._timestamp_base = rng_bits(32)
        self._origin = clock.seconds()
        self.counters = EndpointCounters()
        self.detector = DtmfDetector(self._digit)
        self._streams: dict[int, ReceiveStats] = {}
        self._remote: Address | None = None
        self._remote_ok = False
        self._sendto: Callable[[bytes, Address], object] | None = None
        self._plays: deque[_PlayJob] = deque()
        self._dtmf: deque[_DtmfJob] = deque()
        self._source: FrameSource | None = None
        self._key: int | None = None  # scheduler registration
        self._talking = False  # the last tick sent audio (next audio packet: no marker)
        self._dtmf_timer: IDelayedCall | None = None
        self._recorded_ssrc: int | None = None
        self._recorded_next = 0  # RTP timestamp the next recorded packet should carry
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

    def set_remote(self, host: str, port: int) -> None:
        """The peer's media address (SDP c= and m= port); not loopback: sends are refused."""
        self._remote = (host, port)
        self._remote_ok = is_loopback(host) and isinstance(port, int) and 0 < port < 65536
        if not self._remote_ok:
            log.warn("RTP: not sending to {host}:{port}, outside 127.0.0.0/8",
                     host=host, port=port)

    def set_direction(self, direction: Direction | str) -> None:
        """Change the SDP direction (hold / retrieve); takes effect on the next packet."""
        self.direction = Direction(direction)
        self._sends = self.direction.sends
        self._receives = self.direction.receives

    def set_payload_types(self, send: PayloadTypes | None = None,
                          receive: PayloadTypes | None = None) -> None:
        """New payload type numbers after an offer/answer (re-INVITE)."""
        if send is not None:
            self.send_types = send
            self._send_audio_pt = send.audio_pt
        if receive is not None:
            self.receive_types = receive
            self._receive_audio_pt = receive.audio_pt

    def set_source(self, source: FrameSource | str | None) -> None:
        """What to send when no file or digit is playing: a source, a spec ('tone:440',
        'silence', 'echo'), or None for nothing."""
        self._source = make_source(source) if isinstance(source, str) else source
        if self._source is not None and not isinstance(self._source, EchoSource):
            self._ensure_registered()  # an echo registers when it has something to send

    # -- sending ---------------------------------------------------------------------------
    def play(self, samples: bytes) -> Deferred[bool]:
        """Play 16-bit 8 kHz mono samples; fires True once the last packet went out.

        Fires False if `stop` or `close` ends it first; cancelling the Deferred stops it too.
        Files queue: a second `play` starts when the first has ended.
        """
        if self.closed:
            return succeed(False)
        deferred: Deferred[bool] = Deferred(self._cancel_job)
        job = _PlayJob(self.send_types.codec.encode(samples), deferred)
        if not job.encoded:
            deferred.callback(True)
            return deferred
        self._plays.append(job)
        self._ensure_registered()
        return deferred

    def play_file(self, path: str) -> Deferred[bool]:
        """`play(load_wav(path))`; `WavError` (raised at once) for a file that cannot play."""
        return self.play(load_wav(path))

    def send_dtmf(self, digits: str, interval_ms: int = DEFAULT_INTERVAL_MS,
                  duration_ms: int = DEFAULT_DURATION_MS) -> Deferred[bool]:
        """Send digits as RFC 4733 events; fires True when the last end packet went out.

        `DtmfError` at once for invalid digits or timing, or when the peer's SDP offered no
        telephone-event. Fires False if stopped or closed first.
        """
        if self.send_types.telephone_event is None:
            raise DtmfError("the peer offered no telephone-event: RFC 4733 DTMF cannot be sent")
        ptime_ms = round(self.scheduler.ptime * 1000)
        ticks = dtmf_ticks(digits, interval_ms=interval_ms, duration_ms=duration_ms,
                           ptime_ms=ptime_ms, clock_rate=CLOCK_RATE)
        first = next(ticks)  # validates now (a generator would only raise on its first tick)
        if self.closed:
            return succeed(False)
        deferred: Deferred[bool] = Deferred(self._cancel_job)
        self._dtmf.append(_DtmfJob(_chain(first, ticks), deferred))
        self._ensure_registered()
        return deferred

    def stop(self) -> None:
        """Stop every file and digit string (their Deferreds fire False) and the source."""
        self._source = None
        jobs: list[_PlayJob | _DtmfJob] = [*self._plays, *self._dtmf]
        self._plays.clear()
        self._dtmf.clear()
        for job in jobs:
            if not job.deferred.called:
                job.deferred.callback(False)
        self._unregister()

    @property
    def playing(self) -> bool:
        """True while a file, a digit string or a source is being sent."""
        return bool(self._plays or self._dtmf or self._source is not None)

    def _cancel_job(self, deferred: Deferred[Any]) -> None:
        """Canceller of play/send_dtmf Deferreds: drop the job (Twisted then errbacks the
        Deferred with CancelledError)."""
        for play in [job for job in self._plays if job.deferred is deferred]:
            self._plays.remove(play)
        for dtmf in [job for job in self._dtmf if job.deferred is deferred]:
            self._dtmf.remove(dtmf)

    def _ensure_registered(self) -> None:
        if self._key is None and not self.closed:
            self._key = self.scheduler.add(self._tick)

    def _unregister(self) -> None:
        if self._key is not None:
            key, self._key = self._key, None
            self.scheduler.remove(key)

    def _tick(self, due: float) -> bool:
        """One pacing tick: send the next DTMF, audio or source packet; False when idle."""
        timestamp = (self._timestamp_base
                     + round((due - self._origin) * CLOCK_RATE)) & 0xFFFFFFFF
        while self._dtmf:
            job = self._dtmf[0]
            item = next(job.ticks, _DONE)
            if item is _DONE:
                self._dtmf.popleft()
                job.deferred.callback(True)
                continue
            self._talking = False
            if item is not None:
                assert isinstance(item, EventPacket)
                if item.marker:
                    job.timestamp = timestamp
                event_pt = self.send_types.telephone_event
                if event_pt is not None:
                    self._send(event_pt, job.timestamp, item.payload, item.marker)
            return True
        frame: bytes | None = None
        waiting = False  # a source with nothing this tick (an echo): unregister until fed
        finished: _PlayJob | None = None
        if self._plays:
            job_ = self._plays[0]
            step = self.samples_per_packet
            frame = job_.encoded[job_.offset:job_.offset + step]
            job_.offset += step
            if job_.offset >= len(job_.encoded):
                finished = self._plays.popleft()
        elif self._source is not None:
            linear = self._source.next_frame()
            if linear == b"":
                self._source = None
            elif linear is None:
                waiting = True
            elif linear:
                frame = self.send_types.codec.encode(linear)
        if frame:
            self._send(self._send_audio_pt, timestamp, frame, not self._talking)
            self._talking = True
        else:
            self._talking = False
        if finished is not None:
            finished.deferred.callback(True)
        if self._plays or self._dtmf or (self._source is not None and not waiting):
            return True
        self._key = None
        return False

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
        data = encode_rtp(payload_type, sequence, timestamp, self.ssrc, payload, marker)
        try:
            sendto(data, remote)
        except (OSError, MessageLengthError) as exc:  # EAGAIN (buffer full), EMSGSIZE, ...
            counters.send_errors += 1
            log.debug("RTP send to {peer} failed: {error}", peer=remote, error=exc)
            return
        counters.sent_packets += 1
        counters.sent_octets += len(payload)

    # -- receiving -------------------------------------------------------------------------
    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """Screen, decode, count; then DTMF to the detector, audio to recorder and echo."""
        counters = self.counters
        counters.received_datagrams += 1
        if not self._receives or self.closed:
            counters.dropped_direction += 1
            return
        try:
            packet = decode_rtp(datagram)
        except RtpError:
            counters.malformed += 1
            return
        payload_type = packet.payload_type
        if 72 <= payload_type <= 76:
            counters.rtcp += 1  # RTCP SR/RR/SDES/BYE/APP sharing the port: not RTP
            return
        stats = self._streams.get(packet.ssrc)
        if stats is None:
            if len(self._streams) >= MAX_STREAMS:
                counters.ignored_ssrc += 1
                return
            stats = self._streams[packet.ssrc] = ReceiveStats(packet.ssrc, CLOCK_RATE)
        if self.latch and not self.latched:
            host, port = addr[0], addr[1]
            if is_loopback(host):
                self.latched = True
                if self._remote != (host, port):
                    log.debug("RTP latched on {host}:{port}", host=host, port=port)
                self._remote, self._remote_ok = (host, port), True
        now = self.clock.seconds()
        types = self.receive_types
        if payload_type == types.telephone_event:
            stats.update(packet.sequence, packet.timestamp, now, payload_type,
                         len(packet.payload), timed=False)
            self.detector.feed(packet.ssrc, packet.timestamp, packet.payload)
            self._arm_dtmf_timer()
            return
        stats.update(packet.sequence, packet.timestamp, now, payload_type, len(packet.payload))
        codec = types.codec if payload_type == self._receive_audio_pt \
            else STATIC_PAYLOAD_TYPES.get(payload_type)
        if codec is None:
            counters.unknown_payload += 1
            return
        if self.recorder is None and not isinstance(self._source, EchoSource):
            return
        samples = codec.decode(packet.payload)
        if self.recorder is not None:
            self._record(packet.ssrc, packet.timestamp, samples)
        if isinstance(self._source, EchoSource):
            self._source.feed(samples)
            self._ensure_registered()

    def _record(self, ssrc: int, timestamp: int, samples: bytes) -> None:
        """Append to the recorder; a forward timestamp gap up to 2 s (lost packets, a pause
        in the peer's sending) becomes silence, so the recording keeps the call's timing."""
        assert self.recorder is not None
        if ssrc == self._recorded_ssrc:
            gap = (timestamp - self._recorded_next) & 0xFFFFFFFF
            if gap & 0x80000000:
                return  # late (reordered or duplicate): its time has been recorded already
            if 0 < gap <= MAX_GAP_FILL:
                self.recorder.write(bytes(2 * gap))
        self._recorded_ssrc = ssrc
        self._recorded_next = (timestamp + len(samples) // 2) & 0xFFFFFFFF
        self.recorder.write(samples)

    def _digit(self, digit: DtmfDigit) -> None:
        log.debug("RTP DTMF {digit} ({ms} ms)", digit=digit.digit, ms=digit.duration_ms)
        if self.on_dtmf is not None:
            self.on_dtmf(digit)

    def _arm_dtmf_timer(self) -> None:
        timer = self._dtmf_timer
        if self.detector.pending:
            if timer is not None and timer.active():
                timer.reset(self.dtmf_quiet)
            else:
                self._dtmf_timer = self.clock.callLater(self.dtmf_quiet, self._dtmf_quiet_flush)
        elif timer is not None:
            if timer.active():
                timer.cancel()
            self._dtmf_timer = None

    def _dtmf_quiet_flush(self) -> None:
        """No event packet for `dtmf_quiet` s: the pending digit's end packets were lost."""
        self._dtmf_timer = None
        self.detector.flush()

    # -- results and cleanup ---------------------------------------------------------------
    def stats(self) -> dict[int, StreamStats]:
        """Receive statistics per SSRC, as plain data."""
        return {ssrc: stats.snapshot() for ssrc, stats in self._streams.items()}

    def report(self) -> EndpointReport:
        """Everything a call report shows about this endpoint."""
        return EndpointReport(self.ssrc, self.local_port, self._remote, self.direction.value,
                              dict(vars(self.counters)),
                              tuple(s.snapshot() for s in self._streams.values()),
                              tuple(d.digit for d in self.detector.digits))

    def close(self) -> Deferred[None]:
        """Stop sending, report a pending digit, cancel timers, stop listening.

        The Deferred fires once the port is released. The recorder is the caller's: it is
        not closed here. A second call does nothing.
        """
        if self.closed:
            return succeed(None)
        self.stop()
        self.closed = True
        if self._dtmf_timer is not None:
            if self._dtmf_timer.active():
                self._dtmf_timer.cancel()
            self._dtmf_timer = None
        self.detector.flush()
        transport = self.transport
        if transport is None:
            return succeed(None)
        stopped = transport.stopListening()
        return stopped if isinstance(stopped, Deferred) else succeed(None)


_DONE: Any = object()


def _chain(first: EventPacket | None,
           rest: Iterator[EventPacket | None]) -> Iterator[EventPacket | None]:
    yield first
    yield from rest


def open_endpoint(reactor: IReactorUDP, clock: IReactorTime, port: int = 0, *,
                  host: str = "127.0.0.1", **options: Any) -> RtpEndpoint:
    """Create an `RtpEndpoint` and bind it with `listen_rtp` (the real reactor is both
    `reactor` and `clock`); `options` go to `RtpEndpoint`."""
    endpoint = RtpEndpoint(clock, **options)
    listen_rtp(reactor, endpoint, port, host=host)
    return endpoint

