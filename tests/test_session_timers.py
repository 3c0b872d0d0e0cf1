"""Abandoned calls end (issue 12, item 4): RFC 4028 session timers as the UAS, the idle
limit of auto-answered calls, and the cap on concurrent calls per instance.

Everything runs on twsip.testing's FakeNetwork and its Clock, with a caller written by
hand (`Caller`) so that every header of the timer negotiation is under the test's control.
"""

from __future__ import annotations

import itertools
from typing import Iterator

import pytest
from twisted.python import usage

from twsip.manager import InstanceManager
from twsip.config import SipInstanceConfig
from twsip.sip import sdp
from twsip.sip.instance import SipInstance
from twsip.sip.message import Request, Response, parse
from twsip.sip.session_timer import give_up_after
from twsip.service import Options, makeService
from twsip.testing import FakeNetwork, LoggedFailures

from raw_phone import finish

_n = itertools.count(1)


@pytest.fixture(autouse=True)
def no_logged_failures() -> Iterator[None]:
    """An exception caught inside twsip is a bug even though nothing escaped."""
    with LoggedFailures() as failures:
        yield
    assert failures.events == [], failures.summary()


class Caller:
    """One call from a hand-written peer: INVITE with chosen headers, ACK, refreshes."""

    def __init__(self, net: FakeNetwork, target: SipInstance) -> None:
        self.net = net
        self.target = target
        self.endpoint = net.endpoint()
        self.call_id = f"st{next(_n)}@127.0.0.1"
        self.tag = f"from{next(_n)}"
        self.cseq = 1
        self.to_tag: str | None = None
        self.requests: list[Request] = []  # requests the instance sent us (BYE, UPDATE)

    def request(self, method: str, extra: dict[str, list[str]] | None = None,
                body: bytes = b"", cseq: int | None = None) -> Request:
        host, port = self.endpoint.address
        uri = self.target.uri
        headers = {
            "via": [f"SIP/2.0/UDP {host}:{port};branch=z9hG4bKst{next(_n)};rport"],
            "max-forwards": ["70"],
            "from": [f"<sip:raw@{host}:{port}>;tag={self.tag}"],
            "to": [f"<{uri}>" + (f";tag={self.to_tag}" if self.to_tag else "")],
            "call-id": [self.call_id],
            "cseq": [f"{cseq if cseq is not None else self.cseq} {method}"],
            "contact": [f"<sip:raw@{host}:{port}>"],
        }
        if body:
            headers["content-type"] = ["application/sdp"]
        headers.update(extra or {})
        return Request(method, uri, headers, body)

    def offer(self) -> bytes:
        return sdp.build_offer(("PCMU",), "127.0.0.1", 40000)

    def send(self, request: Request) -> list[Response]:
        """Send and deliver; the responses that came back (requests are answered 200)."""
        self.endpoint.send(request.to_bytes(), self.target.address)
        self.net.pump()
        return self.responses()

    def responses(self) -> list[Response]:
        out: list[Response] = []
        for data, addr in self.endpoint.take():
            message = parse(data)
            if isinstance(message, Response):
                out.append(message)
            else:
                self.requests.append(message)
                if message.method != "ACK" and self.answer_requests:
                    self.endpoint.send(message.response(200).to_bytes(), addr)
        return out

    answer_requests = True

    def call(self, extra: dict[str, list[str]] | None = None) -> Response:
        """INVITE (auto-answered by the instance), then ACK: the final response."""
        invite = self.request("INVITE", extra, self.offer())
        final = [r for r in self.send(invite) if r.status >= 200][-1]
        if final.status < 300:
            self.to_tag = final.to.tag
            self.send(self.request("ACK", cseq=self.cseq))
        return final

    def reinvite(self, extra: dict[str, list[str]] | None = None) -> Response:
        self.cseq += 1
        final = [r for r in self.send(self.request("INVITE", extra, self.offer()))
                 if r.status >= 200][-1]
        self.send(self.request("ACK", cseq=self.cseq))
        return final

    def update(self, extra: dict[str, list[str]] | None = None, body: bytes = b"") -> Response:
        self.cseq += 1
        return [r for r in self.send(self.request("UPDATE", extra, body))
                if r.status >= 200][-1]

    def byes(self) -> list[Request]:
        self.responses()
        return [r for r in self.requests if r.method == "BYE"]


TIMER_120 = {"session-expires": ["120;refresher=uac"], "supported": ["timer"]}


@pytest.fixture
def net() -> FakeNetwork:
    return FakeNetwork()


@pytest.fixture
def phone(net: FakeNetwork) -> SipInstance:
    """An auto-answering instance, like every instance of `twistd sipinstances`."""
    instance = net.add_instance("200")
    instance.start_serving(auto_answer=True)
    return instance


