"""HTTP Digest as SIP uses it (RFC 3261 §22.4, updated by RFC 8760 for SHA-256): reading a
challenge, computing the answer, and answering one request's challenges.

Plain functions and small classes, no I/O: the registration and the calls through a PBX
both answer 401/407 the same way, and the arithmetic is checked against RFC 7616's own
examples. The password only ever enters `digest_response`; nothing here formats it, and
`mask_credentials` hides the one value derived from it (``response=``) wherever a
message's text is shown to a person.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field

from twsip.sip.message import Request, Response

__all__ = [
    "ALGORITHMS",
    "Challenge",
    "ChallengeAnswerer",
    "Credentials",
    "authorization_value",
    "choose_challenge",
    "digest_response",
    "mask_credentials",
    "parse_challenge",
]

# Strongest first: with several challenges in one response (RFC 8760 §2.4: one per
# algorithm), the first of these that the server offers is answered.
ALGORITHMS = {
    "SHA-256": hashlib.sha256,
    "SHA-256-SESS": hashlib.sha256,
    "MD5": hashlib.md5,
    "MD5-SESS": hashlib.md5,
}

_MASK = re.compile(r'(\bresponse\s*=\s*)("[^"]*"|[^\s,]+)', re.IGNORECASE)
_AUTH_LINE = re.compile(r"^((?:proxy-)?authorization\s*:.*)$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Credentials:
    """Who answers a challenge. The password never shows in a repr, a log or a report."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Challenge:
    """One ``Digest`` challenge of a WWW-Authenticate or Proxy-Authenticate header."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    proxy: bool = False  # from a 407: answered in Proxy-Authorization

    @property
    def header(self) -> str:
        """The header our answer goes in (RFC 3261 §22.2 and §22.3)."""
        return "proxy-authorization" if self.proxy else "authorization"


def _unquote(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_challenge(value: str, proxy: bool = False) -> Challenge | None:
    """A Digest challenge, or None for another scheme, a broken one or an algorithm we
    cannot compute (such a challenge is skipped, as RFC 7616 §3.7 lets a client do)."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    for part in _split_params(rest):
        name, _, raw = part.partition("=")
        params[name.strip().lower()] = raw
    realm, nonce = _unquote(params.get("realm")), _unquote(params.get("nonce"))
    if realm is None or not nonce:
        return None
    algorithm = (_unquote(params.get("algorithm")) or "MD5").upper()
    if algorithm not in ALGORITHMS:
        return None
    qop = tuple(q.strip().lower() for q in (_unquote(params.get("qop")) or "").split(",")
                if q.strip())
    stale = (_unquote(params.get("stale")) or "").lower() == "true"
    return Challenge(realm, nonce, algorithm, qop, _unquote(params.get("opaque")), stale,
                     proxy)


