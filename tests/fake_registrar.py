"""A registrar for in-memory tests: answers REGISTER the way a PBX does (401 with a
digest challenge, 200 with the binding), checking the credentials with its own
arithmetic (hashlib here, not twsip's digest module), and keeping the bindings."""

from __future__ import annotations

import hashlib
import re

from twisted.internet.protocol import DatagramProtocol

from twsip.sip.message import Request, parse


def _params(value: str) -> dict[str, str]:
    return {k.lower(): v.strip('"') for k, v in
            re.findall(r'(\w+)=("[^"]*"|[^\s,]+)', value)}


class FakeRegistrar(DatagramProtocol):
    """`mode`: "ok" (digest, then 200), "forbidden" (403 to everything), "silent" (never
    answers), "stale" (answers the first good credentials 401 stale=true once)."""

    def __init__(self, password: str = "secret", realm: str = "127.0.0.1",
                 algorithm: str = "MD5", mode: str = "ok") -> None:
        self.password = password
        self.realm = realm
        self.algorithm = algorithm
        self.mode = mode
        self.bindings: dict[str, tuple[str, int]] = {}  # AOR -> (contact, expires)
        self.requests: list[Request] = []
        self.nonces = 0
        self.stale_sent = False
        self.issued: set[str] = set()

    def _hash(self, text: str) -> str:
        name = "sha256" if self.algorithm == "SHA-256" else "md5"
        return hashlib.new(name, text.encode()).hexdigest()

    def _challenge(self, request: Request, stale: bool = False) -> bytes:
        self.nonces += 1
        self.issued.add(f"nonce{self.nonces}")
        response = request.response(401, to_tag="reg")
        response.set("www-authenticate",
                     f'Digest realm="{self.realm}", nonce="nonce{self.nonces}", qop="auth", '
                     f'algorithm={self.algorithm}' + (", stale=true" if stale else ""))
        return response.to_bytes()

    def _valid(self, request: Request) -> bool:
        p = _params(request.get("authorization") or "")
        if not p or p.get("nonce") not in self.issued or p.get("realm") != self.realm:
            return False
        ha1 = self._hash(f"{p['username']}:{self.realm}:{self.password}")
        ha2 = self._hash(f"REGISTER:{p['uri']}")
        expected = self._hash(f"{ha1}:{p['nonce']}:{p['nc']}:{p['cnonce']}:auth:{ha2}")
        return p.get("response") == expected

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:  # noqa: N802
        request = parse(data)
        assert isinstance(request, Request)
        self.requests.append(request)
        if self.mode == "silent":
            return
        if self.mode == "forbidden":
            self.transport.write(request.response(403, to_tag="reg").to_bytes(), addr)
            return
        if not self._valid(request):
            self.transport.write(self._challenge(request), addr)
            return
        if self.mode == "stale" and not self.stale_sent:
            self.stale_sent = True
            self.issued.clear()
            self.transport.write(self._challenge(request, stale=True), addr)
            return
        aor = request.to.uri
        contact = request.contact[0].uri
        expires = int(request.get("expires") or "0")
        if expires:
            self.bindings[aor] = (contact, expires)
        else:
            self.bindings.pop(aor, None)
        response = request.response(200, to_tag="reg")
        if expires:
            response.set("contact", f"<{contact}>;expires={expires}")
        self.transport.write(response.to_bytes(), addr)
