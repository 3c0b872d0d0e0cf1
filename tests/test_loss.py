"""Loss, duplication and reordering: calls between two instances over twsip.testing's
impaired network, all on a Clock (no socket, no real time).

Every datagram in each direction is dropped with probability 0.2, duplicated with 0.1 and
held back (so that later ones overtake it) with 0.1, from seeded generators: a failure
repeats with the same seed. RFC 3261's retransmissions (Timers A/E/G, the UAS core's 2xx
retransmission, re-ACK) must carry every call through.
"""

from __future__ import annotations

import collections

from typing import Iterator

import pytest
from twisted.internet.defer import Deferred

from twsip.sip.dialog import CallFailed, ClientSession, ServerSession
from twsip.sip.message import parse
from twsip.testing import FakeNetwork, Impairment, LoggedFailures, NetworkTimeout


@pytest.fixture(autouse=True)
def no_logged_failures() -> Iterator[None]:
    """An exception caught inside twsip is a bug even though nothing escaped."""
    with LoggedFailures() as failures:
        yield
    assert failures.events == [], failures.summary()


CALLS = 200
LOSSY = dict(drop=0.2, duplicate=0.1, reorder=0.1, max_delay=0.3)


class CallRig:
    """Two instances, B answering every call, A placing `CALLS` calls and hanging up."""

    def __init__(self, seed: int) -> None:
        self.network = FakeNetwork(keep_log=False)
        self.a = self.network.add_instance("100")
        self.b = self.network.add_instance("200")
        self.ab = self.network.impair(self.a, self.b, Impairment(**LOSSY, seed=f"{seed}:a->b"))
        self.ba = self.network.impair(self.b, self.a, Impairment(**LOSSY, seed=f"{seed}:b->a"))
        self.server_sessions: list[ServerSession] = []
        self.outcomes: list[object] = []
        self.b.start_serving()
        self._serve()

    def _serve(self) -> None:
        def take(session: ServerSession) -> None:
            self.server_sessions.append(session)
            session.ringing()
            session.answer().addErrback(lambda _: None)  # an ACK lost to a BYE is fine
            self._serve()

        self.b.incoming.get().addCallbacks(take, lambda _: None)

    def place(self, hold: float = 1.0) -> None:
        def established(call: ClientSession) -> Deferred:
            wait: Deferred = Deferred()
            self.network.clock.callLater(hold, wait.callback, None)
            return wait.addCallback(lambda _: call.hangup())

        d = self.a.invite(self.b.uri)
        d.addCallback(established)
        d.addBoth(self.outcomes.append)


@pytest.mark.parametrize("seed", [1, 2])
def test_200_calls_complete_through_loss_duplication_and_reordering(seed: int) -> None:
    rig = CallRig(seed)
    network, clock = rig.network, rig.network.clock
    for i in range(CALLS):
        clock.callLater(i * 0.05, rig.place)
    network.advance(CALLS * 0.05 + 120)

    failures = [o for o in rig.outcomes if getattr(o, "status", None) != 200]
    assert len(rig.outcomes) == CALLS
    assert failures == [], f"{len(failures)} calls failed, first: {failures[0]!r}"
    # No dialog created twice: a retransmitted or duplicated INVITE never became a new call.
    per_call_id = collections.Counter(s.call_id for s in rig.server_sessions)
    assert len(per_call_id) == CALLS
    assert max(per_call_id.values()) == 1
    assert all(s.ended for s in rig.server_sessions)
    assert not rig.a.calls and not rig.b.calls
    # The impairments really happened, in both directions.
    for impairment in (rig.ab, rig.ba):
        assert impairment.dropped > 0.1 * impairment.seen
        assert impairment.duplicated > 0 and impairment.delayed > 0
    print(f"seed {seed}: {CALLS} calls; a->b {rig.ab}; b->a {rig.ba}")

    network.run(network.cleanup())
    assert clock.getDelayedCalls() == []
    assert len(rig.a.transactions) == 0 and len(rig.b.transactions) == 0
    assert network.stray == []


def test_same_seed_same_story() -> None:
    def story(seed: int) -> list[tuple[float, bytes]]:
        network = FakeNetwork()
        a, b = network.add_instance("100"), network.add_instance("200")
        network.impair_all(Impairment(**LOSSY, seed=seed))
        # Tags, branches and Call-IDs are random per instance; compare what does not vary.
        b.start_serving(auto_answer=True)
        call = network.run(a.invite(b.uri))
        network.run(call.hangup())
        network.run(network.cleanup())
        return [(d.time, parse(d.data).cseq.method.encode()) for d in network.log]

    assert story(7) == story(7)


def test_impairment_decisions_are_seeded_and_counted() -> None:
    first = Impairment(drop=0.3, duplicate=0.3, reorder=0.3, seed=42)
    second = Impairment(drop=0.3, duplicate=0.3, reorder=0.3, seed=42)
    runs = [[imp.decide() for _ in range(500)] for imp in (first, second)]
    assert runs[0] == runs[1]
    assert first.seen == 500
    assert 100 < first.dropped < 200
    assert first.duplicated > 0 and first.delayed > 0
    assert all(0 <= delay <= 0.2 for delays in runs[0] for delay in delays)
    with pytest.raises(ValueError):
        Impairment(drop=1.5)


def test_held_datagrams_are_overtaken_and_are_not_clock_timers() -> None:
    network = FakeNetwork()
    left, right = network.endpoint(), network.endpoint()
    network.impair(left, right, Impairment(reorder=1.0, max_delay=1.0, seed=3))
    for i in range(20):
        left.send(b"%d" % i, right.address)
    assert network.clock.getDelayedCalls() == []
    assert network.pending == 20
    network.advance(1.0)
    got = [int(data) for data, _ in right.take()]
    assert sorted(got) == list(range(20)) and got != list(range(20))
    assert network.pending == 0


def test_drop_everything_and_the_call_times_out_cleanly() -> None:
    network = FakeNetwork()
    a, b = network.add_instance("100"), network.add_instance("200")
    network.impair(a, b, Impairment(drop=1.0))
    b.start_serving(auto_answer=True)
    d = a.invite(b.uri)
    with pytest.raises(CallFailed) as info:
        network.run(d, timeout=100)
    assert getattr(info.value, "status", None) == 408
    network.run(network.cleanup())
    assert network.clock.getDelayedCalls() == []


def test_network_bookkeeping() -> None:
    network = FakeNetwork()
    endpoint = network.endpoint()
    endpoint.send(b"nobody", ("127.0.0.1", 1))
    endpoint.send(b"outside", ("192.0.2.1", 5060))
    network.pump()
    assert network.undeliverable == 2
    assert [d.destination for d in network.stray] == [("192.0.2.1", 5060)]
    network.detach(endpoint)
    with pytest.raises(NetworkTimeout):
        network.run(Deferred(), timeout=1)