def advance_to(net: FakeNetwork, start: float, offset: float) -> None:
    net.advance(start + offset - net.clock.seconds())


# -- RFC 4028 as the UAS ----------------------------------------------------------------------

def test_a_call_that_never_refreshes_is_byed_at_the_rfc_time(net, phone) -> None:
    caller = Caller(net, phone)
    ok = caller.call(TIMER_120)
    start = net.clock.seconds()
    assert ok.status == 200
    assert ok.get("session-expires") == "120;refresher=uac"
    assert ok.get_all("require") == ["timer"]
    assert "UPDATE" in ok.get_all("allow")
    # §10: BYE at the interval minus min(32, 120/3) = 88 s after the last refresh.
    assert give_up_after(120) == 88
    advance_to(net, start, 87.9)
    assert caller.byes() == [] and len(phone.dialogs) == 1
    advance_to(net, start, 88.0)
    assert len(caller.byes()) == 1
    assert phone.dialogs == {} and phone.calls == set()
    assert phone.noise.counts["session-expired"] == 1
    finish(net)


def test_refreshes_by_reinvite_and_update_keep_the_call_up(net, phone) -> None:
    caller = Caller(net, phone)
    caller.call(TIMER_120)
    last = net.clock.seconds()
    for i in range(6):  # 6 refreshes, 60 s apart: 360 s, three whole intervals
        net.advance(60)
        if i % 2:
            answer = caller.update({"session-expires": ["120;refresher=uac"],
                                    "supported": ["timer"]})
        else:
            answer = caller.reinvite(TIMER_120)
        assert answer.status == 200
        assert answer.get("session-expires") == "120;refresher=uac"
        assert answer.get_all("require") == ["timer"]
        last = net.clock.seconds()
    assert caller.byes() == [] and len(phone.dialogs) == 1
    # Then the caller vanishes: BYE 88 s after the last refresh, not before.
    advance_to(net, last, 87.5)
    assert caller.byes() == []
    advance_to(net, last, 88)
    assert len(caller.byes()) == 1 and phone.dialogs == {}
    finish(net)


def test_a_refresh_may_shorten_the_interval(net, phone) -> None:
    caller = Caller(net, phone)
    caller.call({"session-expires": ["1800"], "supported": ["timer"]})
    start = net.clock.seconds()
    net.advance(10)
    answer = caller.update({"session-expires": ["90"], "supported": ["timer"]})
    assert answer.get("session-expires") == "90;refresher=uac"
    advance_to(net, start, 10 + give_up_after(90) - 0.5)
    assert caller.byes() == []
    advance_to(net, start, 10 + give_up_after(90))  # 60 s: min(32, 30) = 30 before 90
    assert len(caller.byes()) == 1
    finish(net)


def test_too_small_an_interval_gets_422_with_our_min_se(net, phone) -> None:
    caller = Caller(net, phone)
    refused = caller.call({"session-expires": ["60"], "supported": ["timer"]})
    assert refused.status == 422
    assert refused.get("min-se") == "90"
    assert phone.calls == set()
    # Asking again with the minimum works (§7.3).
    caller = Caller(net, phone)
    assert caller.call({"session-expires": ["90"], "min-se": ["90"],
                        "supported": ["timer"]}).status == 200
    # A refresh asking too little is refused too, and the call stays as it was.
    assert caller.update({"session-expires": ["89"], "supported": ["timer"]}).status == 422
    assert len(phone.dialogs) == 1
    finish(net)


def test_too_small_an_interval_from_a_caller_without_timers_is_raised(net, phone) -> None:
    """§9 has only a caller that supports timers get 422 (another would not know what to
    do with it): the call goes ahead at our minimum, and we refresh."""
    caller = Caller(net, phone)
    ok = caller.call({"session-expires": ["60"]})
    assert ok.status == 200 and ok.get("session-expires") == "90;refresher=uas"
    finish(net)


def test_no_timer_when_the_caller_neither_asks_nor_supports_it(net, phone) -> None:
    caller = Caller(net, phone)
    ok = caller.call()
    assert ok.status == 200
    assert "session-expires" not in ok and "require" not in ok
    net.advance(3000)  # no session timer (the idle limit of one hour is another matter)
    assert caller.byes() == [] and len(phone.dialogs) == 1
    assert caller.update().status == 200  # a plain UPDATE is answered, and starts nothing
    assert len(phone.limits.timers.active) == 0
    finish(net)


