"""The calls of one user agent, and the dialogs among them that requests can reach.

A call (`Session`) is in `calls` from the moment it exists until it ends, so that cleanup
finds it; it is in `dialogs` once it has a dialog ID (§12: Call-ID, local tag, remote tag)
that in-dialog requests and ACKs are matched against.
"""

from __future__ import annotations

from twsip.sip.message import Request
from twsip.sip.noise import NoiseSummary, printable
from twsip.sip.session import ServerTransaction, Session
from twsip.sip.uri import Address

__all__ = ["DialogRegistry", "DialogId"]

DialogId = tuple[str, str, "str | None"]



class DialogRegistry:
    """Calls and dialogs of one UA, and the delivery of requests inside a dialog."""

    __slots__ = ("dialogs", "calls", "noise")

    def __init__(self, noise: NoiseSummary | None = None) -> None:
        self.dialogs: dict[DialogId, Session] = {}
        self.calls: set[Session] = set()
        self.noise = noise  # where stray ACKs are counted (a peer may send any number)

    def add(self, session: Session) -> None:
        self.dialogs[session.dialog_id] = session
        self.calls.add(session)

    def remove(self, session: Session) -> None:
        if self.dialogs.get(session.dialog_id) is session:
            del self.dialogs[session.dialog_id]
        self.calls.discard(session)

    def match(self, request: Request) -> Session | None:
        """The dialog a request with a To tag belongs to (§12.2.2): our tag is its To tag."""
        return self.dialogs.get((request.call_id, request.to.tag or "", request.from_.tag))

    def clear(self) -> None:
        self.calls.clear()
        self.dialogs.clear()

    def deliver(self, request: Request, tx: ServerTransaction, addr: Address) -> None:
        """An in-dialog request (it has a To tag) to its dialog, or 481 (§12.2.2)."""
        session = self.match(request)
        if session is None:
            tx.respond(request.response(481))
        else:
            session.peer = addr  # the peer may have moved; in-dialog answers follow it
            session.receive_request(request, tx)

    def deliver_ack(self, ack: Request) -> None:
        """An ACK for a 2xx (its own transaction, §17.1.1.3) to its dialog, if any."""
        session = self.match(ack)
        if session is None:
            if self.noise is not None:
                self.noise.note("stray-ack", "ACKs matching no dialog",
                                "dropped an ACK matching no dialog: call-id={call_id}",
                                call_id=printable(ack.call_id))
        else:
            session.ack_received(ack)
