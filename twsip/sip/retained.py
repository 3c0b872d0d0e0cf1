"""Messages a call keeps only so that they can be looked at, kept as their wire bytes.

An established call no longer uses its INVITE or the responses to it: the dialog state
(tags, CSeq numbers, route set, remote target, SDP) has been taken out of them. Yet
`ClientSession.invite`, `.final_response` and `.provisional` and `ServerSession.invite`
are public, and flows and tests read them. A parsed message is a dict of header lists
plus parsed Via/From/To/CSeq objects: some 15-25 objects and 3-4 KiB, which the garbage
collector walks on every full collection, thousands of calls times over. The same
message as bytes is one untracked object of a few hundred bytes. So a call keeps the
bytes once it is up, and parses them again in the rare case someone asks; what comes
back serialises to exactly the same bytes as the message kept.
"""

from __future__ import annotations

from twsip.sip.message import Message, Request, Response, parse

__all__ = ["retain", "rebuild_request", "rebuild_response"]


def retain(message: Message) -> bytes:
    """The compact form of a message a call keeps but no longer uses: the bytes it was
    received or sent as (`Message.wire`), else serialised now."""
    wire = message.wire
    return wire if wire is not None else message.to_bytes()


def rebuild_request(data: bytes, sent: bool = False) -> Request:
    """A retained request parsed again: a new object each time, so changing it changes
    nothing the call keeps. `sent`: one we built, whose headers never held the
    Content-Length that `to_bytes` writes (a received one had it, as parsed)."""
    message = parse(data)
    assert isinstance(message, Request)
    if sent:
        del message.headers["content-length"]
    return message


def rebuild_response(data: bytes) -> Response:
    """A retained (received) response parsed again; see `rebuild_request`."""
    message = parse(data)
    assert isinstance(message, Response)
    return message
