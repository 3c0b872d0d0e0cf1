"""`python -m bench --quick` runs every benchmark and prints every row of the table.

The benchmarks run in a subprocess (they drive their own reactor); this test checks that
the table is complete, not the figures: CI machines are too noisy for performance verdicts.
The whole module carries the `bench` marker, which the default ``python -m pytest`` run leaves
out; ``.ci/run`` runs it on its own line (``python -m pytest -q -m bench``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bench

REPO = Path(__file__).resolve().parent.parent

PARSE_ROWS = ("parse INVITE + 5 fields vs sipmessage",
              "parse INVITE + 5 fields vs twisted raw split")
UAS_PATH_ROWS = ("UAS path CPU per call, no sockets (SIPp's messages)",
                 "GC-tracked objects kept per finished call (32 s linger)")
CALLS_ROWS = ("instance <-> instance calls, one process",)
SCALE_ROWS = ("100 instances: create + bind", "100 instances: RSS per instance",
              "100 instances: cleanup()", "500 concurrent established calls: setup time",
              "500 concurrent established calls: RSS per call", "500 calls: hang up all")
OVERLOAD_ROWS = ("overload: 2x the clean rate, goodput",
                 "overload: OPTIONS answered within 0.3 s",
                 "overload: normal step 1 s after, clean")
FLOOR_ROWS = ("CPU per call: twsip vs the Twisted floor (SIPp uac, same rate)",
              "CPU per call: SIPp uas (C++), same steps")
SIPP_ROWS = ("SIPp uac -> 1 twsip instance, highest clean rate",)
MEDIA_ROWS = ("RTP streams in one process (both ends), p99 send error <= 5 ms",)
HAVE_SIPP = bool(shutil.which("sipp") or os.path.exists("/usr/bin/sipp"))


def _have(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[dict]]:
    out = tmp_path_factory.mktemp("bench") / "rows.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
    only = "parse,uas_path,calls,scale,media" + (",sipp_load,overload,floor" if HAVE_SIPP else "")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", only, "--json", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, json.loads(out.read_text())


def _rows(quick_run: tuple[str, list[dict]], names: tuple[str, ...]) -> list[dict]:
    stdout, rows = quick_run
    by_figure = {r["figure"]: r for r in rows}
    found = []
    for name in names:
        assert name in by_figure, f"row {name!r} missing from:\n{stdout}"
        assert name in stdout, f"row {name!r} not printed:\n{stdout}"
        found.append(by_figure[name])
    return found


def test_parse_rows(quick_run: tuple[str, list[dict]]) -> None:
    for row in _rows(quick_run, PARSE_ROWS):
        if row["skipped"]:
            assert not _have("sipmessage"), row["skipped"]
            continue
        assert row["measured"] > 0 and row["reference"] > 0, row


def test_uas_path_rows(quick_run: tuple[str, list[dict]]) -> None:
    cpu, objects = _rows(quick_run, UAS_PATH_ROWS)
    assert cpu["measured"] > 0, cpu
    # What a finished call leaves for its 32 s of Timer L/J: a few small objects, not its
    # messages and session (which were ~80 GC-tracked objects before the hot-path work).
    assert objects["measured"] < 10, objects


def test_calls_row(quick_run: tuple[str, list[dict]]) -> None:
    (row,) = _rows(quick_run, CALLS_ROWS)
    assert row["measured"] > 0, row


def test_scale_rows(quick_run: tuple[str, list[dict]]) -> None:
    rows = _rows(quick_run, SCALE_ROWS)
    assert all(r["measured"] is not None and r["measured"] >= 0 for r in rows), rows
    assert "100 ports bound" in rows[0]["notes"][0], rows[0]
    assert "0 ports and 0 twsip timers left" in rows[2]["notes"][0], rows[2]
    assert "500 established, 0 failed" in rows[3]["notes"][0], rows[3]


@pytest.mark.skipif(not HAVE_SIPP, reason="sipp is not installed (Debian package sip-tester)")
def test_media_row(quick_run: tuple[str, list[dict]]) -> None:
    (row,) = _rows(quick_run, MEDIA_ROWS)
    assert row["measured"] == 25 and row["unit"] == "streams"


def test_sipp_rows(quick_run: tuple[str, list[dict]]) -> None:
    (row,) = _rows(quick_run, SIPP_ROWS)
    assert not row["skipped"], row
    assert row["measured"] > 0 and row["reference"] > 0, row


@pytest.mark.skipif(not HAVE_SIPP, reason="sipp is not installed (Debian package sip-tester)")
def test_overload_rows(quick_run: tuple[str, list[dict]]) -> None:
    goodput, probes, after = _rows(quick_run, OVERLOAD_ROWS)
    assert goodput["measured"] > 0 and goodput["reference"] > 0, goodput
    assert probes["measured"] > 0, probes
    assert after["measured"] is not None, after


@pytest.mark.skipif(not HAVE_SIPP, reason="sipp is not installed (Debian package sip-tester)")
def test_floor_rows(quick_run: tuple[str, list[dict]]) -> None:
    twsip, sipp = _rows(quick_run, FLOOR_ROWS)
    assert twsip["measured"] > 0 and twsip["reference"] > 0, twsip
    assert sipp["measured"] is not None, sipp


def test_table_header(quick_run: tuple[str, list[dict]]) -> None:
    stdout, _ = quick_run
    for column in ("figure", "measured", "reference (same run)", "ratio", "target", "met?"):
        assert column in stdout


# -- hot-path invariants the benchmarks rely on ----------------------------------------------
# The performance work made finished calls leave almost nothing behind (transactions let go
# of messages they cannot use, linger timers share one DelayedCall, an ended session is not
# kept alive by its transaction, no reference cycles). These pin down that the protocol
# behaviour around those places did not change.

import gc  # noqa: E402

from twisted.internet.task import Clock  # noqa: E402

from bench.uas_path import IN_DIALOG, INVITE  # noqa: E402
from twsip.sip.message import Request, Response, parse  # noqa: E402
from twsip.testing import FakeNetwork  # noqa: E402
from twsip.sip.transaction import (  # noqa: E402
    NO_USER,
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    TimerSettings,
    TransactionLayer,
    TransactionState,
)

PEER = ("127.0.0.1", 5070)


def _request(method: str, branch: str) -> Request:
    return Request(method, "sip:200@127.0.0.1:5062", {
        "via": [f"SIP/2.0/UDP 127.0.0.1:5070;branch={branch}"],
        "max-forwards": ["70"],
        "from": ["<sip:100@127.0.0.1:5070>;tag=a1"],
        "to": ["<sip:200@127.0.0.1:5062>;tag=b1"],
        "call-id": [f"{branch}@127.0.0.1"],
        "cseq": [f"1 {method}"],
    })


def test_linger_timers_fire_on_time_from_one_delayed_call() -> None:
    clock, sent = Clock(), []
    layer = TransactionLayer(lambda data, addr, msg: sent.append(msg), clock, TimerSettings())
    bye = _request("BYE", "z9hG4bKj")
    server = ServerNonInviteTransaction(layer, bye, PEER)
    server.respond(bye.response(200))  # Timer J: 32 s
    clock.advance(1)
    options = _request("OPTIONS", "z9hG4bKk")
    client = ClientNonInviteTransaction(layer, options, PEER, NO_USER)
    client.receive(parse(options.response(200).to_bytes()))  # type: ignore[arg-type]
    assert client.state is TransactionState.COMPLETED  # Timer K: T4 = 5 s, so at 6 s
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(4.999)
    assert client.state is TransactionState.COMPLETED
    clock.advance(0.001)
    assert client.state is TransactionState.TERMINATED
    assert server.state is TransactionState.COMPLETED
    clock.advance(25.999)
    assert server.state is TransactionState.COMPLETED
    clock.advance(0.001)
    assert server.state is TransactionState.TERMINATED
    assert clock.getDelayedCalls() == [] and len(layer) == 0


def test_a_transaction_that_ends_early_leaves_no_linger_timer() -> None:
    clock = Clock()
    layer = TransactionLayer(lambda *a: None, clock, TimerSettings())
    invite = _request("INVITE", "z9hG4bKl")
    tx = ServerInviteTransaction(layer, invite, PEER)
    tx.respond(invite.response(200, to_tag="t"))  # Accepted, Timer L
    assert clock.getDelayedCalls()
    tx.terminate()
    assert clock.getDelayedCalls() == [] and len(layer) == 0
    tx2 = ServerInviteTransaction(layer, _request("INVITE", "z9hG4bKm"), PEER)
    tx2.respond(invite.response(200, to_tag="t"))
    layer.close()
    assert clock.getDelayedCalls() == [] and tx2.state is TransactionState.TERMINATED


def _sipp_call(net: FakeNetwork, port: int, peer, n: int = 1) -> tuple[bytes, str]:
    """INVITE, ACK, BYE as SIPp sends them; the 200 to the BYE and the callee's tag."""
    peer.send(INVITE.format(n=n, port=port).encode(), ("127.0.0.1", port))
    net.pump()
    answers = [data for data, _ in peer.take()]
    assert [a.split(b" ", 2)[1] for a in answers] == [b"100", b"180", b"200"]
    tag = parse(answers[2]).to.tag
    for method, b, cseq in (("ACK", 5, 1), ("BYE", 7, 2)):
        peer.send(IN_DIALOG.format(method=method, n=n, b=b, port=port, tag=tag,
                                   cseq=cseq).encode(), ("127.0.0.1", port))
    net.pump()
    (ok,) = [data for data, _ in peer.take()]
    return ok, tag


