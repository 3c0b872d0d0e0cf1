"""SIPp as a real peer (issue 3 §5, §2; issue 2 §8): calls from and to twsip instances.

SIPp runs as a child process of the reactor (never blocking it), always with ``-i 127.0.0.1``
so that its Via and Contact are loopback, and always bounded (``-timeout`` plus a hard kill).
Its ``-trace_stat`` file gives the counts of successful and failed calls; exit code 0 means
every call succeeded. Each run leaves ``stat.csv``, ``errors.log`` and ``messages.log`` (the
full SIP trace) in the test's tmp directory, named in any failure message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import pytest_twisted
from twisted.internet.defer import CancelledError, Deferred, DeferredSemaphore, gatherResults

from twsip.sip.dialog import CallFailed, ServerSession
from twsip.sip.instance import MessageEvent, SipInstance
from twsip.manager import InstanceManager
from twsip.sip.message import Request, Response
from twsip.flow.model import graph_for_instances

from sipp_helper import SCENARIOS, SippResult, kill_leftovers, requires_sipp, run_sipp, \
    start_sipp_server

pytestmark = requires_sipp


@pytest_twisted.async_yield_fixture
async def manager():
    m = InstanceManager(base_port=0)
    m.create_instances(graph_for_instances(1).configs)
    yield m
    await kill_leftovers()
    await m.cleanup()


def phone(manager: InstanceManager) -> SipInstance:
    return manager.get_instance("instance-100").ua


def target(manager: InstanceManager) -> str:
    return f"127.0.0.1:{manager.get_instance('instance-100').port}"


def assert_all_succeeded(result: SippResult, calls: int) -> None:
    assert not result.killed, result.describe()
    assert result.exit_code == 0, result.describe()
    assert (result.successful, result.failed) == (calls, 0), result.describe()


def take_calls(ua: SipInstance, handle: Callable[[ServerSession], None]) -> list[ServerSession]:
    """Take every call from `ua.incoming` and hand it to `handle`; returns the calls seen.

    The loop stops when the instance's cleanup cancels the pending `get()`.
    """
    seen: list[ServerSession] = []

    def next_call() -> None:
        ua.incoming.get().addCallbacks(got, lambda f: f.trap(CancelledError))

    def got(session: ServerSession) -> None:
        seen.append(session)
        handle(session)
        next_call()

    ua.start_serving()
    next_call()
    return seen


async def ends(calls: list[ServerSession]) -> list[str]:
    return await gatherResults([c.when_ended() for c in calls])


# -- SIPp calls an instance ----------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_sipp_uac_calls_an_auto_answering_instance(manager, tmp_path: Path) -> None:
    """Issue 2 §8: a plain `sipp -sn uac` run succeeds against an instance (20 calls, 10/s)."""
    manager.start_serving(auto_answer=True)
    result = await run_sipp(["-sn", "uac", target(manager), "-m", "20", "-r", "10"],
                            tmp_path / "uac", timeout=20)
    assert_all_succeeded(result, 20)


@pytest_twisted.ensureDeferred
async def test_sipp_uac_500_calls_at_100_per_second(manager, tmp_path: Path) -> None:
    """Issue 3 §5: 500 calls from `sipp -sn uac` at 100 calls/s: 500 successful, 0 failed."""
    manager.start_serving(auto_answer=True)
    result = await run_sipp(["-sn", "uac", target(manager), "-m", "500", "-r", "100"],
                            tmp_path / "uac500", timeout=40)
    assert_all_succeeded(result, 500)
    ua = phone(manager)
    assert not ua.calls and not ua.dialogs, "every call ended when SIPp hung up"


@pytest_twisted.ensureDeferred
async def test_sipp_uac_with_10_percent_loss(manager, tmp_path: Path) -> None:
    """Issue 3 §2: `sipp -sn uac -lost 10`, 200 calls: all succeed.

    SIPp drops 10% of what it sends and receives; the instance must absorb retransmitted
    INVITEs and BYEs, and retransmit its 2xx until the ACK (or the BYE) comes.
    """
    ua = phone(manager)
    tags: dict[str, set[str | None]] = {}  # Call-ID -> To tags of the responses we sent
    sent = {"INVITE in": 0, "2xx out": 0}

    def watch(event: MessageEvent) -> None:
        message = event.message
        if event.direction == "in" and isinstance(message, Request) \
                and message.method == "INVITE":
            sent["INVITE in"] += 1
        elif event.direction == "out" and isinstance(message, Response) \
                and message.cseq.method == "INVITE" and message.status > 100:
            tags.setdefault(message.call_id, set()).add(message.to.tag)
            sent["2xx out"] += message.status == 200

    ua.observers.append(watch)
    manager.start_serving(auto_answer=True)
    result = await run_sipp(["-sn", "uac", target(manager), "-m", "200", "-r", "50",
                             "-lost", "10"], tmp_path / "lost10", timeout=60)
    assert_all_succeeded(result, 200)
    assert result.retransmissions > 0, "with -lost 10 SIPp must have retransmitted"
    # Retransmitted INVITEs were absorbed: one dialog (one To tag) per call, never two.
    assert len(tags) == 200, sent
    assert all(len(t) == 1 for t in tags.values()), sent
    # Some ACKs (or our 200s) were lost: the instance sent its 2xx again (§13.3.1.4).
    assert sent["2xx out"] > 200, sent
    # Not asserted: that every dialog has ended on our side. When SIPp drops its own ACK
    # and BYE, its built-in uac scenario takes our retransmitted 200 (INVITE) for the
    # BYE's 200, counts the call as successful and never resends the BYE; the instance
    # rightly keeps retransmitting its 2xx (then BYEs after 64*T1, §13.3.1.4) until
    # cleanup() ends the dialog.


# -- an instance calls SIPp ----------------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_instance_calls_sipp_uas_200_times(manager, tmp_path: Path) -> None:
    """Issue 3 §5: 200 calls to `sipp -sn uas`, 20 at a time: all confirmed, all ended."""
    calls = 200
    sipp, port = await start_sipp_server(["-sn", "uas", "-m", str(calls)], tmp_path / "uas",
                                         timeout=60)
    ua = phone(manager)
    callee = f"sip:sipp@127.0.0.1:{port}"
    outcomes: list[str] = []

    async def one_call() -> None:
        try:
            session = await ua.invite(callee, timeout=10)
        except CallFailed as exc:
            outcomes.append(f"not confirmed: {exc}")
            return
        ended = session.when_ended()
        try:
            response = await session.hangup()
        except CallFailed as exc:
            outcomes.append(f"BYE failed: {exc}")
            return
        outcomes.append(f"BYE {response.status}, ended: {await ended}")

    limit = DeferredSemaphore(20)
    await gatherResults([limit.run(lambda: Deferred.fromCoroutine(one_call()))
                         for _ in range(calls)])
    if outcomes != ["BYE 200, ended: local hangup"] * calls:
        sipp.kill()  # it would wait for the calls that never came
    result = await sipp.wait()
    tally = {o: outcomes.count(o) for o in set(outcomes)}
    assert tally == {"BYE 200, ended: local hangup": calls}, result.describe()
    assert_all_succeeded(result, calls)
    assert not ua.calls and not ua.dialogs


@pytest_twisted.ensureDeferred
async def test_sipp_caller_cancels_after_180(manager, tmp_path: Path) -> None:
    """tests/sipp/cancel_after_180.xml: 180, CANCEL -> 200 + 487, ACK; the callee only rings."""
    calls = take_calls(phone(manager), lambda session: session.ringing())
    result = await run_sipp(["-sf", str(SCENARIOS / "cancel_after_180.xml"), target(manager),
                             "-m", "20", "-r", "20"], tmp_path / "cancel", timeout=20)
    assert_all_succeeded(result, 20)
    assert len(calls) == 20
    assert await ends(calls) == ["cancelled by caller"] * 20
    assert all(c.ringing_sent and not c.answered for c in calls)


@pytest.mark.parametrize("status", [486, 603])
@pytest_twisted.ensureDeferred
async def test_sipp_caller_sees_the_callee_reject(manager, tmp_path: Path, status: int) -> None:
    """tests/sipp/reject_<status>.xml: the instance rejects, SIPp expects it and ACKs."""
    calls = take_calls(phone(manager), lambda session: session.reject(status))
    result = await run_sipp(["-sf", str(SCENARIOS / f"reject_{status}.xml"), target(manager),
                             "-m", "20", "-r", "20"], tmp_path / f"reject{status}", timeout=20)
    assert_all_succeeded(result, 20)
    assert len(calls) == 20
    assert await ends(calls) == [f"rejected {status}"] * 20
    ua = phone(manager)
    assert not ua.calls and not ua.dialogs