def _split_params(text: str) -> list[str]:
    """Split ``a="x, y", b=z`` on the commas outside quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def choose_challenge(response: Response) -> Challenge | None:
    """The challenge of a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate) to answer:
    the strongest algorithm offered that we can compute, preferring qop=auth."""
    proxy = response.status == 407
    name = "proxy-authenticate" if proxy else "www-authenticate"
    found = [c for c in (parse_challenge(v, proxy) for v in response.get_all(name)) if c]
    if not found:
        return None
    order = list(ALGORITHMS)
    found.sort(key=lambda c: (order.index(c.algorithm), "auth" not in c.qop))
    return found[0]


def _hash(algorithm: str, text: str) -> str:
    return ALGORITHMS[algorithm](text.encode("utf-8")).hexdigest()


def digest_response(challenge: Challenge, credentials: Credentials, method: str, uri: str,
                    nc: int, cnonce: str) -> str:
    """The ``response`` value of RFC 7616 §3.4.1 (qop=auth, or RFC 2069 without qop)."""
    algorithm = challenge.algorithm
    ha1 = _hash(algorithm,
                f"{credentials.username}:{challenge.realm}:{credentials.password}")
    if algorithm.endswith("-SESS"):
        ha1 = _hash(algorithm, f"{ha1}:{challenge.nonce}:{cnonce}")
    ha2 = _hash(algorithm, f"{method}:{uri}")
    if "auth" in challenge.qop:
        return _hash(algorithm, f"{ha1}:{challenge.nonce}:{nc:08x}:{cnonce}:auth:{ha2}")
    return _hash(algorithm, f"{ha1}:{challenge.nonce}:{ha2}")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authorization_value(challenge: Challenge, credentials: Credentials, method: str,
                        uri: str, nc: int = 1, cnonce: str | None = None) -> str:
    """The Authorization (or Proxy-Authorization) header value answering `challenge`."""
    cnonce = cnonce or os.urandom(12).hex()
    response = digest_response(challenge, credentials, method, uri, nc, cnonce)
    parts = [f"Digest username={_quote(credentials.username)}",
             f"realm={_quote(challenge.realm)}", f"nonce={_quote(challenge.nonce)}",
             f"uri={_quote(uri)}", f"response={_quote(response)}",
             f"algorithm={challenge.algorithm}"]
    if "auth" in challenge.qop:
        parts += ["qop=auth", f"nc={nc:08x}", f"cnonce={_quote(cnonce)}"]
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    return ", ".join(parts)


def mask_credentials(text: str) -> str:
    """A message's text with the ``response=`` of every (Proxy-)Authorization masked:
    the value is a hash of the password that an offline guesser could test words against,
    so reports, ladders and traces show ``response="***"``."""
    if "uthorization" not in text and "UTHORIZATION" not in text:
        return text
    return _AUTH_LINE.sub(lambda m: _MASK.sub(r'\1"***"', m.group(1)), text)


class ChallengeAnswerer:
    """Answers the 401/407 challenges to one request (a REGISTER round, an INVITE) with
    one set of credentials, within the limits that keep a wrong password from looping:

    * the first challenge is answered;
    * after that, only a challenge that says ``stale=true`` (the nonce expired, the
      password was right: RFC 7616 §3.3) is answered, and only once;
    * anything else is the final answer (a wrong password, an unknown user).

    `last` keeps the challenge last answered, so that a refresh can send credentials
    before being asked (`preempt`), counting `nc` up for the same nonce.
    """

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self.last: Challenge | None = None
        self._nc = 0
        self._answered = 0
        self._stale_retried = False

    def new_round(self) -> None:
        """A new request (a refresh): the retry limits start again."""
        self._answered = 0
        self._stale_retried = False

    def may_answer(self, challenge: Challenge) -> bool:
        if self._answered == 0:
            return True
        if challenge.stale and not self._stale_retried:
            self._stale_retried = True
            return True
        return False

    def retry(self, request: Request, response: Response, via: str) -> Request | None:
        """The request again with credentials for `response`'s challenge (new branch,
        CSeq + 1, RFC 3261 §22.2), or None when it must not be answered again."""
        challenge = choose_challenge(response)
        if challenge is None or not self.may_answer(challenge):
            return None
        self._answered += 1
        self.last = challenge
        self._nc = 0
        return self.sign(_again(request, via), challenge)

    def preempt(self, request: Request) -> Request:
        """Credentials for the last challenge's nonce put on `request` before any 401."""
        if self.last is not None:
            self.sign(request, self.last)
        return request

    def sign(self, request: Request, challenge: Challenge) -> Request:
        self._nc += 1
        request.set(challenge.header, authorization_value(
            challenge, self.credentials, request.method, request.uri, self._nc))
        return request


def _again(request: Request, via: str) -> Request:
    """A copy of `request` for a new transaction: the new Via, the next CSeq, no
    credentials from before."""
    headers = {name: list(values) for name, values in request.headers.items()
               if name not in ("authorization", "proxy-authorization")}
    headers["via"] = [via]
    headers["cseq"] = [f"{request.cseq.number + 1} {request.method}"]
    return Request(request.method, request.uri, headers, request.body)