def test_a_retransmitted_bye_gets_the_same_200_after_the_call() -> None:
    net = FakeNetwork()
    ua = net.add_instance("100")
    ua.start_serving(auto_answer=True)
    seen: list = []
    ua.observers.append(seen.append)
    peer = net.endpoint()
    ok, tag = _sipp_call(net, ua.port, peer)
    assert ok.startswith(b"SIP/2.0 200 OK") and not ua.calls
    seen.clear()
    peer.send(IN_DIALOG.format(method="BYE", n=1, b=7, port=ua.port, tag=tag,
                               cseq=2).encode(), ("127.0.0.1", ua.port))
    net.pump()
    assert [data for data, _ in peer.take()] == [ok]
    out = [e for e in seen if e.direction == "out"]
    assert len(out) == 1 and isinstance(out[0].message, Response)
    assert out[0].message.status == 200 and out[0].message.to.tag == tag
    net.run(net.cleanup())


def test_a_late_cancel_is_answered_with_the_callees_tag() -> None:
    net = FakeNetwork()
    ua = net.add_instance("100")
    ua.start_serving(auto_answer=True)
    peer = net.endpoint()
    _, tag = _sipp_call(net, ua.port, peer)
    cancel = INVITE.format(n=1, port=ua.port).replace("INVITE sip:", "CANCEL sip:", 1) \
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL").split("Content-Type:")[0] \
        + "Content-Length: 0\r\n\r\n"
    peer.send(cancel.encode(), ("127.0.0.1", ua.port))
    net.pump()
    (answer,) = [parse(data) for data, _ in peer.take()]
    assert answer.status == 200 and answer.to.tag == tag  # type: ignore[union-attr]
    net.run(net.cleanup())


