"""The UA core's checks on a new request (RFC 3261 §8.2.1-8.2.3), and the answers it gives
by itself (OPTIONS, a malformed request).

Pure functions: a request in, a `Response` (or None when all is well) out. Nothing is sent
from here; `new_tag` is only called when a response is actually built, so a request that
passes costs no tag.
"""

from __future__ import annotations

from typing import Callable

from twsip.sip import sdp, session_timer
from twsip.sip.message import Request, Response, SipParseError, warning_value
from twsip.sip.session import ALLOWED_METHODS
from twsip.sip.uri import SUPPORTED_SCHEMES, uri_scheme

__all__ = ["KNOWN_METHODS", "ALLOW", "screen", "screen_offer", "options_response",
           "malformed_response", "warning"]

# Methods this UA knows but does not serve: 405 with Allow (§8.2.1). Others get 501.
# (INFO, UPDATE, REFER and NOTIFY are served: they are in ALLOWED_METHODS.)
KNOWN_METHODS = frozenset({"REGISTER", "SUBSCRIBE", "MESSAGE", "PRACK", "PUBLISH"})
ACCEPTED_BODIES = ("application/sdp",)
# INFO carries DTMF in these (the dialog answers other INFO packages itself, with 415)
INFO_BODIES = ("application/sdp", "application/dtmf-relay", "application/dtmf")
ALLOW = ", ".join(ALLOWED_METHODS)
# Option tags (RFC 3261 §19.2) a request may Require of us: RFC 3891 Replaces and RFC 4028
# session timers; the others get 420.
EXTENSIONS = frozenset({"replaces", session_timer.OPTION_TAG})
# NOTIFY of a REFER's implicit subscription carries a sipfrag (RFC 3515 §2.4.5)
NOTIFY_BODIES = ("message/sipfrag",)

TagFactory = Callable[[], str]


def warning(reason: str) -> str:
    """A 399 Warning value carrying a human reason (see `warning_value`)."""
    return warning_value(reason)


def screen(request: Request, new_tag: TagFactory) -> Response | None:
    """§8.2.1-8.2.3: method, URI scheme, Require, body; None when all is well."""
    method = request.method
    if method not in ALLOWED_METHODS:
        if method in KNOWN_METHODS:
            response = request.response(405, to_tag=new_tag())
            response.set("allow", ALLOW)
            return response
        return request.response(501, to_tag=new_tag())
    if uri_scheme(request.uri) not in SUPPORTED_SCHEMES:
        return request.response(416, to_tag=new_tag())
    if method == "CANCEL":
        return None
    if method == "INVITE":
        problem = _contact_problem(request)
        if problem is not None:
            response = request.response(400, to_tag=new_tag())
            response.set("warning", warning(problem))
            return response
    unsupported = [tag for tag in request.require if tag.lower() not in EXTENSIONS]
    if unsupported:
        response = request.response(420, to_tag=new_tag())
        response.set("unsupported", unsupported)
        return response
    if "session-expires" in request.headers and method in ("INVITE", "UPDATE"):
        refusal = session_timer.screen(request, new_tag)
        if refusal is not None:
            return refusal
    if request.body:
        refusal = _screen_body(request, new_tag)
        if refusal is not None:
            return refusal
    if method == "INVITE" and "accept" in request.headers:
        accepted = {v.partition(";")[0].strip().lower() for v in request.get_all("accept")}
        if accepted and not accepted & {"application/sdp", "application/*", "*/*", ""}:
            response = request.response(406, to_tag=new_tag())
            response.set("accept", "application/sdp")
            return response
    return None


def _contact_problem(request: Request) -> str | None:
    """§8.1.1.8: an INVITE carries exactly one Contact, a URI (not "*", which only a
    REGISTER may use): the remote target of the dialog it creates (§12.1.1)."""
    values = [v.strip() for v in request.headers.get("contact", ()) if v.strip()]
    if not values:
        return "an INVITE needs a Contact header (RFC 3261 8.1.1.8)"
    if "*" in values:
        return "Contact: * is for REGISTER only; an INVITE needs a URI (RFC 3261 8.1.1.8)"
    if len(values) > 1:
        return "an INVITE carries exactly one Contact URI (RFC 3261 8.1.1.8)"
    try:
        request.contact
    except SipParseError as exc:
        return exc.reason
    return None


def _screen_body(request: Request, new_tag: TagFactory) -> Response | None:
    """§8.2.3: a body we cannot read is refused 415, saying what we can."""
    accepted = (INFO_BODIES if request.method == "INFO" else
                NOTIFY_BODIES if request.method == "NOTIFY" else ACCEPTED_BODIES)
    if request.content_type not in accepted:
        response = request.response(415, to_tag=new_tag())
        response.set("accept", ", ".join(accepted))
        return response
    encoding = request.get("content-encoding")
    if encoding and encoding.lower() != "identity":
        response = request.response(415, to_tag=new_tag())
        response.set("accept-encoding", "identity")
        return response
    return None


def options_response(request: Request, tag: str, contact: str) -> Response:
    """What this UA can do (§11.2): the methods, body type and extensions it serves."""
    response = request.response(200, to_tag=tag)
    response.set("allow", ALLOW)
    response.set("accept", "application/sdp")
    response.set("supported", ", ".join(sorted(EXTENSIONS)))
    response.set("contact", f"<{contact}>")
    return response


def malformed_response(exc: SipParseError, new_tag: TagFactory) -> Response | None:
    """The answer owed to a malformed request, or None when none is owed or possible:
    responses and ACKs are never answered, and without Via and CSeq no answer could be
    matched by its sender (§17.1.3)."""
    request = exc.message
    if not isinstance(request, Request) or request.method == "ACK" \
            or "via" not in request.headers or "cseq" not in request.headers:
        return None
    response = request.response(exc.status, to_tag=new_tag())
    response.set("warning", warning(exc.reason))
    return response


def screen_offer(invite: Request, codecs: tuple[str, ...], host: str,
                 new_tag: TagFactory) -> Response | None:
    """488 for an INVITE whose offer we could never answer (RFC 3264 §6), before a call is
    queued for the application; None when its SDP is fine or absent."""
    if not invite.body:
        return None
    try:
        sdp.answer(invite.body, codecs, host, 0)
    except sdp.SdpError as exc:
        response = invite.response(488, to_tag=new_tag())
        response.set("warning", warning_value(str(exc), 304))  # 304: media type unavailable
        return response
    return None