def test_a_caller_that_supports_timers_but_asks_none_gets_the_default(net, phone) -> None:
    caller = Caller(net, phone)
    ok = caller.call({"supported": ["100rel, timer"], "min-se": ["2000"]})
    # §9: we may ask for one; never below the caller's Min-SE; the caller refreshes.
    assert ok.get("session-expires") == "2000;refresher=uac"
    assert ok.get_all("require") == ["timer"]
    finish(net)


def test_require_timer_is_not_refused_420(net, phone) -> None:
    caller = Caller(net, phone)
    ok = caller.call({"session-expires": ["300"], "require": ["timer"]})
    assert ok.status == 200 and ok.get("session-expires") == "300;refresher=uac"
    other = Caller(net, phone)
    assert other.call({"require": ["100rel"]}).status == 420
    finish(net)


def test_a_malformed_session_expires_is_400(net, phone) -> None:
    caller = Caller(net, phone)
    assert caller.call({"session-expires": ["1٢0"], "supported": ["timer"]}).status == 400
    finish(net)


def test_without_timer_support_we_refresh_by_update(net, phone) -> None:
    """Session-Expires from a caller that does not support timers (a proxy put it in):
    we refresh (refresher=uas, no Require), by UPDATE at half the interval."""
    caller = Caller(net, phone)
    ok = caller.call({"session-expires": ["120"]})
    start = net.clock.seconds()
    assert ok.get("session-expires") == "120;refresher=uas"
    assert "require" not in ok
    for k in (1, 2, 3):
        advance_to(net, start, 60 * k)
        caller.responses()
        updates = [r for r in caller.requests if r.method == "UPDATE"]
        assert len(updates) == k
        assert updates[-1].get("session-expires") == "120;refresher=uac"
    assert caller.byes() == [] and len(phone.dialogs) == 1
    # The caller vanishes: the next refresh goes unanswered (Timer F) and the call ends.
    caller.answer_requests = False
    net.advance(60 + 32 + 1)
    assert caller.byes() and phone.dialogs == {}
    finish(net)


def test_a_refresher_uas_request_is_honoured(net, phone) -> None:
    caller = Caller(net, phone)
    ok = caller.call({"session-expires": ["100;refresher=uas"], "supported": ["timer"]})
    assert ok.get("session-expires") == "100;refresher=uas"
    net.advance(50)
    caller.responses()
    assert [r.method for r in caller.requests] == ["UPDATE"]
    finish(net)


def test_update_with_an_offer_is_488_and_outside_a_dialog_481(net, phone) -> None:
    caller = Caller(net, phone)
    caller.call(TIMER_120)
    assert caller.update(body=caller.offer()).status == 488
    assert len(phone.dialogs) == 1
    stranger = Caller(net, phone)
    assert [r.status for r in stranger.send(stranger.request("UPDATE"))] == [481]
    finish(net)


def test_hanging_up_cancels_the_timer(net, phone) -> None:
    caller = Caller(net, phone)
    caller.call(TIMER_120)
    caller.cseq += 1
    assert [r.status for r in caller.send(caller.request("BYE"))] == [200]
    assert phone.limits.timers.active == {} and len(phone.limits.timers.deadlines) == 0
    net.advance(200)
    assert caller.byes() == []
    finish(net)


def test_200_abandoned_calls_all_end_at_expiry_on_one_timer(net, phone) -> None:
    callers = [Caller(net, phone) for _ in range(200)]
    for caller in callers:
        assert caller.call({"session-expires": ["90"], "supported": ["timer"]}).status == 200
    assert len(phone.dialogs) == 200
    # the ACKs stopped the 2xx timers; what is left does not grow with the calls
    assert len(net.clock.getDelayedCalls()) <= 4
    net.advance(give_up_after(90))
    assert all(len(caller.byes()) == 1 for caller in callers)
    assert phone.dialogs == {} and phone.calls == set()
    assert len(phone.limits.timers.deadlines) == 0 and phone.limits.timers.active == {}
    finish(net)


# -- the idle limit of auto-answered calls ------------------------------------------------------

def test_an_auto_answered_call_idle_past_max_call_seconds_gets_bye(net) -> None:
    phone = net.add_instance("200")
    phone.start_serving(auto_answer=True, max_call_seconds=300)
    early, late = Caller(net, phone), Caller(net, phone)
    early.call()
    net.advance(100)
    late.call()
    net.advance(199.5)
    assert early.byes() == [] and late.byes() == []
    net.advance(0.5)
    assert len(early.byes()) == 1 and late.byes() == []
    net.advance(100)
    assert len(late.byes()) == 1
    assert phone.dialogs == {} and phone.noise.counts["max-call-seconds"] == 2
    finish(net)


