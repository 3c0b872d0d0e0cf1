"""The twistd plugin: found by twistd, its options, and `twistd -n sipinstances` for real."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.application.service import IServiceMaker
from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred
from twisted.plugin import IPlugin, getPlugins
from twisted.python import usage

from twsip.manager import InstanceManager
from twsip.config import SipInstanceConfig
from twsip.service import DEFAULT_INSTANCES, Options, SipInstancesService, makeService

ROOT = Path(__file__).resolve().parents[1]
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"


def subprocess_env() -> dict[str, str]:
    """The environment of a child Python that sees this tree's twsip and plugin first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("PYTHONSTARTUP", None)
    return env


def twistd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", TWISTD, *args], cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def dns(options: Options) -> list[str]:
    return [chain.config.dn for chain in options["graph"].instances]


def write_flow(path: Path, *dns_and_codecs: tuple[str, list[str]]) -> Path:
    nodes = [{"id": f"node-{dn}", "type": "sipInstance", "position": {"x": 0, "y": 0},
              "data": {"label": f"phone {dn}", "dn": dn, "register": False, "codecs": codecs}}
             for dn, codecs in dns_and_codecs]
    path.write_text(json.dumps({"nodes": nodes, "edges": []}))
    return path


# -- discovery ---------------------------------------------------------------------------

def sipinstances_plugin() -> IServiceMaker:
    found = [p for p in getPlugins(IServiceMaker) if p.tapname == "sipinstances"]
    assert len(found) == 1, f"expected one sipinstances plugin, got {found!r}"
    return found[0]


def test_plugin_is_found_by_getplugins() -> None:
    plugin = sipinstances_plugin()
    assert IServiceMaker.providedBy(plugin) and IPlugin.providedBy(plugin)
    assert plugin.options is Options
    assert plugin.makeService is makeService
    assert "127.0.0.1" in plugin.description


def test_twistd_help_lists_sipinstances(tmp_path: Path) -> None:
    result = twistd("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\s+sipinstances\s", result.stdout, re.M), result.stdout


def test_loading_the_plugin_does_not_import_the_reactor(tmp_path: Path) -> None:
    code = ("import sys\n"
            "import twisted.plugins.twsip_plugin as plugin\n"
            "assert plugin.sipinstances.options is not None\n"  # imports twsip.service too
            "import twsip\n"
            "twsip.InstanceManager, twsip.SipInstance\n"
            "assert 'twisted.internet.reactor' not in sys.modules, 'reactor imported'\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=subprocess_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_twistd_with_the_asyncio_reactor_reads_the_plugin(tmp_path: Path) -> None:
    result = twistd("-r", "asyncio", "sipinstances", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--base-port" in result.stdout


def test_twistd_refuses_another_host(tmp_path: Path) -> None:
    result = twistd("-n", "--pidfile=", "sipinstances", "--host", "0.0.0.0", cwd=tmp_path)
    assert result.returncode == 1
    assert "local mode only" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


# -- options -----------------------------------------------------------------------------

def test_defaults() -> None:
    options = parse()
    assert options["instances"] == DEFAULT_INSTANCES == 2
    assert options["scenario"] is None
    assert options["base-port"] == 5060
    assert options["max-retries"] == 10
    assert options["host"] == "127.0.0.1"
    assert not options["quiet"]
    assert dns(options) == ["100", "200"]


def test_instances() -> None:
    assert dns(parse("--instances", "4")) == ["100", "200", "300", "400"]
    assert dns(parse("--instances=1")) == ["100"]


@pytest.mark.parametrize("value", ["0", "-3", "two", ""])
def test_bad_instances(value: str) -> None:
    with pytest.raises(usage.UsageError):
        parse("--instances", value)


def test_ports_and_retries() -> None:
    options = parse("--base-port", "25060", "--max-retries", "3")
    assert (options["base-port"], options["max-retries"]) == (25060, 3)
    assert parse("-p", "0")["base-port"] == 0  # the system picks
    assert parse("-r", "0")["max-retries"] == 0


@pytest.mark.parametrize("args", [["--base-port", "65536"], ["--base-port", "-1"],
                                  ["--base-port", "x"], ["--max-retries", "-1"]])
def test_bad_ports_and_retries(args: list[str]) -> None:
    with pytest.raises(usage.UsageError):
        parse(*args)


def test_quiet() -> None:
    assert parse("--quiet")["quiet"]
    assert parse("-q")["quiet"]


def test_host_loopback_is_accepted() -> None:
    assert parse("--host", "127.0.0.1")["host"] == "127.0.0.1"


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "10.0.0.1", "localhost",
                                  "::1", "127.0.0.2", "example.com"])
