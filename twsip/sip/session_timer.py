"""RFC 4028 session timers: a call whose peer has vanished ends instead of staying up forever.

A caller that ACKs and then disappears would otherwise hold its dialog (and RTP port) until
shutdown. When the peer offers a session timer, the 2xx settles an interval and who
refreshes: the peer (``refresher=uac``, which this side prefers, since it costs nothing but
a deadline here) or this side. Each refresh (a re-INVITE or an UPDATE answered 2xx) starts
the interval again; without one, the side that does not refresh sends BYE shortly before
the session would expire (§10: the smaller of 32 s and a third of the interval before).
When this side refreshes it sends UPDATE at half the interval (§7.2), and a refresh that
times out or finds no dialog (408, 481) ends the call.

`uac` and `uas` in the refresher parameter name the two ends of the transaction carrying
it: in a request we receive, ``uac`` is always the peer, and in one we send, us.

Every call's deadline sits in the instance's `Deadlines`, so a thousand timed calls cost
one DelayedCall, and a call that ends leaves nothing behind.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.defer import Deferred

from twsip.interfaces import TimeSource
from twsip.lexical import wire_number
from twsip.sip.deadlines import Deadlines
from twsip.sip.message import Request, Response, SipParseError, parse_params
from twsip.sip.noise import NoiseSummary, printable
from twsip.sip.transaction import ClientNonInviteTransaction, TransactionLayer
from twsip.sip.uri import Address

__all__ = ["MIN_SE", "DEFAULT_INTERVAL", "SessionTimers", "screen", "session_expires",
           "supports_timer", "give_up_after"]

MIN_SE = 90  # §5: nobody may ask for less, and the least this UAS accepts
DEFAULT_INTERVAL = 1800  # §4's recommendation, for a peer that supports timers but asks none
OPTION_TAG = "timer"


class _TimedUA(Protocol):
    @property
    def contact(self) -> str: ...
    @property
    def transactions(self) -> TransactionLayer: ...


class TimedSession(Protocol):
    """What a session timer needs of a call (a `Session`)."""

    call_id: str

    @property
    def ua(self) -> _TimedUA: ...
    @property
    def ended(self) -> bool: ...
    def in_dialog_request(self, method: str, cseq: int | None = None) -> Request: ...
    def destination(self) -> Address: ...
    def hangup(self) -> Deferred[Any]: ...


def session_expires(message: Request | Response) -> tuple[int, str | None] | None:
    """The interval and the refresher (``uac``, ``uas`` or None) of Session-Expires."""
    value = message.get("session-expires")
    if value is None:
        return None
    head, _, params = value.partition(";")
    seconds = wire_number(head.strip())
    if seconds is None:
        raise SipParseError(400, f"Session-Expires {printable(value)!r} is not a number "
                                 f"of seconds (RFC 4028 4)")
    refresher = ((parse_params(";" + params).get("refresher") if params else None)
                 or "").lower()
    return seconds, refresher if refresher in ("uac", "uas") else None


def supports_timer(request: Request) -> bool:
    return any(token.lower() == OPTION_TAG
               for token in (*request.get_all("supported"), *request.get_all("require")))


def give_up_after(interval: float) -> float:
    """§10: the side that does not refresh sends BYE this long after the last refresh."""
    return interval - min(32.0, interval / 3)


def screen(request: Request, new_tag: Any) -> Response | None:
    """422 with our Min-SE for an interval shorter than we accept, to a caller that
    supports timers (§9: only it understands 422), 400 for one that is no number; None
    when the Session-Expires of an INVITE or UPDATE is fine or `negotiate` raises it."""
    try:
        asked = session_expires(request)
    except SipParseError as exc:
        response = request.response(400, to_tag=new_tag())
        response.set("warning", f'399 twsip "{exc.reason}"')
        return response
    if asked is None or asked[0] >= MIN_SE or not supports_timer(request):
        return None
    response = request.response(422, "Session Interval Too Small", to_tag=new_tag())
    response.set("min-se", str(MIN_SE))
    return response


class _Timer:
    __slots__ = ("interval", "ours")

    def __init__(self, interval: int, ours: bool) -> None:
        self.interval = interval
        self.ours = ours  # True: we send the refreshes; False: we hang up without one


class SessionTimers:
    """The session timers of one instance's calls, on one `Deadlines`."""

    def __init__(self, clock: TimeSource, noise: NoiseSummary) -> None:
        self.noise = noise
        self.active: dict[TimedSession, _Timer] = {}
        self.deadlines: Deadlines[TimedSession] = Deadlines(clock, self._due)

    def negotiate(self, session: TimedSession, request: Request, response: Response) -> None:
        """Settle the timer in our 2xx to an INVITE, re-INVITE or UPDATE (§9), and start
        the interval again: every such 2xx is a refresh."""
        headers = request.headers
        if not self.active and "session-expires" not in headers \
                and "supported" not in headers and "require" not in headers:
            return  # SIPp's calls, and most others: nothing to settle, nothing to stop
        asked = session_expires(request)
        supported = supports_timer(request)
        current = self.active.get(session)
        if asked is None:
            if not supported:  # no timer asked for, and none can be imposed
                self.stop(session)
                return
            minimum = wire_number((request.get("min-se") or "").partition(";")[0].strip())
            interval = current.interval if current is not None \
                else max(DEFAULT_INTERVAL, minimum or 0)
            peer_refreshes = True
        else:
            interval, refresher = asked
            interval = max(interval, MIN_SE)  # from a caller that cannot be sent 422
            # Honour a refresher asked for; else the peer refreshes if it can (§9).
            peer_refreshes = supported and refresher != "uas"
        response.set("session-expires",
                     f"{interval};refresher={'uac' if peer_refreshes else 'uas'}")
        response.set("supported", OPTION_TAG)
        if peer_refreshes:  # §9: it must know that it has to
            response.set("require", OPTION_TAG)
        self._arm(session, interval, not peer_refreshes)

    def update(self, session: TimedSession, request: Request, tx: Any) -> None:
        """UPDATE in a dialog (RFC 3311): answered 200 as a refresh; an offer in it is
        refused 488 and the session stays as it is (re-INVITE changes the media here)."""
        if request.body:
            response = request.response(488)
            response.set("warning", '399 twsip "UPDATE is taken as a session refresh '
                                    'only; send the offer in a re-INVITE"')
            tx.respond(response)
            return
        response = request.response(200)
        response.set("contact", f"<{session.ua.contact}>")
        self.negotiate(session, request, response)
        tx.respond(response)

    def stop(self, session: TimedSession) -> None:
        if self.active.pop(session, None) is not None:
            self.deadlines.discard(session)

    def close(self) -> None:
        self.active.clear()
        self.deadlines.close()

    def _arm(self, session: TimedSession, interval: int, ours: bool) -> None:
        self.active[session] = _Timer(interval, ours)
        self.deadlines.set(session, interval / 2 if ours else give_up_after(interval))

    def _due(self, session: TimedSession) -> None:
        timer = self.active.get(session)
        if timer is None or session.ended:
            return
        if timer.ours:
            self._refresh(session, timer)
            return
        self._end(session, f"no session refresh within {timer.interval} s")

    def _end(self, session: TimedSession, why: str) -> None:
        self.stop(session)
        self.noise.note("session-expired", "calls ended by their session timer (RFC 4028)",
                        "call-id {call_id}: {why}: hanging up (RFC 4028 session timer)",
                        call_id=printable(session.call_id), why=why)
        session.hangup().addErrback(lambda _: None)

    # -- this side refreshes (§7.4) -----------------------------------------------------------
    def _refresh(self, session: TimedSession, timer: _Timer) -> None:
        request = session.in_dialog_request("UPDATE")
        request.set("session-expires", f"{timer.interval};refresher=uac")
        request.set("supported", OPTION_TAG)
        ClientNonInviteTransaction(session.ua.transactions, request, session.destination(),
                                   _Refresh(self, session))

    def refreshed(self, session: TimedSession, response: Response) -> None:
        """The final answer to our UPDATE refresh."""
        timer = self.active.get(session)
        if timer is None or session.ended:
            return
        status = response.status
        if 200 <= status < 300:
            try:
                settled = session_expires(response)
            except SipParseError:
                settled = None
            interval = settled[0] if settled else timer.interval
            # In the answer, "uas" is the peer: it takes the refreshing over.
            self._arm(session, max(interval, MIN_SE), not (settled and settled[1] == "uas"))
        elif status in (408, 481):  # the peer or its dialog is gone (§10)
            self._end(session, f"session refresh answered {status}")
        elif status == 491:  # glare with the peer's own request: try again later
            self._arm(session, timer.interval, True)
        else:  # the peer cannot be refreshed (no UPDATE, ...): leave the call to it
            self.stop(session)

    def refresh_timed_out(self, session: TimedSession) -> None:
        if session in self.active and not session.ended:
            self._end(session, "no answer to the session refresh")


class _Refresh:
    """The transaction user of one UPDATE refresh."""

    __slots__ = ("timers", "session")

    def __init__(self, timers: SessionTimers, session: TimedSession) -> None:
        self.timers = timers
        self.session = session

    def receive_response(self, response: Response) -> None:
        if response.status >= 200:
            self.timers.refreshed(self.session, response)

    def timed_out(self) -> None:
        self.timers.refresh_timed_out(self.session)
