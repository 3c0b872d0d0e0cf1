"""`twistd sipinstances` that cannot create its instances exits non-zero, after twistd's
own shutdown (pid file removed, log written), with one error line."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor

from test_plugin import TWISTD, TwistdProcess, finish, subprocess_env
from twsip.flow.model import graph_for_instances
from twsip.service import SipInstancesService, makeService
from test_plugin import parse


@pytest_twisted.ensureDeferred
async def test_failed_start_exits_1_after_removing_the_pidfile_and_writing_the_log(
        tmp_path: Path) -> None:
    held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        pidfile, logfile = tmp_path / "twistd.pid", tmp_path / "twistd.log"
        proc = TwistdProcess()
        reactor.spawnProcess(proc, sys.executable,
                             [sys.executable, "-c", TWISTD, "-n", f"--pidfile={pidfile}",
                              f"--logfile={logfile}", "sipinstances", "--base-port",
                              str(port), "--max-retries", "0", "--quiet"],
                             env=subprocess_env(), path=str(tmp_path))
        try:
            code = await proc.wait_end(30)
        finally:
            await finish(proc)
    finally:
        held.close()
    log = logfile.read_text()
    assert code == 1, (proc.output, log)
    assert not pidfile.exists()
    errors = [line for line in log.splitlines() if "#error]" in line]
    assert len(errors) == 1 and str(port) in errors[0], log
    assert "Main loop terminated" in log and "Traceback" not in log, log


@pytest_twisted.ensureDeferred
async def test_a_good_start_and_stop_keeps_exit_status_alone(tmp_path: Path) -> None:
    # Only twistd's failed start registers the exit: the service itself, in process,
    # leaves this (the test) process's exit status alone.
    import atexit
    registered: list[object] = []
    real = atexit.register
    atexit.register = lambda fn, *a, **k: registered.append(fn)  # type: ignore[assignment]
    try:
        in_process = SipInstancesService(graph_for_instances(1), host="10.0.0.1")
        in_process.startService()
        assert in_process.failure is not None
        await in_process.stopService()
        held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        held.bind(("127.0.0.1", 0))
        try:
            service = makeService(parse("--base-port", str(held.getsockname()[1]),
                                        "--max-retries", "0", "--no-demo"))
            assert service.exit_status_on_failure and service.stop_reactor_on_failure
            service.stop_reactor_on_failure = False  # as the in-process tests run it
            service.startService()
            assert service.failure is not None
            await service.stopService()
        finally:
            held.close()
    finally:
        atexit.register = real  # type: ignore[assignment]
    assert registered == []
