"""The listening half of an endpoint: what each incoming datagram is, and where it goes.

Every datagram is screened (direction, RTP syntax, RTCP sharing the port, too many SSRCs),
counted per SSRC (RFC 3550 statistics), and then handed on by payload type: RFC 4733
events to the DTMF detector, audio to the recorder and to an echo source. None of this
needs the socket or the pacing clock, so it lives apart from the endpoint, which only
forwards `datagramReceived` here.

A digit whose end packets are all lost would stay pending for ever; a quiet timer flushes
it once no event packet has come for `dtmf_quiet` seconds.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from twsip.media.dtmf import DtmfDetector, DtmfDigit
from twsip.media.g711 import CLOCK_RATE, STATIC_PAYLOAD_TYPES
from twsip.media.rtp import HEADER, HEADER_SIZE, RtpError, decode_rtp
from twsip.media.session import AudioSink, EndpointCounters, PayloadTypes
from twsip.media.sources import EchoSource
from twsip.media.stats import ReceiveStats, StreamStats

__all__ = ["RtpReceiver", "MAX_STREAMS", "MAX_GAP_FILL"]

log = Logger()

MAX_STREAMS = 16  # SSRCs tracked per endpoint: a peer has one, a re-INVITE may add one
MAX_GAP_FILL = 2 * CLOCK_RATE  # recorder: timestamp gaps up to 2 s become silence
_unpack_header = HEADER.unpack_from


class RtpReceiver:
    """Screens, counts and dispatches received RTP for one endpoint.

    `latch(addr)` is asked on each valid packet until it returns True: the endpoint decides
    whether a source address may become its remote, the receiver only knows when a packet
    was valid enough to ask. `echo` and `wake` are set by the endpoint while its source is
    an echo, so received audio reaches the send side without the receiver knowing it.
    """

    def __init__(self, clock: IReactorTime, counters: EndpointCounters, types: PayloadTypes,
                 *, on_dtmf: Callable[[DtmfDigit], object] | None = None,
                 recorder: AudioSink | None = None, dtmf_quiet: float = 0.3,
                 latch: Callable[[Any], bool] | None = None) -> None:
        self.clock = clock
        self.counters = counters
        self.types = types
        self._audio_pt = types.audio_pt  # read per packet: a plain attribute, not a property
        self.on_dtmf = on_dtmf
        self.recorder = recorder
        self.dtmf_quiet = dtmf_quiet
        self.latch = latch
        self.enabled = True  # the direction allows receiving and the endpoint is open
        self.echo: EchoSource | None = None
        self.wake: Callable[[], None] = _nothing
        self.detector = DtmfDetector(self._digit)
        self.streams: dict[int, ReceiveStats] = {}
        self._dtmf_timer: IDelayedCall | None = None
        self._recorded_ssrc: int | None = None
        self._recorded_next = 0  # RTP timestamp the next recorded packet should carry

    def set_types(self, types: PayloadTypes) -> None:
        self.types = types
        self._audio_pt = types.audio_pt

    def datagram(self, datagram: bytes, addr: Any) -> None:
        """Screen, decode, count; then DTMF to the detector, audio to recorder and echo."""
        counters = self.counters
        counters.received_datagrams += 1
        if not self.enabled:
            counters.dropped_direction += 1
            return
        payload: bytes | None
        if len(datagram) >= HEADER_SIZE and datagram[0] == 0x80:
            # Version 2 without padding, extension or CSRCs, as every phone sends: the
            # fields straight from the fixed header, the payload copied only if used.
            _, second, sequence, timestamp, ssrc = _unpack_header(datagram)
            payload_type = second & 0x7F
            payload_size = len(datagram) - HEADER_SIZE
            payload = None
        else:
            try:
                packet = decode_rtp(datagram)
            except RtpError:
                counters.malformed += 1
                return
            payload_type, sequence, timestamp, ssrc, payload = packet[:5]
            payload_size = len(payload)
        if 72 <= payload_type <= 76:
            counters.rtcp += 1  # RTCP SR/RR/SDES/BYE/APP sharing the port: not RTP
            return
        stats = self.streams.get(ssrc)
        if stats is None:
            if len(self.streams) >= MAX_STREAMS:
                counters.ignored_ssrc += 1
                return
            stats = self.streams[ssrc] = ReceiveStats(ssrc, CLOCK_RATE)
        if self.latch is not None and self.latch(addr):
            self.latch = None
        now = self.clock.seconds()
        types = self.types
        if payload_type == types.telephone_event:
            stats.update(sequence, timestamp, now, payload_type, payload_size, timed=False)
            if payload is None:
                payload = datagram[HEADER_SIZE:]
            self.detector.feed(ssrc, timestamp, payload)
            self._arm_dtmf_timer()
            return
        stats.update(sequence, timestamp, now, payload_type, payload_size)
        codec = types.codec if payload_type == self._audio_pt \
            else STATIC_PAYLOAD_TYPES.get(payload_type)
        if codec is None:
            counters.unknown_payload += 1
            return
        recorder, echo = self.recorder, self.echo
        if recorder is None and echo is None:
            return  # decoding is the costly part: skip it when nobody listens
        if payload is None:
            payload = datagram[HEADER_SIZE:]
        samples = codec.decode(payload)
        if recorder is not None:
            self._record(recorder, ssrc, timestamp, samples)
        if echo is not None:
            echo.feed(samples)
            self.wake()

    def _record(self, recorder: AudioSink, ssrc: int, timestamp: int, samples: bytes) -> None:
        """Append to the recorder; a forward timestamp gap up to 2 s (lost packets, a pause
        in the peer's sending) becomes silence, so the recording keeps the call's timing."""
        if ssrc == self._recorded_ssrc:
            gap = (timestamp - self._recorded_next) & 0xFFFFFFFF
            if gap & 0x80000000:
                return  # late (reordered or duplicate): its time has been recorded already
            if 0 < gap <= MAX_GAP_FILL:
                recorder.write(bytes(2 * gap))
        self._recorded_ssrc = ssrc
        self._recorded_next = (timestamp + len(samples) // 2) & 0xFFFFFFFF
        recorder.write(samples)

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

    def stats(self) -> dict[int, StreamStats]:
        return {ssrc: stats.snapshot() for ssrc, stats in self.streams.items()}

    def close(self) -> None:
        """Stop listening and report a digit still pending: its end packets will not come,
        and the timer that would have flushed it must not outlive the endpoint."""
        self.enabled = False
        self.echo = None
        if self._dtmf_timer is not None:
            if self._dtmf_timer.active():
                self._dtmf_timer.cancel()
            self._dtmf_timer = None
        self.detector.flush()
        # Callbacks into the endpoint and ourselves go: an ended call must not be a
        # reference cycle that only the garbage collector frees.
        self.wake = _nothing
        self.on_dtmf = None
        self.latch = None
        self.detector.on_digit = _no_digit


def _no_digit(digit: DtmfDigit) -> None:
    """What a closed receiver's detector reports to: nobody."""


def _nothing() -> None:
    pass