def test_a_retransmitted_2xx_after_hangup_gets_the_same_ack() -> None:
    net = FakeNetwork()
    caller = net.add_instance("100")
    callee = net.endpoint()
    target = f"sip:200@127.0.0.1:{callee.address[1]}"
    d = caller.invite(target)
    net.pump()
    ((invite_data, _),) = callee.take()
    invite = parse(invite_data)
    ok = invite.response(200, to_tag="callee1")  # type: ignore[union-attr]
    ok.set("contact", f"<{target}>")
    callee.send(ok.to_bytes(), caller.address)
    net.pump()
    session = net.result(d)
    ((ack, _),) = callee.take()
    bye_done = session.hangup()
    net.pump()
    ((bye_data, _),) = callee.take()
    callee.send(parse(bye_data).response(200).to_bytes(), caller.address)  # type: ignore
    net.pump()
    net.result(bye_done)
    callee.send(ok.to_bytes(), caller.address)  # the 2xx again, within Timer M
    net.pump()
    assert [data for data, _ in callee.take()] == [ack]
    net.run(net.cleanup())


def test_calls_leave_no_reference_cycles_behind() -> None:
    net = FakeNetwork(keep_log=False)
    caller, callee = net.add_instance("100"), net.add_instance("200")
    callee.start_serving(auto_answer=True)
    peer = net.endpoint()

    def twsip_call() -> None:
        session = net.run(caller.invite(callee.uri))
        net.run(session.hangup())

    for _ in range(3):  # warm up caches
        twsip_call()
    _sipp_call(net, callee.port, peer, 1)
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for n in range(2, 12):
            twsip_call()
            _sipp_call(net, callee.port, peer, n)
        gc.collect()
        garbage = [type(o).__qualname__ for o in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()
    assert garbage == [], f"calls left cyclic garbage: {sorted(set(garbage))}"
    net.run(net.cleanup())