def test_the_idle_limit_is_one_hour_by_default_and_0_turns_it_off(net) -> None:
    phone = net.add_instance("200")
    phone.start_serving(auto_answer=True)
    caller = Caller(net, phone)
    caller.call()
    net.advance(3599)
    assert caller.byes() == []
    net.advance(1)
    assert len(caller.byes()) == 1
    other = net.add_instance("300")
    other.start_serving(auto_answer=True, max_call_seconds=0)
    caller = Caller(net, other)
    caller.call()
    net.advance(10 * 3600)
    assert caller.byes() == [] and len(other.dialogs) == 1
    finish(net)


def test_calls_the_application_answers_have_no_idle_limit(net) -> None:
    phone = net.add_instance("200")
    phone.start_serving(max_call_seconds=60)
    caller = Caller(net, phone)
    caller.endpoint.send(caller.request("INVITE", body=caller.offer()).to_bytes(),
                         phone.address)
    net.pump()
    answered = net.result(phone.incoming.get()).answer()
    net.pump()
    ok = [r for r in caller.responses() if r.status == 200][-1]
    caller.to_tag = ok.to.tag
    caller.send(caller.request("ACK"))
    net.result(answered)
    net.advance(600)
    assert caller.byes() == [] and len(phone.dialogs) == 1
    finish(net)


# -- the cap on concurrent calls ----------------------------------------------------------------

def test_call_beyond_max_calls_gets_503_with_retry_after(net) -> None:
    phone = net.add_instance("200", max_calls=3)
    phone.start_serving(auto_answer=True)
    callers = [Caller(net, phone) for _ in range(3)]
    assert [c.call().status for c in callers] == [200, 200, 200]
    refused = [Caller(net, phone).call() for _ in range(5)]
    assert {r.status for r in refused} == {503}
    assert all(r.get("retry-after") == "5" for r in refused)
    assert len(phone.calls) == 3
    # counted and summarised, not one line each
    assert phone.noise.counts["max-calls"] == 5
    assert list(phone.noise._windows) == ["max-calls"]
    # one call ends: the next one is taken
    first = callers[0]
    first.cseq += 1
    assert [r.status for r in first.send(first.request("BYE"))] == [200]
    assert Caller(net, phone).call().status == 200
    assert Caller(net, phone).call().status == 503
    finish(net)


def test_the_cap_counts_calls_of_both_directions_and_0_is_no_cap(net) -> None:
    phone = net.add_instance("200", max_calls=0)
    phone.start_serving(auto_answer=True)
    assert all(Caller(net, phone).call().status == 200 for _ in range(20))
    finish(net)


# -- the manager ----------------------------------------------------------------------------

def test_the_manager_hands_its_limits_to_every_instance(network) -> None:
    manager = InstanceManager(0, reactor=network, max_calls=7, max_call_seconds=42)
    manager.create_instances([SipInstanceConfig("a", "a", "100"),
                              SipInstanceConfig("b", "b", "200")])
    manager.start_serving(auto_answer=True)
    for managed in manager.instances.values():
        assert managed.ua.limits.max_calls == 7
        assert managed.ua.limits.max_call_seconds == 42
    manager.start_serving(auto_answer=True, max_call_seconds=5)
    assert all(m.ua.limits.max_call_seconds == 5 for m in manager.instances.values())
    network.run(manager.cleanup())


# -- twistd sipinstances ------------------------------------------------------------------------

def _parsed(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_twistd_options_default_to_10000_calls_and_one_hour() -> None:
    options = _parsed()
    assert options["max-calls"] == 10_000 and options["max-call-seconds"] == 3600
    service = makeService(options)
    assert service.max_calls == 10_000 and service.max_call_seconds == 3600


def test_twistd_options_reach_every_instance(network) -> None:
    options = _parsed("--max-calls", "2", "--max-call-seconds", "30", "--no-demo",
                      "--instances", "2", "--base-port", "0", "--quiet")
    service = makeService(options)
    assert (service.max_calls, service.max_call_seconds) == (2, 30)
    service._reactor = network  # the FakeNetwork instead of the real reactor
    service.startService()
    assert service.manager is not None
    phone = next(iter(service.manager.instances.values())).ua
    assert phone.limits.max_calls == 2 and phone.limits.max_call_seconds == 30
    assert [Caller(network, phone).call().status for _ in range(3)] == [200, 200, 503]
    network.advance(30)
    assert phone.calls == set()
    network.run(service.stopService())


@pytest.mark.parametrize("args", [("--max-calls", "-1"), ("--max-call-seconds", "x"),
                                  ("--max-call-seconds", "-5")])
def test_twistd_options_refuse_bad_limits(args: tuple[str, str]) -> None:
    with pytest.raises(usage.UsageError):
        _parsed(*args)
