"""Fixtures for tests that speak raw SIP to an instance on the in-memory network."""

from __future__ import annotations

import pytest

from raw_phone import RawPhone
from twsip.sip.instance import SipInstance
from twsip.testing import FakeNetwork


@pytest.fixture
def net() -> FakeNetwork:
    return FakeNetwork()


@pytest.fixture
def uas(net: FakeNetwork) -> SipInstance:
    instance = net.add_instance("200")
    instance.start_serving()
    return instance


@pytest.fixture
def phone(net: FakeNetwork, uas: SipInstance) -> RawPhone:
    return RawPhone(net, uas)
