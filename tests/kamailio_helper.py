"""Kamailio (Debian package ``kamailio``) as the real registrar and proxy of the tests.

`start_kamailio` writes tests/kamailio/registrar.cfg, filled in with a free loopback
port, the test password and the digest algorithm, into the test's directory, starts
``kamailio -DD -E`` (foreground, logging to stderr) through ``reactor.spawnProcess`` so
the reactor keeps running, waits until its UDP socket is bound (read from /proc), and
bounds it with a hard deadline. `KamailioProcess.stop` kills it and waits; a test's
teardown must call it whatever happened.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

from sipp_helper import system_chosen_udp_port

KAMAILIO = shutil.which("kamailio") or (
    "/usr/sbin/kamailio" if os.access("/usr/sbin/kamailio", os.X_OK) else None)
requires_kamailio = pytest.mark.skipif(
    KAMAILIO is None,
    reason="kamailio is not installed (apt-get install kamailio): the tests against a real "
           "registrar/proxy need it")

CONFIG = Path(__file__).parent / "kamailio" / "registrar.cfg"
PASSWORD = "kam-test-secret"


class _Output(ProcessProtocol):
    def __init__(self) -> None:
        self.err: list[bytes] = []
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:  # noqa: N802
        self.err.append(data)

    def errReceived(self, data: bytes) -> None:  # noqa: N802
        self.err.append(data)

    def processEnded(self, reason: object) -> None:  # noqa: N802
        self.ended.callback(None)


class KamailioProcess:
    def __init__(self, workdir: Path, port: int, deadline: float) -> None:
        assert KAMAILIO is not None
        self.workdir = workdir
        self.port = port
        self.algorithm = "MD5"
        self.output = _Output()
        config = workdir / "kamailio.cfg"
        self.transport = reactor.spawnProcess(
            self.output, KAMAILIO,
            [KAMAILIO, "-f", str(config), "-DD", "-E", "-Y", str(workdir), "-m", "32",
             "-M", "8"], env=dict(os.environ), path=str(workdir))
        self.pid: int = self.transport.pid
        self._deadline = reactor.callLater(deadline, self.kill)

    @property
    def running(self) -> bool:
        return not self.output.ended.called

    @property
    def log(self) -> str:
        return b"".join(self.output.err).decode(errors="replace")

    def kill(self) -> None:
        if self.running:
            try:
                self.transport.signalProcess("KILL")
            except Exception:
                pass

    async def stop(self) -> None:
        if self._deadline.active():
            self._deadline.cancel()
        if self.running:
            try:
                self.transport.signalProcess("TERM")
            except Exception:
                pass
            for _ in range(100):
                if not self.running:
                    break
                await task.deferLater(reactor, 0.02, lambda: None)
            self.kill()
        if not self.output.ended.called:
            await self.output.ended


def _bound(port: int) -> bool:
    """Whether some socket is bound to 127.0.0.1:`port` over UDP (from /proc/net/udp)."""
    try:
        with open("/proc/net/udp") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return True  # cannot tell: trust it (the clients retransmit)
    for line in lines:
        fields = line.split()
        if len(fields) > 1 and fields[1] == f"0100007F:{port:04X}":
            return True
    return False


async def start_kamailio(workdir: Path, algorithm: str = "MD5",
                         password: str = PASSWORD, deadline: float = 120.0) -> KamailioProcess:
    """A Kamailio listening on a free loopback UDP port (`process.port`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for _attempt in range(3):
        port = await system_chosen_udp_port()
        text = CONFIG.read_text().replace("@PORT@", str(port)) \
            .replace("@PASSWORD@", password).replace("@ALGORITHM@", algorithm)
        (workdir / "kamailio.cfg").write_text(text)
        process = KamailioProcess(workdir, port, deadline)
        for _ in range(250):  # up to ~5 s to start
            if not process.running:
                break
            if _bound(port):
                await task.deferLater(reactor, 0.2, lambda: None)  # its workers start
                return process
            await task.deferLater(reactor, 0.02, lambda: None)
        log = process.log
        await process.stop()
        if "bind" not in log.lower():
            raise RuntimeError(f"kamailio did not listen on 127.0.0.1:{port}:\n{log[-3000:]}")
    raise RuntimeError("kamailio could not bind a free port three times")
