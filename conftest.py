"""Test-wide guards: no test may leave a bound UDP port or a pending twsip timer behind.

Tests on the real reactor are checked by `no_leftovers`; tests that run on a
`twsip.testing.FakeNetwork` take the `network` fixture, which checks the network's own
clock instead.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor, task, udp

from twsip.media.mux import mux_ports
from twsip.testing import FakeNetwork


def _twsip_calls() -> list:
    return [
        call for call in reactor.getDelayedCalls()
        if call.active() and getattr(call.func, "__module__", "").startswith("twsip")
    ]


def _open_ports() -> list:
    """UDP ports the reactor reads itself, and RTP ports it reads through the RTP mux."""
    return [r for r in reactor.getReaders() if isinstance(r, udp.Port)] + mux_ports(reactor)


@pytest_twisted.async_yield_fixture(autouse=True)
async def no_leftovers():
    yield
    # A stopped UDP port closes its socket on the next reactor turn.
    await task.deferLater(reactor, 0, lambda: None)
    calls, ports = _twsip_calls(), _open_ports()
    for call in calls:
        call.cancel()
    for port in ports:
        port.stopListening()
    if ports:
        await task.deferLater(reactor, 0, lambda: None)
    problems = [f"pending twsip timer {c.func!r}" for c in calls]
    problems += [f"UDP port {p.getHost().port} still bound" for p in ports]
    if problems:
        pytest.fail("test left resources behind: " + "; ".join(problems))


@pytest.fixture
def network():
    """A FakeNetwork (the reactor for an InstanceManager and an Engine) that must end the
    test with no timer left on its clock."""
    fake = FakeNetwork()
    yield fake
    left = fake.clock.getDelayedCalls()
    if left:
        pytest.fail("test left timers on the FakeNetwork clock: "
                    + "; ".join(repr(call.func) for call in left))