def test_other_hosts_are_refused(host: str) -> None:
    with pytest.raises(usage.UsageError, match="local mode only"):
        parse("--host", host)


def test_scenario_file(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow.json", ("301", ["PCMA"]), ("302", ["PCMU"]))
    options = parse("--scenario", str(flow))
    assert dns(options) == ["301", "302"]
    assert options["graph"].instances[0].config.codecs == ("PCMA",)


def test_scenario_errors_are_usage_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"nodes": [{"id": "a", "type": "sipInstance", "data": {}}], "edges": []}')
    with pytest.raises(usage.UsageError, match=r"--scenario .*bad\.json: node 'a'"):
        parse("--scenario", str(bad))
    with pytest.raises(usage.UsageError, match="cannot read scenario file"):
        parse("--scenario", str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("{nodes")
    with pytest.raises(usage.UsageError, match=r"broken\.json"):
        parse("--scenario", str(broken))


def test_scenario_and_instances_exclude_each_other(tmp_path: Path) -> None:
    flow = write_flow(tmp_path / "flow.json", ("100", ["PCMU"]))
    with pytest.raises(usage.UsageError, match="not both"):
        parse("--scenario", str(flow), "--instances", "3")


def test_make_service_carries_the_options() -> None:
    service = makeService(parse("--base-port", "0", "--max-retries", "2", "--instances", "3", "-q"))
    assert isinstance(service, SipInstancesService)
    assert (service.base_port, service.max_retries, service.host) == (0, 2, "127.0.0.1")
    assert service.log_messages is False and service.auto_answer is True
    assert service.stop_reactor_on_failure is True
    assert [c.config.dn for c in service.graph.instances] == ["100", "200", "300"]
    assert service.manager is None  # nothing is bound before startService
    assert makeService(parse())._reactor is None and makeService(parse()).log_messages is True


# -- twistd for real ---------------------------------------------------------------------

class TwistdProcess(protocol.ProcessProtocol):
    """A child `twistd -n`, its output, and Deferreds for a line or for its end."""

    def __init__(self) -> None:
        self.output = ""
        self.done = False
        self.exit_code: int | None = None
        self.signal: int | None = None
        self._lines: list[tuple[re.Pattern[str], Deferred[re.Match[str]]]] = []
        self._ends: list[Deferred[int | None]] = []

    def outReceived(self, data: bytes) -> None:  # noqa: N802
        self.output += data.decode("utf-8", "replace")
        for item in list(self._lines):
            match = item[0].search(self.output)
            if match:
                self._lines.remove(item)
                item[1].callback(match)

    errReceived = outReceived

    def processEnded(self, reason) -> None:  # noqa: N802
        self.done = True
        self.exit_code = reason.value.exitCode
        self.signal = getattr(reason.value, "signal", None)
        lines, self._lines = self._lines, []
        for _, d in lines:
            d.errback(AssertionError(f"twistd ended first; output:\n{self.output}"))
        ends, self._ends = self._ends, []
        for d in ends:
            d.callback(self.exit_code)

    def wait_for(self, pattern: str, timeout: float = 30) -> Deferred[re.Match[str]]:
        """Fires with the first match of `pattern` in the output (now or later)."""
        regex = re.compile(pattern, re.M)
        d: Deferred[re.Match[str]] = Deferred()
        match = regex.search(self.output)
        if match:
            d.callback(match)
        elif self.done:
            d.errback(AssertionError(f"not in twistd's output: {pattern}\n{self.output}"))
        else:
            self._lines.append((regex, d))
            d.addTimeout(timeout, reactor)
        return d

    def wait_end(self, timeout: float = 30) -> Deferred[int | None]:
        """Fires with the exit code once the process has ended."""
        d: Deferred[int | None] = Deferred()
        if self.done:
            d.callback(self.exit_code)
        else:
            self._ends.append(d)
            d.addTimeout(timeout, reactor)
        return d


def spawn_twistd(tmp_path: Path, *args: str) -> TwistdProcess:
    proc = TwistdProcess()
    reactor.spawnProcess(proc, sys.executable,
                         [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "--logfile=-",
                          *args],
                         env=subprocess_env(), path=str(tmp_path))
    return proc


async def finish(proc: TwistdProcess) -> int | None:
    """SIGTERM (SIGKILL if it lingers) and wait for the end; the exit code.

    After a clean shutdown on SIGTERM, twistd ends itself with that same signal, as its
    exit status: that shows here as exit code None and signal SIGTERM.
    """
    if not proc.done:
        proc.transport.signalProcess("TERM")
        try:
            await proc.wait_end(20)
        except Exception:
            if not proc.done:
                proc.transport.signalProcess("KILL")
                await proc.wait_end(10)
            raise
    return proc.exit_code


@pytest.mark.parametrize("reactor_name", [None, "asyncio"])
@pytest_twisted.ensureDeferred
async def test_twistd_sipinstances_serves_and_stops(tmp_path: Path,
                                                    reactor_name: str | None) -> None:
    args = ["-r", reactor_name] if reactor_name else []
    proc = spawn_twistd(tmp_path, *args, "sipinstances", "--base-port", "0")
    caller = InstanceManager(base_port=0)
    try:
        await proc.wait_for(r"serving 2 SIP instance")
        ports = {dn: int(port) for dn, port in re.findall(
            r"DN (\d+) \(\d+\) answers at sip:\d+@127\.0\.0\.1:(\d+)", proc.output)}
        assert set(ports) == {"100", "200"}, proc.output
        caller.create_instances([SipInstanceConfig(id="caller", label="caller", dn="900")])
        ua = caller.get_instance("caller").ua
        response = await ua.options(f"sip:100@127.0.0.1:{ports['100']}")
        assert response.status == 200
        session = await ua.invite(f"sip:200@127.0.0.1:{ports['200']}", timeout=10)
        await session.hangup()
        # not quiet: each SIP message is one info line of the instance that saw it
        await proc.wait_for(r"twsip\.instance#info\] DN 200 -> 200 OK to 127\.0\.0\.1:\d+ "
                            r"Call-ID " + re.escape(session.call_id))
        await proc.wait_for(r"twsip\.instance#info\] DN 200 <- BYE from ")
    finally:
        await caller.cleanup()
        await finish(proc)
    assert (proc.exit_code, proc.signal) == (None, signal.SIGTERM), proc.output
    assert "stopped: 2 SIP instance(s) closed" in proc.output
    assert "Traceback" not in proc.output
    if reactor_name == "asyncio":
        assert "AsyncioSelectorReactor" in proc.output


@pytest_twisted.ensureDeferred
async def test_twistd_quiet_logs_no_messages(tmp_path: Path) -> None:
    proc = spawn_twistd(tmp_path, "sipinstances", "--base-port", "0", "--instances", "1", "--quiet")
    caller = InstanceManager(base_port=0)
    try:
        match = await proc.wait_for(r"DN 100 \(100\) answers at sip:100@127\.0\.0\.1:(\d+)")
        await proc.wait_for(r"serving 1 SIP instance.*quiet")
        caller.create_instances([SipInstanceConfig(id="caller", label="caller", dn="900")])
        response = await caller.get_instance("caller").ua.options(
            f"sip:100@127.0.0.1:{match.group(1)}")
        assert response.status == 200
    finally:
        await caller.cleanup()
        await finish(proc)
    assert (proc.exit_code, proc.signal) == (None, signal.SIGTERM), proc.output
    assert "OPTIONS" not in proc.output and "[twsip.instance#" not in proc.output, proc.output
    assert "stopped: 1 SIP instance(s) closed" in proc.output


@pytest_twisted.ensureDeferred
async def test_twistd_start_failure_is_one_clear_error(tmp_path: Path) -> None:
    held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        proc = spawn_twistd(tmp_path, "sipinstances", "--base-port", str(port),
                            "--max-retries", "0")
        try:
            code = await proc.wait_end(30)
        finally:
            await finish(proc)
    finally:
        held.close()
    assert code == 1, proc.output
    errors = re.findall(r"twsip\.service#error\] (.*)", proc.output)
    assert len(errors) == 1, proc.output
    assert re.search(rf"could not start the SIP instances: .*\b{port}\b.*; nothing to serve: "
                     r"stopping", errors[0]), proc.output
    assert "Main loop terminated" in proc.output  # twistd shut down as usual first
    assert "Traceback" not in proc.output, proc.output
