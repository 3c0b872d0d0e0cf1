"""SIP messages: one UDP datagram (bytes) <-> `Request` / `Response`, and nothing else.

No I/O happens here. The parser does the work every user agent needs on every message
(start line, header split, compact names, unfolding, Content-Length, top Via, From/To tags,
Call-ID, CSeq) once, and leaves the rest as text until somebody asks. Anything malformed
raises `SipParseError`, which carries the status a server owes for it (RFC 3261 §8.2, §21)
and a reason a person understands.

Header values are `str`: the header section is decoded as UTF-8 with ``surrogateescape``, so
any byte sequence survives a parse/serialize round trip unchanged. Bodies stay `bytes`.
"""

from __future__ import annotations

import re
from typing import Iterable, TypeVar

from twsip.lexical import wire_number

__all__ = [
    "SipParseError",
    "Via",
    "NameAddr",
    "CSeq",
    "Message",
    "Request",
    "Response",
    "parse",
    "request_headers",
    "parse_params",
    "parse_name_addr",
    "parse_via",
    "split_commas",
    "canonical_name",
    "REASONS",
    "warning_value",
]

MAX_DATAGRAM = 65535
# Limits against abuse (RFC 3261 §21.5.14 513, §21.4.1 400). Nothing legitimate comes near:
# a message with more header lines is answered 513; one whose Via/From/To/Call-ID/CSeq
# (which any answer must copy, §8.2.6) exceed MAX_COPIED_BYTES is dropped, since its answer
# could outgrow a datagram; a header value with more than MAX_PARAMS parameters is
# malformed (400).
MAX_HEADER_LINES = 512
MAX_COPIED_BYTES = 32768
MAX_PARAMS = 100
_COPIED = ("via", "from", "to", "call-id", "cseq")
_PARSED_KEYS = frozenset(("via", "from", "to", "cseq"))  # kept parsed beside `headers`

# RFC 3261 §7.3.3 plus the compact forms registered since (RFC 3265, 3515, 3891, 4028).
COMPACT = {
    "i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact",
    "l": "content-length", "c": "content-type", "k": "supported", "s": "subject",
    "e": "content-encoding", "o": "event", "r": "refer-to", "u": "allow-events",
    "x": "session-expires", "a": "accept-contact", "b": "referred-by", "j": "reject-contact",
    "d": "request-disposition", "y": "identity", "n": "identity-info",
}

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1). Authorization-like
# headers and Date also contain commas but are not lists, so they are left alone.
LIST_HEADERS = frozenset({
    "via", "contact", "route", "record-route", "allow", "supported", "require",
    "proxy-require", "unsupported", "accept", "accept-encoding", "accept-language",
    "content-encoding", "allow-events", "in-reply-to", "call-info", "alert-info",
    "error-info", "content-language", "path", "service-route",
})

# Headers that may appear at most once: two From headers make a request ambiguous, so it
# is rejected with 400 (RFC 4475 §3.3.8, §3.3.9).
SINGLE_HEADERS = frozenset({
    "to", "from", "call-id", "cseq", "max-forwards", "content-length", "content-type",
})

REQUIRED_HEADERS = ("via", "to", "from", "call-id", "cseq")
# List headers written on one line; Via and the address lists keep a line per value,
# which is how people read them in traces.
_JOINED = LIST_HEADERS - {"via", "contact", "route", "record-route"}

_SPECIAL_CASE = {
    "call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version", "rack": "RAck", "rseq": "RSeq", "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
}

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 408: "Request Timeout", 413: "Request Entity Too Large",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 500: "Server Internal Error",
    501: "Not Implemented", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 600: "Busy Everywhere",
    603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}

_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")
_VERSION = re.compile(r"SIP/(\d+)\.(\d+)\Z", re.IGNORECASE)
_FOLD = re.compile(r"\r?\n[ \t]+")
_name_cache: dict[str, str] = {}
# Names as written on the wire -> the key they stand for, once validated: header names
# ("Via", "v", "CSeq" -> "via", "via", "cseq") and parameter names ("branch", " Tag" ->
# "branch", "tag"). The same few dozen names arrive in every message, so this skips
# lower-casing, stripping and the token check, and every message shares the key strings.
# Bounded: names beyond the limit take the slow path every time.
_NAME_CACHE_SIZE = 1024
_header_keys: dict[str, str] = {}
_param_names: dict[str, str] = {}


