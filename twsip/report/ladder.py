"""SIP ladder diagrams of a run, drawn from the messages really sent and received.

One lane per instance (named by its DN), plus one per outside address that took part (a
SIPp, a softphone). One arrow per message on the wire: a message between two instances of
the run is captured twice (sent, then received) but drawn once, at the time it was sent.

`ladder_arrows(result)` gives the lanes and arrows; `text_ladder` draws them for a terminal
and `html_ladder` as one self-contained HTML page (inline SVG, inline CSS and script, no
network), where hovering an arrow shows the message's full text and clicking shows it in a
panel; every message is also listed under the diagram in full.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape

from twsip.flow.events import SipMessage
from twsip.flow.result import ScenarioResult

__all__ = ["Arrow", "Lane", "html_ladder", "ladder_arrows", "text_ladder", "write_html_ladder"]


@dataclass(frozen=True)
class Lane:
    name: str  # the DN, or host:port for an outside peer
    address: str
    color: str | None = None
    external: bool = False


@dataclass
class Arrow:
    index: int
    elapsed: float  # when it was sent (or received, for a message from outside)
    source: int  # lane indexes
    target: int
    label: str  # "INVITE", "180 Ringing"
    call: str  # the flow's callId of its call, or a short Call-ID
    message: SipMessage
    received: float | None = None  # when the receiving instance saw it, if it did


def ladder_arrows(result: ScenarioResult) -> tuple[list[Lane], list[Arrow]]:
    lanes = [Lane(i.dn, i.address, i.color) for i in result.instances]
    lane_of = {(i.host, i.port): k for k, i in enumerate(result.instances)}
    internal = set(lane_of)

    def lane(address: tuple[str, int]) -> int:
        if address not in lane_of:
            lane_of[address] = len(lanes)
            lanes.append(Lane(f"{address[0]}:{address[1]}", "(outside the run)", None,
                              external=True))
        return lane_of[address]

    arrows: list[Arrow] = []
    unmatched: dict[tuple, list[Arrow]] = {}
    for message in result.messages:
        local = (message.local[0], message.local[1])
        peer = (message.peer[0], message.peer[1])
        key = (message.summary, message.call_id, message.cseq)
        if message.direction == "out":
            arrow = Arrow(len(arrows), message.elapsed, lane(local), lane(peer),
                          message.summary, _call_name(result, message.call_id), message)
            arrows.append(arrow)
            if peer in internal:
                unmatched.setdefault((*key, local, peer), []).append(arrow)
            continue
        if peer in internal:  # the receiving end of a message drawn already
            waiting = unmatched.get((*key, peer, local))
            if waiting:
                waiting.pop(0).received = message.elapsed
                continue
        arrows.append(Arrow(len(arrows), message.elapsed, lane(peer), lane(local),
                            message.summary, _call_name(result, message.call_id), message,
                            message.elapsed))
    return lanes, arrows


def _call_name(result: ScenarioResult, call_id: str) -> str:
    return result.calls.get(call_id) or call_id.partition("@")[0][:10]


# -- text --------------------------------------------------------------------------------

def text_ladder(result: ScenarioResult) -> str:
    """The ladder for a terminal: a time column, one lane per instance, one row a message."""
    lanes, arrows = ladder_arrows(result)
    if not lanes:
        return "(no instances)"
    longest = max([len(a.label) for a in arrows] + [len(lane.name) for lane in lanes]
                  + [len(lane.address) for lane in lanes] + [10])
    gap = min(max(longest + 8, 22), 44)
    left = 10
    xs = [left + gap // 2 + k * gap for k in range(len(lanes))]
    width = xs[-1] + gap // 2
    several_calls = len({a.message.call_id for a in arrows}) > 1

    def centred(row: list[str], x: int, text: str) -> None:
        start = max(0, x - len(text) // 2)
        for k, ch in enumerate(text):
            if start + k < len(row):
                row[start + k] = ch

    def blank() -> list[str]:
        row = [" "] * width
        for x in xs:
            row[x] = "|"
        return row

    lines = []
    for attr in ("name", "address"):
        row = [" "] * width
        for x, lane in zip(xs, lanes, strict=True):
            centred(row, x, getattr(lane, attr))
        lines.append("".join(row).rstrip())
    lines.append("".join(blank()).rstrip())
    for arrow in arrows:
        row = blank()
        a, b = xs[arrow.source], xs[arrow.target]
        stamp = f"{arrow.elapsed:8.3f}"
        row[: len(stamp)] = list(stamp)
        if a == b:  # a message to itself
            text = f"<- {arrow.label} (to itself)"
            for k, ch in enumerate(text, start=a + 1):
                if k < len(row):
                    row[k] = ch
                else:
                    row.append(ch)
        else:
            lo, hi = min(a, b), max(a, b)
            for x in range(lo + 1, hi):
                row[x] = "-"
            if b > a:
                row[hi - 1] = ">"
            else:
                row[lo + 1] = "<"
            room = hi - lo - 5
            label = arrow.label if len(arrow.label) <= room else arrow.label[: max(room, 1)]
            centred(row, (lo + hi + 1) // 2, f" {label} ")
        line = "".join(row).rstrip()
        if several_calls:
            line = line.ljust(width) + f"  {arrow.call}"
        lines.append(line)
    lines.append("".join(blank()).rstrip())
    if result.media:
        lines.append("")
        lines += [record.summary() for record in result.media]
    return "\n".join(lines)


# -- HTML --------------------------------------------------------------------------------

_COLOR = re.compile(r"^(#[0-9a-fA-F]{3,8}|[a-zA-Z]{3,20})$")
# XML 1.0 allows no C0 control characters but tab, newline and carriage return
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")


def _text(value: str) -> str:
    return escape(_CONTROL.sub("\ufffd", value), quote=True)


def _color(value: str | None, fallback: str = "#64748b") -> str:
    return value if value and _COLOR.match(value) else fallback


_CHAR_WIDTH = 7.3  # px per character of a 12 px monospace label (at most, across fonts)
_LABEL_MARGIN = 10  # px kept free between a label and a lifeline
_MIN_GAP, _MAX_GAP = 220, 360  # px between lifelines


def _fit(label: str, room: float) -> str:
    """`label` cut (with an ellipsis) to the characters that fit in `room` px; the whole
    message is still in the arrow's tooltip and in the listing."""
    fits = max(int(room // _CHAR_WIDTH), 1)
    return label if len(label) <= fits else label[: fits - 1] + "\u2026"


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #1e293b; }
h1 { font-size: 1.3em; margin: 0 0 .3em 0; }
.outcome-completed { color: #15803d; } .outcome-failed, .outcome-stopped { color: #b91c1c; }
.layout { display: flex; gap: 1.5em; align-items: flex-start; }
svg { background: #f8fafc; border: 1px solid #cbd5e1; }
svg text { font-family: ui-monospace, monospace; font-size: 12px; }
g.msg { cursor: pointer; }
g.msg:hover .shaft, g.msg.selected .shaft { stroke-width: 3; }
g.msg.selected text.label { font-weight: bold; }
#detail { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 12px;
  background: #0f172a; color: #e2e8f0; padding: 1em; min-width: 28em; max-width: 48em;
  position: sticky; top: 1em; margin: 0; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #cbd5e1; padding: .2em .6em; text-align: left; font-size: .9em; }
.state-completed { color: #15803d; } .state-failed { color: #b91c1c; }
.state-cancelled, .state-pending { color: #64748b; }
details pre { background: #f1f5f9; padding: .6em; margin: .3em 0 .8em 0; }
"""

_SCRIPT = """
(function () {
  var detail = document.getElementById('detail');
  var groups = document.querySelectorAll('g.msg');
  Array.prototype.forEach.call(groups, function (g) {
    g.addEventListener('click', function () {
      Array.prototype.forEach.call(groups, function (o) { o.classList.remove('selected'); });
      g.classList.add('selected');
      var source = document.getElementById('text-' + g.getAttribute('data-index'));
      detail.textContent = source.textContent;
    });
  });
})();
"""


def html_ladder(result: ScenarioResult, title: str | None = None) -> str:
    """One self-contained, well-formed HTML page: ladder, node table, every message."""
    lanes, arrows = ladder_arrows(result)
    several_calls = len({a.message.call_id for a in arrows}) > 1
    labels = [arrow.label + (f" [{arrow.call}]" if several_calls else "") for arrow in arrows]
    # Lanes as far apart as the longest label needs (within bounds): a label sits in one
    # gap between two lifelines, so it never runs across a lifeline; longer ones are cut.
    longest = max((len(label) for label in labels), default=0)
    lane_gap = min(max(_MIN_GAP, round(longest * _CHAR_WIDTH) + 2 * _LABEL_MARGIN), _MAX_GAP)
    left, top, row_h = 90, 70, 30
    xs = [left + lane_gap // 2 + k * lane_gap for k in range(len(lanes))]
    width = (xs[-1] + lane_gap // 2 + 20) if xs else 300
    height = top + 20 + row_h * (len(arrows) + 1)
    title = title or f"twsip ladder: {result.outcome}"

    svg: list[str] = [
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="SIP ladder diagram">',
        "<defs>" + "".join(
            f'<marker id="head{k}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
            f'markerHeight="8" orient="auto"><path d="M 0 0 L 10 5 L 0 10 z" '
            f'fill="{_color(lane.color)}"/></marker>' for k, lane in enumerate(lanes))
        + "</defs>",
    ]
    for x, lane in zip(xs, lanes, strict=True):
        color = _color(lane.color)
        svg.append(f'<g class="lane"><text x="{x}" y="24" text-anchor="middle" '
                   f'font-weight="bold" fill="{color}">{_text(lane.name)}</text>'
                   f'<text x="{x}" y="42" text-anchor="middle" fill="#64748b">'
                   f'{_text(lane.address)}</text>'
                   f'<line x1="{x}" y1="{top - 18}" x2="{x}" y2="{height - 10}" '
                   f'stroke="{color}" stroke-width="2" stroke-dasharray="4 3"/></g>')
    for row, arrow in enumerate(arrows):
        y = top + 10 + row_h * row
        a, b = xs[arrow.source], xs[arrow.target]
        color = _color(lanes[arrow.source].color)
        text = arrow.message.text
        if a == b:
            shape = (f'<path class="shaft" d="M {a} {y - 6} h 40 v 12 h -40" fill="none" '
                     f'stroke="{color}" stroke-width="1.5" marker-end="url(#head{arrow.source})"/>')
            label_x, anchor = a + 46, "start"
            last = arrow.source == len(lanes) - 1  # only the margin is left on its right
            room = (lane_gap // 2 + 20 if last else lane_gap) - 46 - _LABEL_MARGIN
        else:
            shape = (f'<line class="shaft" x1="{a}" y1="{y}" x2="{b}" y2="{y}" '
                     f'stroke="{color}" stroke-width="1.5" marker-end="url(#head{arrow.source})"/>'
                     f'<line x1="{a}" y1="{y}" x2="{b}" y2="{y}" stroke="transparent" '
                     f'stroke-width="14"/>')
            # In the gap next to the sender: an arrow that spans lanes (the transferee's
            # INVITE to the target, past the transferor) would otherwise have its label
            # centred on the lifeline it passes.
            label_x = a + (lane_gap if b > a else -lane_gap) // 2
            anchor, room = "middle", lane_gap - 2 * _LABEL_MARGIN
        label = _fit(labels[row], room)
        svg.append(
            f'<g class="msg" data-index="{arrow.index}" tabindex="0">'
            f'<title>{_text(text)}</title>'
            f'<text x="8" y="{y + 4}" fill="#64748b">{arrow.elapsed:.3f}</text>'
            f'{shape}'
            f'<text class="label" x="{label_x}" y="{y - 5}" text-anchor="{anchor}">'
            f'{_text(label)}</text></g>')
    svg.append("</svg>")

    nodes = ["<table><thead><tr><th>node</th><th>instance</th><th>type</th><th>state</th>"
             "<th>start (s)</th><th>end (s)</th><th>detail</th></tr></thead><tbody>"]
    for record in result.nodes.values():
        start = "" if record.started is None else f"{record.started:.3f}"
        end = "" if record.ended is None else f"{record.ended:.3f}"
        nodes.append(
            f'<tr><td>{_text(record.label)} <small>({_text(record.id)})</small></td>'
            f'<td>{_text(record.dn)}</td><td>{_text(record.name)}</td>'
            f'<td class="state-{_text(record.state)}">{_text(record.state)}</td>'
            f'<td>{start}</td><td>{end}</td><td>{_text(record.detail)}</td></tr>')
    nodes.append("</tbody></table>")

    listing = []
    for arrow in arrows:
        source, target = lanes[arrow.source].name, lanes[arrow.target].name
        listing.append(
            f'<details id="msg-{arrow.index}"><summary>{arrow.elapsed:.3f} s '
            f'{_text(source)} \u2192 {_text(target)}: {_text(arrow.label)} '
            f'<small>Call-ID {_text(arrow.message.call_id)}</small></summary>'
            f'<pre id="text-{arrow.index}">{_text(arrow.message.text)}</pre></details>')

    where = f" at {_text(result.node_label or '')} ({_text(result.node_id)})" \
        if result.node_id else ""
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8"/>',
        f"<title>{_text(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        f'<h1>SIP ladder: <span class="outcome-{_text(result.outcome)}">'
        f"{_text(result.outcome)}</span></h1>",
        f"<p>{_text(result.reason)}{where}; {result.duration:.3f} s, {len(arrows)} "
        f"message(s) on the wire. Hover an arrow for the message, click to pin it.</p>",
        '<div class="layout">',
        "".join(svg),
        '<pre id="detail">Click an arrow to see the whole message.</pre>',
        "</div>",
        "<h2>Nodes</h2>",
        "".join(nodes),
        *_media_table(result),
        "<h2>Messages</h2>",
        "\n".join(listing),
        f"<script>{_SCRIPT}</script>",
        "</body>",
        "</html>",
        "",
    ])


def _media_table(result: ScenarioResult) -> list[str]:
    """Each call leg's RTP figures (RFC 3550: received, lost, jitter) as a table."""
    if not result.media:
        return []
    head = ("DN", "call", "Call-ID", "local port", "sent to", "direction", "sent",
            "received", "lost", "jitter (ms)", "payload types", "DTMF received")
    rows = ["<tr>" + "".join(f"<th>{_text(h)}</th>" for h in head) + "</tr>"]
    for r in result.media:
        cells = (r.dn, r.call, r.call_id, r.local_port, r.remote or "-", r.direction,
                 r.sent_packets, r.received_packets, r.lost, f"{r.jitter_ms:.2f}",
                 ", ".join(map(str, r.payload_types)) or "-", "".join(r.digits) or "-")
        rows.append("<tr>" + "".join(f"<td>{_text(str(c))}</td>" for c in cells) + "</tr>")
    return ["<h2>Media (RTP)</h2>", f'<table class="media">{"".join(rows)}</table>']


def write_html_ladder(result: ScenarioResult, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(html_ladder(result))
