"""SIP URIs, only as far as a user agent in local mode needs them.

The stack reads a URI for two reasons: to check its scheme (RFC 3261 §8.2.2.1, 416) and to
find where a request goes. Local mode never resolves a name, so `loopback_address` answers
only for an IPv4 literal in 127.0.0.0/8 and says None for everything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twsip.lexical import Address, is_loopback, wire_number

__all__ = ["Address", "SipUri", "parse_uri", "uri_scheme", "is_loopback", "loopback_address"]

SUPPORTED_SCHEMES = frozenset({"sip", "sips"})



@dataclass
class SipUri:
    scheme: str
    user: str | None
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str = ""

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user is not None else ""
        port = f":{self.port}" if self.port else ""
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        headers = f"?{self.headers}" if self.headers else ""
        return f"{self.scheme}:{user}{self.host}{port}{params}{headers}"


def uri_scheme(uri: str) -> str:
    return uri.partition(":")[0].lower()


def parse_uri(uri: str) -> SipUri:
    """Parse a sip:/sips: URI. Raises ValueError for anything else or a malformed one."""
    scheme, colon, rest = uri.strip().partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in SUPPORTED_SCHEMES:
        raise ValueError(f"not a sip: URI: {uri!r}")
    rest, _, headers = rest.partition("?")
    user: str | None = None
    if "@" in rest:
        user, _, rest = rest.rpartition("@")
    hostport, _, param_text = rest.partition(";")
    params: dict[str, str | None] = {}
    for piece in param_text.split(";") if param_text else ():
        name, eq, value = piece.partition("=")
        params[name.strip().lower()] = value.strip() if eq else None
    if hostport.startswith("["):
        end = hostport.find("]")
        host, port_text = hostport[: end + 1], hostport[end + 2:] if end > 0 else ""
    else:
        host, _, port_text = hostport.partition(":")
    if not host:
        raise ValueError(f"no host in URI {uri!r}")
    port = None
    if port_text:
        port = wire_number(port_text)
        if port is None or not 0 < port < 65536:
            raise ValueError(f"bad port in URI {uri!r}")
    return SipUri(scheme, user, host.lower(), port, params, headers)


def loopback_address(uri: str) -> Address | None:
    """Where a request for `uri` goes in local mode, or None when that is not loopback.

    `maddr` wins over the host part, as RFC 3261 §8.1.2 says; the default port is 5060.
    """
    try:
        parsed = parse_uri(uri)
    except ValueError:
        return None
    host = parsed.params.get("maddr") or parsed.host
    if not is_loopback(host):
        return None
    return host, parsed.port or 5060
