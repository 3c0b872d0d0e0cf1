"""The media of one call: its RTP endpoint, seen from the dialog that owns it.

A session opens its `CallMedia` when it needs a port for its SDP (the caller when it sends
the INVITE, the callee when it answers), configures it from the offer/answer outcome, and
closes it when the call ends. What the flow's nodes ask of a call's media lives here:

- play a WAV file (PlayAudio);
- send digits (SendDTMF): RFC 4733 events when the peer's SDP has telephone-event, else one
  SIP INFO per digit (``application/dtmf-relay``), which the dialog sends for us;
- receive digits (DTMFReceived), from RTP events or INFO alike, kept in order until a node
  takes them, so a digit that arrives before its node starts is not lost;
- record what was received (``--record DIR``) and report the RTP statistics.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredQueue, QueueOverflow, succeed
from twisted.logger import Logger

from twsip.interfaces import TimeSource, UDPReactor
from twsip.lexical import Address
from twsip.media.dtmf import DtmfDigit, validate_digits
from twsip.media.endpoint import Direction, EndpointReport, PayloadTypes, RtpEndpoint
from twsip.media.g711 import CODECS
from twsip.media.net import listen_rtp
from twsip.media.wav import WavWriter

__all__ = ["CallMedia", "DTMF_INFO_TYPES", "MediaFactory", "dtmf_info_body", "parse_dtmf_info",
           "recording_name"]

log = Logger(namespace="twsip.media")

# Content types of SIP INFO that carry a digit (the de-facto packages; RFC 6086 leaves them
# to vendors): "Signal=5\r\nDuration=160" and a bare "5".
DTMF_INFO_TYPES = ("application/dtmf-relay", "application/dtmf")
_SIGNAL = re.compile(r"(?im)^\s*signal\s*=\s*([0-9A-Da-d*#])\s*$")
MAX_QUEUED_DIGITS = 256  # digits nobody has taken yet; beyond, the oldest flow is broken


def dtmf_info_body(digit: str, duration_ms: int) -> bytes:
    """The body of an ``application/dtmf-relay`` INFO for one digit."""
    return f"Signal={digit}\r\nDuration={duration_ms}\r\n".encode("ascii")


def parse_dtmf_info(content_type: str | None, body: bytes) -> str | None:
    """The digit an INFO carries, or None when it carries none we understand."""
    if content_type not in DTMF_INFO_TYPES:
        return None
    text = body.decode("ascii", "replace")
    if content_type == "application/dtmf-relay":
        match = _SIGNAL.search(text)
        return match.group(1).upper() if match else None
    text = text.strip()
    return text.upper() if len(text) == 1 and text in "0123456789ABCDabcd*#" else None


class CallMedia:
    """One call's RTP endpoint and digits; see the module docstring."""

    def __init__(self, endpoint: RtpEndpoint, clock: TimeSource,
                 recording: WavWriter | None = None) -> None:
        self.endpoint = endpoint
        self.clock = clock
        self.recording = recording
        self.digits: DeferredQueue[str] = DeferredQueue(size=MAX_QUEUED_DIGITS)
        self.received: list[tuple[str, str]] = []  # (digit, "rtp" or "info"), in order
        self.send_info: Callable[[str], Deferred[Any]] | None = None  # set by the dialog
        self.peer_has_events = False
        self.closed = False
        self.final_report: EndpointReport | None = None  # what report() said at close
        endpoint.on_dtmf = self._rtp_digit

    @classmethod
    def open(cls, reactor: UDPReactor, host: str, record_path: str | None = None
             ) -> CallMedia:
        """Bind a new endpoint on `host` (a free port) and, with `record_path`, record."""
        recording = WavWriter(record_path) if record_path is not None else None
        # The media layer types the reactor by Twisted's zope interfaces, twsip by Protocols
        # (twsip.interfaces): the same object, which mypy cannot match across the two.
        twisted_reactor: Any = reactor
        endpoint = RtpEndpoint(twisted_reactor, recorder=recording)
        try:
            listen_rtp(twisted_reactor, endpoint, 0, host=host)
        except Exception:
            if recording is not None:
                recording.close()
            raise
        return cls(endpoint, reactor, recording)

    @property
    def port(self) -> int:
        port = self.endpoint.local_port
        assert port is not None, "the endpoint is closed"
        return port

    def configure(self, *, remote: Address | None, codec: str, audio_pt: int | None,
                  event_pt: int | None, direction: str, receive_event_pt: int | None = 101
                  ) -> None:
        """Apply an offer/answer outcome: where to send, with which payload types (the
        peer's numbers), in which direction."""
        chosen = CODECS[codec.upper()]
        self.peer_has_events = event_pt is not None
        self.endpoint.set_payload_types(
            send=PayloadTypes(chosen, audio_pt, event_pt),
            receive=PayloadTypes(chosen, audio_pt, receive_event_pt))
        if remote is not None:
            self.endpoint.set_remote(*remote)
        self.endpoint.set_direction(Direction(direction))

    # -- what flow nodes ask ---------------------------------------------------------------
    def play_file(self, path: str) -> Deferred[bool]:
        """Send a WAV file (any PCM WAV, converted to 8 kHz mono); fires when all is sent."""
        return self.endpoint.play_file(path)

    def send_dtmf(self, digits: str, interval_ms: int = 100, duration_ms: int = 100
                  ) -> Deferred[str]:
        """Send `digits`; fires with how: "rtp" (RFC 4733) or "info" (SIP INFO per digit)."""
        digits = validate_digits(digits)
        if self.peer_has_events:
            d = self.endpoint.send_dtmf(digits, interval_ms, duration_ms)
            return d.addCallback(lambda sent: "rtp" if sent else "stopped")
        if self.send_info is None:
            raise RuntimeError("no dialog to send SIP INFO on")
        log.info("the peer's SDP has no telephone-event: sending {digits} as SIP INFO",
                 digits=digits)
        return Deferred.fromCoroutine(self._send_infos(digits, interval_ms, duration_ms))

    async def _send_infos(self, digits: str, interval_ms: int, duration_ms: int) -> str:
        from twisted.internet.task import deferLater

        clock: Any = self.clock  # a TimeSource; deferLater is typed with IReactorTime
        assert self.send_info is not None
        for index, digit in enumerate(digits):
            if self.closed:
                return "stopped"
            if index:
                await deferLater(clock, interval_ms / 1000, lambda: None)
            await self.send_info(digit)
        return "info"

    def next_digit(self) -> Deferred[str]:
        """The oldest digit received and not yet taken (waits for one)."""
        return self.digits.get()

    def info_digit(self, digit: str) -> None:
        """A digit from a SIP INFO of the dialog."""
        self._digit(digit, "info")

    def _rtp_digit(self, digit: DtmfDigit) -> None:
        self._digit(digit.digit, "rtp")

    def _digit(self, digit: str, how: str) -> None:
        self.received.append((digit, how))
        try:
            self.digits.put(digit)
        except QueueOverflow:
            log.warn("{count} DTMF digits nobody took: dropping {digit}",
                     count=MAX_QUEUED_DIGITS, digit=digit)

    # -- results and the end ---------------------------------------------------------------
    def report(self) -> EndpointReport:
        """The endpoint's figures: live while open, as they were at close afterwards."""
        if self.final_report is not None:
            return self.final_report
        return self.endpoint.report()

    def close(self) -> Deferred[None]:
        """Stop the endpoint, finish the recording, give up waits for digits."""
        if self.closed:
            return succeed(None)
        self.closed = True
        self.final_report = self.endpoint.report()
        # Let go of the dialog and of ourselves: an ended call must not be a reference
        # cycle that only the garbage collector frees (3000 calls/s make that costly).
        self.send_info = None
        self.endpoint.on_dtmf = None
        for waiting in list(self.digits.waiting):
            waiting.cancel()
        d = self.endpoint.close()
        if self.recording is not None:
            self.recording.close()
        return d


def recording_name(directory: str, dn: str, call_id: str) -> str:
    """`directory/<dn>-<call id>.wav`, with the Call-ID reduced to safe file-name text."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", call_id)[:80]
    return os.path.join(directory, f"{dn}-{safe}.wav")


class MediaFactory:
    """Opens the media of each call of one instance (on the instance's reactor, which must
    be able to bind UDP: the real reactor or a `twsip.testing.FakeNetwork`)."""

    def __init__(self, reactor: UDPReactor, host: str, dn: str,
                 record_dir: str | None = None) -> None:
        self.reactor = reactor
        self.host = host
        self.dn = dn
        self.record_dir = record_dir

    def open(self, call_id: str) -> CallMedia:
        path = None
        if self.record_dir is not None:
            path = recording_name(self.record_dir, self.dn, call_id)
        return CallMedia.open(self.reactor, self.host, path)
