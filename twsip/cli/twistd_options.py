"""The options of ``twistd sipinstances`` that testers use: answer modes per DN, what
answered calls send, recording, pcap capture, live counters and --version.

A `usage.Options` base class, so that these options are one block of their own and
`twsip.service.Options` only inherits them; `check_testers` judges them against the graph
once it is known, so that every mistake is a usage error before anything starts.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.python import usage

from twsip.flow.model import ExecutionGraph
from twsip.report.pcap import check_writable
from twsip.sip.autoanswer import MEDIA_SOURCES, MODES, AnswerMode, parse_answer_mode

__all__ = ["TesterOptions", "TesterSettings", "tester_settings", "version_text"]


def version_text(with_twisted: bool = False) -> str:
    import twsip

    text = f"twsip {twsip.__version__}"
    if with_twisted:
        from twisted import copyright
        text += f" (Twisted {copyright.version})"
    return text


def _media(value: str) -> str:
    if value not in MEDIA_SOURCES:
        raise ValueError(f"unknown media {value!r}; one of: {', '.join(MEDIA_SOURCES)}")
    return value


_media.coerceDoc = "silence, echo or tone (440 Hz)."  # type: ignore[attr-defined]


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"not a number of seconds: {value!r}") from None
    if not 0.1 <= seconds <= 86400:
        raise ValueError(f"an interval from 0.1 to 86400 seconds, not {value}")
    return seconds


_seconds.coerceDoc = "Seconds between two lines, at least 0.1."  # type: ignore[attr-defined]


@dataclass
class TesterSettings:
    """The parsed tester options, as the service uses them."""

    answers: dict[str, AnswerMode] = field(default_factory=dict)  # DN -> mode
    default: AnswerMode | None = None  # every other auto-answering DN (None: answer)
    media: bool = True
    record_dir: str | None = None
    pcap: str | None = None
    stats: float | None = None


class TesterOptions(usage.Options):
    """The tester options (see the module docstring); `service.Options` inherits them."""

    optParameters = [
        ["media", None, None,
         "What auto-answered calls send: silence, echo (what they hear) or tone "
         "(440 Hz) [default: nothing]", _media],
        ["record", None, None,
         "Write one WAV per answered call of the audio it received into DIR."],
        ["pcap", None, None,
         "Write every SIP message and RTP packet to FILE (libpcap; Wireshark, tshark, "
         "sngrep), as they went over the loopback."],
        ["stats", None, None,
         "Log call counters every SECONDS (calls, answers, failures, retransmissions, "
         "messages/s) and totals at stop, also with --quiet", _seconds],
    ]
    optFlags = [
        ["no-media", None, "Signalling only: no RTP endpoint per call."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["answer"] = {}

    def opt_answer(self, value: str) -> None:
        """DN=MODE: how the instance with DN treats calls (repeatable). MODE: answer (180, 200), busy (486), reject:CODE (400-699), ring (180 forever), delay:MS (180, then 200 after MS), silent (100 only)."""  # noqa: E501 (usage prints it as written)
        dn, sep, mode = value.partition("=")
        if not sep or not dn.strip():
            raise usage.UsageError(f"--answer {value}: write DN=MODE, e.g. 200=busy "
                                   f"(MODE: {', '.join(MODES)})")
        try:
            self["answer"][dn.strip()] = parse_answer_mode(mode)
        except ValueError as exc:
            raise usage.UsageError(f"--answer {value}: {exc}") from None

    def opt_version(self) -> None:
        """Print twsip's and Twisted's versions and exit."""
        print(version_text(with_twisted=True))
        sys.exit(0)

    def check_testers(self, graph: ExecutionGraph) -> None:
        """Judge the tester options against the graph: unknown DNs, unwritable paths."""
        dns = [chain.config.dn for chain in graph.instances]
        for dn in self["answer"]:
            if dn not in dns:
                raise usage.UsageError(f"--answer {dn}=...: no instance has DN {dn} "
                                       f"(DNs: {', '.join(dns)})")
        if self["no-media"] and (self["media"] or self["record"]):
            raise usage.UsageError("--no-media leaves calls without RTP: it cannot go with "
                                   "--media or --record")
        record = self["record"]
        if record is not None and not (os.path.isdir(record) and os.access(record, os.W_OK)):
            raise usage.UsageError(f"--record {record}: not a folder this process can "
                                   f"write to")
        pcap = self["pcap"]
        if pcap is not None:
            why = check_writable(pcap)
            if why is not None:
                raise usage.UsageError(f"--pcap {pcap}: cannot be written ({why})")



def tester_settings(options: Mapping[str, Any]) -> TesterSettings:
    """The settings of parsed options (a plain mapping: tests pass dicts)."""
    media = MEDIA_SOURCES[options["media"]] if options.get("media") else None
    answers: Mapping[str, AnswerMode] = options.get("answer") or {}
    return TesterSettings(
        answers={dn: mode.with_media(media) for dn, mode in answers.items()},
        default=AnswerMode().with_media(media) if media else None,
        media=not options.get("no-media"), record_dir=options.get("record"),
        pcap=options.get("pcap"), stats=options.get("stats"))
