"""Fixtures for tests that speak raw SIP to an instance on the in-memory network, and one
that collects every log event a test causes."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
from twisted.logger import globalLogPublisher

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


@pytest.fixture
def log_events() -> Iterator[list[dict[str, Any]]]:
    """Every twisted.logger event emitted while the test runs."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(events.append)
