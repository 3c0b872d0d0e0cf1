"""JUnit XML of flow runs, for the CI test reporters (Jenkins, GitLab, GitHub actions).

Those readers agree on a small common subset of the (never standardised) JUnit format:
``<testsuites>`` holding one ``<testsuite name tests failures errors skipped time
timestamp>`` each, holding ``<testcase name classname time>`` with at most one
``<failure message type>``, ``<error message type>`` or ``<skipped message>``. Only that
subset is written. A flow is a suite (named by its file) and each node a test case (named
by its label, its class the instance's DN), so a red build points at the node that broke.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timezone

from twsip.flow.result import CANCELLED, COMPLETED, FAILED, PENDING, RUNNING, ScenarioResult
from twsip.report.ladder import text_ladder

__all__ = ["SuiteEntry", "junit_xml", "write_junit"]


@dataclass
class SuiteEntry:
    """One flow of a suite: its file, and its result, or why it never ran (`error`)."""

    name: str
    result: ScenarioResult | None = None
    error: str | None = None
    started: float | None = None  # wall-clock seconds, for the timestamp


def _seconds(value: float | None) -> str:
    return f"{max(value or 0.0, 0.0):.3f}"


def _clean(text: str) -> str:
    """XML 1.0 cannot hold most control characters, even escaped: a SIP message from a
    hostile peer may carry them, and the report must still parse."""
    return "".join(c if c in "\t\n\r" or ord(c) >= 0x20 else "\ufffd" for c in text)


def _suite(entry: SuiteEntry) -> ET.Element:
    suite = ET.Element("testsuite", name=entry.name)
    if entry.started is not None:
        suite.set("timestamp", datetime.fromtimestamp(entry.started, timezone.utc)
                  .strftime("%Y-%m-%dT%H:%M:%S"))
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    result = entry.result
    if result is None:
        case = ET.SubElement(suite, "testcase", name="load flow", classname=entry.name,
                             time="0.000")
        ET.SubElement(case, "error", message=_clean(entry.error or "not run"),
                      type="invalid flow").text = _clean(entry.error or "")
        counts.update(tests=1, errors=1)
        suite.set("time", "0.000")
    else:
        ladder = _clean(text_ladder(result))
        for record in result.nodes.values():
            counts["tests"] += 1
            case = ET.SubElement(suite, "testcase", name=_clean(record.label or record.name),
                                 classname=_clean(f"DN {record.dn}"),
                                 time=_seconds(record.duration))
            if record.state == FAILED and record.branched:
                # The flow was drawn for this (busy, no answer): its failure branch ran.
                ET.SubElement(case, "system-out").text = _clean(
                    f"failed as the flow allows, and its failure branch ran: {record.detail}")
            elif record.state == FAILED:
                counts["failures"] += 1
                failure = ET.SubElement(case, "failure", type=record.name,
                                        message=_clean(record.detail or "failed"))
                failure.text = f"{_clean(record.detail)}\n\n{ladder}"
            elif record.state in (PENDING, CANCELLED, RUNNING):
                counts["skipped"] += 1
                why = record.detail or ("not reached" if record.state == PENDING
                                        else record.state)
                ET.SubElement(case, "skipped", message=_clean(why))
            elif record.state != COMPLETED:  # a state this writer does not know
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=_clean(record.state))
        if not result.ok and counts["failures"] == 0:
            # stopped, or failed outside any node: still a red suite
            counts["tests"] += 1
            counts["failures"] += 1
            case = ET.SubElement(suite, "testcase", name="flow outcome", classname=entry.name,
                                 time=_seconds(result.duration))
            ET.SubElement(case, "failure", type=result.outcome,
                          message=_clean(result.reason)).text = ladder
        suite.set("time", _seconds(result.duration))
    for key, value in counts.items():
        suite.set(key, str(value))
    return suite


def junit_xml(entries: list[SuiteEntry], name: str = "twsip") -> bytes:
    """The document: ``<testsuites>`` with one ``<testsuite>`` per entry, UTF-8."""
    root = ET.Element("testsuites", name=name)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    time = 0.0
    for entry in entries:
        suite = _suite(entry)
        root.append(suite)
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
        time += float(suite.get("time", "0"))
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", _seconds(time))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def write_junit(entries: list[SuiteEntry], path: str) -> None:
    with open(path, "wb") as f:
        f.write(junit_xml(entries))
