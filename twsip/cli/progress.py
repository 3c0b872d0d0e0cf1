"""A progress line for long runs on a terminal: "nodes done / total", redrawn in place.

The live event lines already tell a person what happens; what they lack in a run of many
minutes is how far it has got. A pipe or a CI log must not get carriage returns and
escape codes, so the line is drawn only when the stream is a terminal.
"""

from __future__ import annotations

from typing import Any, Callable, TextIO

from twsip.flow.events import NodeStateChanged
from twsip.flow.result import RUNNING

__all__ = ["Progress"]

AFTER = 1.0  # seconds before a run counts as long enough to show progress
_CLEAR = "\r\x1b[K"


class Progress:
    """Counts the flow's nodes that have finished and draws them on `stream`.

    `seconds` is the clock (the reactor's); `clear` is called before a live line is
    printed to the same terminal, `draw` after it.
    """

    def __init__(self, stream: TextIO, name: str, total: int,
                 seconds: Callable[[], float]) -> None:
        isatty = getattr(stream, "isatty", None)
        self.enabled = bool(isatty and isatty()) and total > 0
        self.stream = stream
        self.name = name
        self.total = total
        self.seconds = seconds
        self.started = seconds()
        self.finished: set[str] = set()
        self.shown = False

    def event(self, event: Any) -> None:
        if isinstance(event, NodeStateChanged) and event.state != RUNNING:
            self.finished.add(event.node_id)
        self.draw()

    def draw(self) -> None:
        if not self.enabled or self.seconds() - self.started < AFTER:
            return
        self.stream.write(f"{_CLEAR}{self.name}: {len(self.finished)}/{self.total} "
                          f"nodes done")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write(_CLEAR)
            self.stream.flush()
            self.shown = False