class SipParseError(ValueError):
    """A message that cannot be accepted, with the status a server owes its sender.

    `message` is what could be parsed before the fault (a `Request` whose headers are
    known), so that a UAS can still build the error response from it; it is None when
    not even the start line made sense.
    """

    def __init__(self, status: int, reason: str, message: "Message | None" = None) -> None:
        if len(reason) > 200:  # reasons quote the offending text, which may be 60 KB long
            reason = reason[:197] + "..."
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.message = message


def canonical_name(name: str) -> str:
    """The conventional spelling of a lower-case header name, for the wire."""
    try:
        return _name_cache[name]
    except KeyError:
        canon = _SPECIAL_CASE.get(name) or "-".join(p.capitalize() for p in name.split("-"))
        if len(_name_cache) < 1024:
            _name_cache[name] = canon
        return canon


def split_commas(value: str) -> list[str]:
    """Split a list header on commas that are outside quotes and angle brackets."""
    if '"' not in value and "<" not in value:
        return [p.strip() for p in value.split(",")]
    parts, start, quoted, angle, i, n = [], 0, False, False, 0, len(value)
    while i < n:
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == "," and not angle:
            parts.append(value[start:i].strip())
            start = i + 1
        i += 1
    parts.append(value[start:].strip())
    return parts


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` into an ordered dict; names are lower-cased.

    An empty parameter (``;;``) or a name that is not a token is malformed.
    """
    params: dict[str, str | None] = {}
    text = text.strip()
    if not text:
        return params
    if text[0] != ";":
        raise SipParseError(400, f"expected ';' before parameters, found {text[:20]!r}")
    pieces = text[1:].split(";") if '"' not in text else _split_quoted(text[1:], ";")
    if len(pieces) > MAX_PARAMS:
        raise SipParseError(400, f"{len(pieces)} parameters, more than the {MAX_PARAMS} accepted")
    for piece in pieces:
        name, eq, value = piece.partition("=")
        key = _param_names.get(name)
        if key is None:
            key = name.strip()
            if not key or not _TOKEN.match(key):
                raise SipParseError(400, f"malformed parameter {piece.strip()!r}")
            key = key.lower()
            if len(_param_names) < _NAME_CACHE_SIZE:
                _param_names[name] = key
        params[key] = value.strip() if eq else None
    return params


def _split_quoted(text: str, sep: str) -> list[str]:
    parts, start, quoted, i = [], 0, False, 0
    while i < len(text):
        ch = text[i]
        if quoted and ch == "\\":
            i += 1
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if quoted:
        raise SipParseError(400, "unbalanced quotes in parameters")
    parts.append(text[start:])
    return parts


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


class Via:
    """One Via value. `params` is mutable: the server transport adds received/rport."""

    __slots__ = ("transport", "host", "port", "params", "_raw")

    def __init__(self, transport: str, host: str, port: int | None,
                 params: dict[str, str | None], raw: str | None = None) -> None:
        self.transport = transport
        self.host = host
        self.port = port
        self.params = params
        self._raw = raw

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> str | None:
        return self.params.get("rport")

    def set_param(self, name: str, value: str | None) -> None:
        self.params[name] = value
        self._raw = None

    def __str__(self) -> str:
        if self._raw is None:
            host = f"{self.host}:{self.port}" if self.port else self.host
            self._raw = f"SIP/2.0/{self.transport} {host}{_format_params(self.params)}"
        return self._raw

    def __repr__(self) -> str:
        return f"<Via {self}>"


def _split_hostport(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(400, f"unterminated IPv6 reference in {text!r}")
        host, rest = text[: end + 1], text[end + 1:]
        if not rest:
            return host, None
        if rest[0] != ":":
            raise SipParseError(400, f"malformed host {text!r}")
        port_text = rest[1:]
    else:
        host, colon, port_text = text.partition(":")
        if not colon:
            port_text = ""
    if not host:
        raise SipParseError(400, f"missing host in {text!r}")
    if not port_text:
        return host, None
    port = wire_number(port_text)
    if port is None or not 0 < port < 65536:
        raise SipParseError(400, f"bad port in {text!r}")
    return host, port


def parse_via(value: str) -> Via:
    """Parse one Via value (``SIP / 2.0 / UDP host:port;params``, LWS allowed)."""
    head, semi, tail = value.partition(";")
    sent = _sent_bys.get(head)
    if sent is None:
        sent = _remember(_sent_bys, head, _parse_sent_by(head, value))
    transport, host, port = sent
    params = parse_params(semi + tail) if semi else {}
    if "branch" in params and not params["branch"]:
        raise SipParseError(400, f"empty branch in Via {value!r}")
    return Via(transport, host, port, params, value)


def _parse_sent_by(head: str, value: str) -> tuple[str, str, int | None]:
    """``SIP/2.0/UDP host:port`` -> transport, host, port."""
    if head.startswith("SIP/2.0/"):
        rest = head[8:]
    else:
        proto = head.split("/", 2)
        if len(proto) != 3 or proto[0].strip().upper() != "SIP" or proto[1].strip() != "2.0":
            raise SipParseError(400, f"malformed Via {value!r}")
        rest = proto[2].lstrip()
    transport, _, sent_by = rest.partition(" ")
    sent_by = sent_by.strip()
    if not transport or not _TOKEN.match(transport) or not sent_by or " " in sent_by:
        raise SipParseError(400, f"malformed Via {value!r}")
    host, port = _split_hostport(sent_by)
    return transport.upper(), host, port


class NameAddr:
    """A From/To/Contact/Route value: display name, URI text and header parameters.

    Treated as immutable once parsed: messages of one call share the parsed From and To
    (see `_shared_name_addr`); `with_tag` returns a new one.
    """

    __slots__ = ("display", "uri", "params", "_raw")

    def __init__(self, uri: str, display: str | None = None,
                 params: dict[str, str | None] | None = None, raw: str | None = None) -> None:
        self.uri = uri
        self.display = display
        self.params = params if params is not None else {}
        self._raw = raw

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> "NameAddr":
        params = dict(self.params)
        params["tag"] = tag
        return NameAddr(self.uri, self.display, params)

    def __str__(self) -> str:
        if self._raw is None:
            display = ""
            if self.display:
                escaped = self.display.replace("\\", "\\\\").replace('"', '\\"')
                display = f'"{escaped}" '
            self._raw = f"{display}<{self.uri}>{_format_params(self.params)}"
        return self._raw

    def __repr__(self) -> str:
        return f"<NameAddr {self}>"


def _unquote(text: str) -> str:
    if "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out)


def parse_name_addr(value: str) -> NameAddr:
    """Parse ``"Display" <uri>;params`` or a bare ``uri;params`` (RFC 3261 §20.10)."""
    text = value.strip()
    display: str | None = None
    if text.startswith('"'):
        i = text.find('"', 1)
        if i < 0 or "\\" in text[1:i]:  # escapes (or no closing quote): walk it
            i, n = 1, len(text)
            while i < n:
                ch = text[i]
                if ch == "\\":
                    i += 2
                    continue
                if ch == '"':
                    break
                i += 1
            else:
                raise SipParseError(400, f"unterminated quoted display name in {value!r}")
        display = _unquote(text[1:i])
        text = text[i + 1:].lstrip()
        if not text.startswith("<"):
            raise SipParseError(400, f"display name without <uri> in {value!r}")
    lt = text.find("<")
    if lt >= 0:
        gt = text.find(">", lt)
        if gt < 0:
            raise SipParseError(400, f"unterminated <uri> in {value!r}")
        if display is None:
            display = text[:lt].strip() or None
        uri = text[lt + 1:gt].strip()
        rest = text[gt + 1:]
    else:
        uri, semi, rest = text.partition(";")
        uri = uri.strip()
        rest = semi + rest
    if ":" not in uri or " " in uri:
        raise SipParseError(400, f"malformed URI in {value!r}")
    return NameAddr(uri, display, parse_params(rest) if rest.strip() else {}, value.strip())


# From, To and CSeq values recur: a dialog's From and To arrive in every request and
# response of the call, a caller's untagged To in every INVITE it sends, and "1 INVITE" in
# most calls. Their parsed forms are kept by value text, and shared between messages; that
# is safe because nothing changes a parsed NameAddr or CSeq (`with_tag` makes a new one).
# Bounded: emptied when full, so that a flood of distinct values costs a parse each and
# never memory.
_VALUE_CACHE_SIZE = 4096
_name_addrs: dict[str, NameAddr] = {}
# ... and so does the part of a Via before its parameters: a peer's "SIP/2.0/UDP host:port".
_sent_bys: dict[str, tuple[str, str, int | None]] = {}
_cseqs: dict[str, "CSeq"] = {}
_Parsed = TypeVar("_Parsed")


def _remember(cache: dict[str, _Parsed], text: str, parsed: _Parsed) -> _Parsed:
    """Keep a parsed value for its text in one of the caches above."""
    if len(cache) >= _VALUE_CACHE_SIZE:
        cache.clear()
    cache[text] = parsed
    return parsed


def _shared_name_addr(value: str) -> NameAddr:
    parsed = _name_addrs.get(value)
    return parsed if parsed is not None else _remember(_name_addrs, value,
                                                       parse_name_addr(value))


class CSeq:
    __slots__ = ("number", "method")

    def __init__(self, number: int, method: str) -> None:
        self.number = number
        self.method = method

    def __str__(self) -> str:
        return f"{self.number} {self.method}"

    def __repr__(self) -> str:
        return f"<CSeq {self}>"


def _parse_cseq(value: str) -> CSeq:
    parts = value.split()
    number = wire_number(parts[0]) if len(parts) == 2 else None
    if number is None or not _TOKEN.match(parts[1]):
        raise SipParseError(400, f"malformed CSeq {value!r}")
    if number >= 2**31:
        raise SipParseError(400, f"CSeq number {parts[0]} is larger than 2**31-1")
    return CSeq(number, parts[1])


class Message:
    """Headers and body shared by requests and responses.

    `headers` maps a lower-case full header name to its values in order; list headers are
    already split on commas. The parsed forms of the headers the stack reads on every
    message are cached and kept consistent with `headers` by the setters.

    `wire` is the datagram the message was parsed from, or the bytes its transaction sent
    it as: what a call keeps of it once up (`twsip.sip.retained`), without serialising it
    again. The setters here reset it; code that changes `headers` or `body` directly
    after a message was received or sent must set it to None (twsip itself never does).
    """

    __slots__ = ("headers", "body", "wire", "_vias", "_from", "_to", "_cseq")

    def __init__(self, headers: dict[str, list[str]] | None = None, body: bytes = b"") -> None:
        self.headers: dict[str, list[str]] = headers if headers is not None else {}
        self.body = body
        self.wire: bytes | None = None
        self._vias: list[Via] | None = None
        self._from: NameAddr | None = None
        self._to: NameAddr | None = None
        self._cseq: CSeq | None = None

    # -- generic access -------------------------------------------------------------
    def get(self, name: str, default: str | None = None) -> str | None:
        values = self.headers.get(_key(name))
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        return list(self.headers.get(_key(name), ()))

    def __contains__(self, name: str) -> bool:
        return _key(name) in self.headers

    def set(self, name: str, value: str | Iterable[str]) -> None:
        key = _key(name)
        self.headers[key] = [value] if isinstance(value, str) else list(value)
        self.wire = None
        if key in _PARSED_KEYS:
            self._forget(key)

    def _forget(self, key: str) -> None:
        if key == "via":
            self._vias = None
        elif key == "from":
            self._from = None
        elif key == "to":
            self._to = None
        elif key == "cseq":
            self._cseq = None

    # -- the fields the stack needs --------------------------------------------------
    @property
    def vias(self) -> list[Via]:
        if self._vias is None:
            self._vias = [parse_via(v) for v in self.headers.get("via", ())]
        return self._vias

    @property
    def top_via(self) -> Via:
        vias = self.vias
        if not vias:
            raise SipParseError(400, "missing Via")
        return vias[0]

    def update_top_via(self) -> None:
        """Write the (modified) top Via back into `headers`."""
        self.headers["via"][0] = str(self.top_via)
        self.wire = None

    @property
    def from_(self) -> NameAddr:
        if self._from is None:
            self._from = _shared_name_addr(self._single("from"))
        return self._from

    @from_.setter
    def from_(self, value: NameAddr) -> None:
        self.headers["from"] = [str(value)]
        self.wire = None
        self._from = value

    @property
    def to(self) -> NameAddr:
        if self._to is None:
            self._to = _shared_name_addr(self._single("to"))
        return self._to

    @to.setter
    def to(self, value: NameAddr) -> None:
        self.headers["to"] = [str(value)]
        self.wire = None
        self._to = value

    @property
    def call_id(self) -> str:
        return self._single("call-id")

    @property
    def cseq(self) -> CSeq:
        if self._cseq is None:
            value = self._single("cseq")
            cseq = _cseqs.get(value)
            self._cseq = cseq if cseq is not None else _remember(_cseqs, value,
                                                                 _parse_cseq(value))
        return self._cseq

    @property
    def max_forwards(self) -> int | None:
        values = self.headers.get("max-forwards")
        if not values:
            return None
        value = values[0]
        number = wire_number(value.strip())
        if number is None or number > 255:
            raise SipParseError(400, f"Max-Forwards {value!r} is not a number from 0 to 255")
        return number

    @property
    def contact(self) -> list[NameAddr]:
        return [_shared_name_addr(v) for v in self.headers.get("contact", ()) if v != "*"]

    @property
    def content_type(self) -> str | None:
        """The media type, lower-cased and without parameters."""
        value = self.get("content-type")
        return value.partition(";")[0].strip().lower() if value else None

    @property
    def require(self) -> list[str]:
        return [v for v in self.headers.get("require", ()) if v]

    def _single(self, key: str) -> str:
        values = self.headers.get(key)
        if not values:
            raise SipParseError(400, f"missing {canonical_name(key)} header")
        return values[0]

    # -- wire format -------------------------------------------------------------------
    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialize; Content-Length always states the real body length."""
        out = [self.start_line()]
        append = out.append
        for key, values in self.headers.items():
            prefix = _line_prefixes.get(key)
            if prefix is None:
                if key == "content-length":
                    continue
                prefix = _line_prefix(key)
            if len(values) == 1:
                append(prefix + values[0])
            elif key in _JOINED:
                append(prefix + ", ".join(values))
            elif values:
                append(prefix + prefix.join(values))
        body = self.body
        append(f"\r\nContent-Length: {len(body)}\r\n\r\n")
        return "".join(out).encode("utf-8", "surrogateescape") + body

    __bytes__ = to_bytes

    def __str__(self) -> str:
        return self.to_bytes().decode("utf-8", "replace")


# "\r\nName: " per header key, so that serialising is one concatenation per line.
_line_prefixes: dict[str, str] = {}


def _line_prefix(key: str) -> str:
    prefix = f"\r\n{canonical_name(key)}: "
    if len(_line_prefixes) < 1024:
        _line_prefixes[key] = prefix
    return prefix


def _key(name: str) -> str:
    key = name.lower()
    return COMPACT.get(key, key)


class Request(Message):
    __slots__ = ("method", "uri", "version")

    def __init__(self, method: str, uri: str, headers: dict[str, list[str]] | None = None,
                 body: bytes = b"", version: str = "SIP/2.0") -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri
        self.version = version

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def response(self, status: int, reason: str | None = None, *,
                 to_tag: str | None = None) -> "Response":
        """Build a response per RFC 3261 §8.2.6: Via, From, Call-ID, CSeq and To copied.

        Works on a partly parsed request too (error answers to malformed requests copy
        what is there).
        """
        own = self.headers
        headers: dict[str, list[str]] = {}
        for key in _COPIED:
            values = own.get(key)
            if values:
                headers[key] = values[:]
        response = Response(status, reason, headers)
        if to_tag is not None and status != 100 and "to" in headers:
            try:
                if self.to.tag is None:  # the request's To text, tagged (§8.2.6.2)
                    headers["to"] = [f"{headers['to'][0]};tag={to_tag}"]
            except SipParseError:
                pass
        return response

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    __slots__ = ("status", "reason", "version")

    def __init__(self, status: int, reason: str | None = None,
                 headers: dict[str, list[str]] | None = None, body: bytes = b"",
                 version: str = "SIP/2.0") -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = REASONS.get(status, "Unknown") if reason is None else reason
        self.version = version

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


def warning_value(reason: str, code: int = 399) -> str:
    """A Warning value (RFC 3261 §20.43) carrying a human reason; quotes and backslashes
    are replaced so the quoted-string stays well formed whatever the reason says."""
    return '{} twsip "{}"'.format(code, reason.replace("\\", "/").replace('"', "'"))


def request_headers(method: str, cseq: int, *, via: str, from_: str, to: str,
                    call_id: str) -> dict[str, list[str]]:
    """The header fields every request starts with (§8.1.1), in the order peers expect them.

    Every request twsip builds (a new INVITE or OPTIONS, an in-dialog request, the ACK or
    CANCEL of a transaction) starts from this one dict, so they cannot drift apart.
    """
    return {
        "via": [via],
        "max-forwards": ["70"],
        "from": [from_],
        "to": [to],
        "call-id": [call_id],
        "cseq": [f"{cseq} {method}"],
    }


def _split_head(data: bytes) -> tuple[bytes, bytes, bool]:
    """Split a datagram into header section and the bytes after the blank line."""
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return data[:end], data[end + 4:], True
    end = data.find(b"\n\n")
    if end >= 0:
        return data[:end], data[end + 2:], True
    # No blank line: the datagram is all header (RFC 4475 §3.1.2.15 sends one like that).
    return data.rstrip(b"\r\n"), b"", False


def _header_lines(head: str) -> list[str]:
    if "\n " in head or "\n\t" in head:
        head = _FOLD.sub(" ", head)
    if "\r" in head:
        return head.split("\r\n") if "\n" in head else head.split("\r")
    return head.split("\n")


def _parse_start_line(line: str) -> Request | Response:
    if line[:4].upper() == "SIP/":
        version, _, rest = line.partition(" ")
        code, _, reason = rest.partition(" ")
        if not _VERSION.match(version):
            raise SipParseError(400, f"malformed status line {line[:80]!r}")
        if version.upper() != "SIP/2.0":
            raise SipParseError(505, f"unsupported SIP version {version!r}")
        status = wire_number(code) if len(code) == 3 else None
        if status is None or not 100 <= status <= 699:
            raise SipParseError(400, f"status code {code[:20]!r} is not from 100 to 699")
        return Response(status, reason.strip(), {})
    parts = line.split()
    if len(parts) != 3:
        raise SipParseError(400, f"request line must be 'METHOD URI SIP/2.0', got {line[:80]!r}")
    method, uri, version = parts
    if not _TOKEN.match(method):
        raise SipParseError(400, f"method {method[:40]!r} is not a token")
    if version != "SIP/2.0":
        if not _VERSION.match(version):
            raise SipParseError(400, f"malformed SIP version {version[:20]!r}")
        if version.upper() != "SIP/2.0":
            raise SipParseError(505, f"unsupported SIP version {version!r}")
    if ":" not in uri or uri[0] in "<\"":
        raise SipParseError(400, f"malformed Request-URI {uri[:80]!r}")
    return Request(method, uri, {}, b"", "SIP/2.0")


def parse(data: bytes) -> Request | Response:
    """Parse one datagram. Raises `SipParseError` for anything malformed.

    Bytes after the body that Content-Length announces are discarded (RFC 3261 §18.3);
    without Content-Length the rest of the datagram is the body.
    """
    if len(data) > MAX_DATAGRAM:
        raise SipParseError(513, "message larger than a UDP datagram")
    data = data.lstrip(b"\r\n")  # keep-alive CRLFs before a message (RFC 5626 §4.4.1)
    if not data:
        raise SipParseError(400, "empty message")
    raw_head, rest, _ = _split_head(data)
    head = raw_head.decode("utf-8", "surrogateescape")
    lines = _header_lines(head)
    start_error: SipParseError | None = None
    try:
        message = _parse_start_line(lines[0])
    except SipParseError as exc:
        method = lines[0].split(" ", 1)[0]
        if lines[0][:4].upper() == "SIP/" or not _TOKEN.match(method):
            raise  # a response (never answered) or not SIP at all
        # A request with a bad start line is still owed an answer (400/505), built from
        # its headers, so read them before reporting the fault.
        start_error = exc
        message = Request(method, "", {})
    headers = message.headers
    if len(lines) > MAX_HEADER_LINES + 1 and start_error is None:
        start_error = SipParseError(
            513, f"{len(lines) - 1} header lines, more than the {MAX_HEADER_LINES} accepted",
            message)
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            if not line.strip():
                continue
            # Reported after the loop, so that the answer can copy every header it needs.
            if start_error is None:
                start_error = SipParseError(
                    400, f"header line without a colon: {line[:60]!r}", message)
            continue
        key = _header_keys.get(name)
        if key is None:
            key = name.lower()
            if key[-1:] in " \t":
                key = key.rstrip()
            key = COMPACT.get(key, key)
            if len(_header_keys) < _NAME_CACHE_SIZE:
                _header_keys[name] = key
        value = value.strip()
        values = headers.get(key)
        if values is None:
            headers[key] = split_commas(value) if "," in value and key in LIST_HEADERS \
                else [value]
            continue
        if key in SINGLE_HEADERS:
            if start_error is None:
                start_error = SipParseError(
                    400, f"more than one {canonical_name(key)} header", message)
            continue  # the first one is what an answer copies
        if key in LIST_HEADERS and "," in value:
            values.extend(split_commas(value))
        else:
            values.append(value)
    if start_error is None and "\x00" in head and head.count("\x00") != head.count("\\\x00"):
        # A NUL is only valid escaped, as a quoted-pair (RFC 3261 §25.1; RFC 4475's intmeth
        # has one); a bare one is where C-string peers and log readers would cut.
        start_error = SipParseError(400, "NUL byte in a header value", message)
    if len(data) > MAX_COPIED_BYTES:
        _check_copied_size(headers)
    if start_error is not None:
        start_error.message = message
        raise start_error
    length_values = headers.get("content-length")
    if length_values is None:
        body = rest
    else:
        text = length_values[0]
        number = wire_number(text)
        if number is None:
            raise SipParseError(400, f"Content-Length {text[:20]!r} is not a number", message)
        length = number
        if length > len(rest):
            raise SipParseError(
                400, f"Content-Length {length} but only {len(rest)} body bytes arrived", message)
        body = rest[:length] if length != len(rest) else rest
    message.body = body
    _check(message)
    message.wire = data
    return message


def _check_copied_size(headers: dict[str, list[str]]) -> None:
    """Drop (message None) what no answer could be built for: §8.2.6 copies these headers."""
    copied = sum(len(v) for key in _COPIED for v in headers.get(key, ()))
    if copied > MAX_COPIED_BYTES:
        raise SipParseError(
            513, f"{copied} bytes in Via/From/To/Call-ID/CSeq, more than {MAX_COPIED_BYTES}")


def _check(message: Message) -> None:
    """Validate what every message must carry, so later layers can rely on it."""
    headers = message.headers
    for key in REQUIRED_HEADERS:
        if not headers.get(key):
            raise SipParseError(400, f"missing {canonical_name(key)} header", message)
    try:
        # The parsed forms are cached on the message, as the properties would.
        message._vias = [parse_via(v) for v in headers["via"]]
        message._from = _shared_name_addr(headers["from"][0])
        message._to = _shared_name_addr(headers["to"][0])
        cseq = message.cseq
        call_id = headers["call-id"][0]
        if not call_id or " " in call_id:
            raise SipParseError(400, "malformed Call-ID")
        if isinstance(message, Request):
            if cseq.method != message.method:
                raise SipParseError(
                    400, f"CSeq method {cseq.method} does not match {message.method}")
            if "max-forwards" in headers:
                message.max_forwards
    except SipParseError as exc:
        exc.message = message
        raise
