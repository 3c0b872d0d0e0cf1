"""twsip.testing.FakeNetwork at the user's seam: a reactor (IReactorUDP, IReactorTime) that
InstanceManager and Engine run on unchanged, the way treq.testing stands in for a reactor."""

from __future__ import annotations

import pytest
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IReactorTime, IReactorUDP
from zope.interface.verify import verifyObject

from twsip.config import SipInstanceConfig
from twsip.manager import InstanceManager, PortAllocationError
from twsip.testing import Endpoint, FakeNetwork


def test_the_network_is_a_udp_and_time_reactor(network: FakeNetwork) -> None:
    assert verifyObject(IReactorUDP, network)
    assert verifyObject(IReactorTime, network)
    fired: list[float] = []
    call = network.callLater(2.5, lambda: fired.append(network.seconds()))
    assert list(network.getDelayedCalls()) == [call] == list(network.clock.getDelayedCalls())
    network.advance(3)
    assert fired == [2.5] and network.seconds() == 3


def test_listen_udp_binds_refuses_a_taken_address_and_frees_on_stop(
        network: FakeNetwork) -> None:
    first, second = Endpoint(), Endpoint()
    port = network.listenUDP(5070, first, interface="127.0.0.1")
    assert (port.getHost().host, port.getHost().port) == ("127.0.0.1", 5070)
    with pytest.raises(CannotListenError) as info:
        network.listenUDP(5070, second, interface="127.0.0.1")
    assert (info.value.interface, info.value.port) == ("127.0.0.1", 5070)
    port.stopListening()
    assert network.listenUDP(5070, second).getHost().port == 5070


def test_port_zero_picks_a_free_port(network: FakeNetwork) -> None:
    taken = network.listenUDP(5060, Endpoint())
    picked = network.listenUDP(0, Endpoint())
    assert picked.getHost().port not in (0, taken.getHost().port)


def test_a_port_reads_at_most_max_packet_size_bytes(network: FakeNetwork) -> None:
    receiver, sender = Endpoint(), network.endpoint()
    port = network.listenUDP(0, receiver, maxPacketSize=8)
    sender.send(b"0123456789", (port.getHost().host, port.getHost().port))
    network.pump()
    port.maxPacketSize = 65535  # what InstanceManager does to each port it binds
    sender.send(b"0123456789", (port.getHost().host, port.getHost().port))
    network.pump()
    assert [data for data, _ in receiver.take()] == [b"01234567", b"0123456789"]


def test_the_manager_moves_past_a_taken_port_in_plus_two_steps(network: FakeNetwork) -> None:
    network.listenUDP(5060, Endpoint())
    manager = InstanceManager(base_port=5060, max_retries=1, reactor=network)
    alice = manager.create_instance(SipInstanceConfig(id="a", label="A", dn="100"))
    assert alice.port == 5062 and alice.listening_port.maxPacketSize == 65535
    network.listenUDP(5064, Endpoint())
    network.listenUDP(5066, Endpoint())
    with pytest.raises(PortAllocationError, match="tried 5064, 5066"):
        manager.create_instance(SipInstanceConfig(id="b", label="B", dn="200"))
    network.run(manager.cleanup())
    assert network.listenUDP(5062, Endpoint()).getHost().port == 5062  # given back


def test_two_managed_instances_call_each_other_in_memory(network: FakeNetwork) -> None:
    manager = InstanceManager(reactor=network)
    alice, bob = manager.create_instances([SipInstanceConfig(id="a", label="A", dn="100"),
                                           SipInstanceConfig(id="b", label="B", dn="200")])
    manager.start_serving(auto_answer=True)
    session = network.run(alice.ua.invite(manager.resolve_target("200")))
    assert session.established
    network.run(session.hangup())
    network.run(manager.cleanup())
