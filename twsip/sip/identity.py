"""Who a user agent is on the wire, and the identifiers it mints for new requests.

A separate base class of `SipInstance` so the UA core's class stays about routing
datagrams; the sessions use these through their `UserAgent` protocol.
"""

from __future__ import annotations

import itertools
import os

from twsip.lexical import Address

__all__ = ["Identity"]


class Identity:
    """A DN at host:port, with branches, tags and Call-IDs unique to this process run.

    Every identifier is a random per-instance prefix and a counter: unique without a
    random draw per message, which the hot path would pay for on every request.
    """

    def __init__(self, dn: str, host: str) -> None:
        self.dn = dn
        self.host = host
        self.port = 0  # set once the socket is bound
        self._prefix = os.urandom(4).hex()
        self._counter = itertools.count(1)

    @property
    def address(self) -> Address:
        return (self.host, self.port)

    @property
    def uri(self) -> str:
        return f"sip:{self.dn}@{self.host}:{self.port}"

    @property
    def contact(self) -> str:
        return self.uri

    def new_branch(self) -> str:
        return f"z9hG4bK{self._prefix}{next(self._counter):x}"

    def new_via(self) -> str:
        """The Via of a new request from here: a fresh branch, and rport (RFC 3581) so the
        answer comes back to the port we sent from."""
        return f"SIP/2.0/UDP {self.host}:{self.port};branch={self.new_branch()};rport"

    def new_tag(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"

    def new_call_id(self) -> str:
        return f"{self._prefix}{next(self._counter):x}@{self.host}"
