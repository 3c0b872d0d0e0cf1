"""What the network throws at an instance, logged at a rate a person can read.

Garbage datagrams, responses that match no transaction and calls refused because the queue
is full come at whatever rate a peer chooses: 20,000 of them must not write 20,000 lines,
even (above all) under ``--quiet``. A `NoiseSummary` logs the first of each kind with its
details, then counts the rest and logs one line with the count at most every `interval`
seconds per kind. It runs on the instance's clock, so tests drive it with a `Clock`, and
`close()` leaves no DelayedCall behind.

Text copied from the wire into a log line goes through `printable` first, so that a
header cannot forge log lines (CR, LF) or smuggle terminal escapes.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from twsip.interfaces import DelayedCall, TimeSource, cancel_call

__all__ = ["NoiseSummary", "printable", "SUMMARY_INTERVAL"]

SUMMARY_INTERVAL = 10.0  # seconds between two lines of one kind


def printable(text: object, limit: int = 200) -> str:
    """`text` fit for one log line: non-printable characters and the bytes that were not
    UTF-8 (surrogate escapes) as \\xNN, and at most `limit` characters of it."""
    value = text if isinstance(text, str) else str(text)
    if len(value) > limit:
        value = value[:limit] + "..."
    if value.isprintable():
        return value
    out = []
    for ch in value:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}")
    return "".join(out)


def _at(peer: tuple[str, int]) -> str:
    return f"{printable(peer[0])}:{peer[1]}"


class _Window:
    __slots__ = ("count", "call", "what")

    def __init__(self, call: DelayedCall, what: str) -> None:
        self.count = 0
        self.call = call
        self.what = what


class NoiseSummary:
    """At most one warning per kind every `interval` s: the first with its details, then
    "N more" lines while the kind keeps coming; a quiet interval resets the kind."""

    def __init__(self, clock: TimeSource, logger: Logger, label: str,
                 interval: float = SUMMARY_INTERVAL) -> None:
        self.clock = clock
        self.log = logger
        self.label = label  # who is speaking, e.g. "DN 200"
        self.interval = interval
        self.counts: dict[str, int] = {}  # every one ever noted, by kind (for tests, stats)
        self.closed = False  # after close(): only counted, no line and no timer
        self._windows: dict[str, _Window] = {}

    def open(self) -> None:
        """Log again after `close()` (an instance that serves again)."""
        self.closed = False

    def note(self, kind: str, what: str, detail_format: str, **fields: Any) -> None:
        """One more of `kind` (e.g. "malformed"); `what` names them in the summary line
        ("malformed datagrams"), `detail_format` and `fields` describe this one."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if self.closed:
            return
        window = self._windows.get(kind)
        if window is not None:
            window.count += 1
            return
        self.log.warn("{label}: " + detail_format, label=self.label, kind=kind, **fields)
        self._open(kind, what)

    # -- the kinds an instance sees ----------------------------------------------------------
    def malformed(self, status: int | None, reason: str, peer: tuple[str, int]) -> None:
        """A datagram that is no SIP message we can read; `status` is the answer sent."""
        self.note("malformed", "malformed datagrams",
                  "{answer} malformed message from {peer}: {reason}", peer=_at(peer),
                  answer=f"answered {status} to a" if status else "dropped a",
                  reason=printable(reason))

    def stray(self, response: Any, peer: tuple[str, int]) -> None:
        """A response that matches no client transaction (§17.1.3): dropped."""
        self.note("stray", "responses matching no transaction",
                  "dropped a response matching no transaction from {peer}: {status} "
                  "call-id={call_id}", peer=_at(peer), status=response.status,
                  call_id=printable(response.get("call-id")))

    def overload(self, size: int | None, call_id: str) -> None:
        """A new call refused 486 because `incoming` holds `size` calls already."""
        self.note("overload", "calls refused 486 with the queue full",
                  "incoming queue full ({size}): answering 486 to call-id {call_id}",
                  size=size, call_id=printable(call_id))

    def _open(self, kind: str, what: str) -> None:
        call = self.clock.callLater(self.interval, self._window_over, kind)
        self._windows[kind] = _Window(call, what)

    def _window_over(self, kind: str) -> None:
        window = self._windows.pop(kind)
        if window.count:
            self._report(kind, window)
            self._open(kind, window.what)  # the next line no sooner than `interval` s on

    def _report(self, kind: str, window: _Window) -> None:
        self.log.warn("{label}: {count} more {what} in the last {interval:g} s",
                      label=self.label, kind=kind, count=window.count, what=window.what,
                      interval=self.interval)

    def close(self) -> None:
        """Say what is still counted, and cancel every timer (the instance's cleanup)."""
        self.closed = True
        windows, self._windows = self._windows, {}
        for kind, window in windows.items():
            cancel_call(window.call)
            if window.count:
                self._report(kind, window)
