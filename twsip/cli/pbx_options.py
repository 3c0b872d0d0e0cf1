"""``twistd sipinstances --register HOST:PORT``: the service's instances register to a PBX.

A separate `usage.Options` block (inherited by `twsip.service.Options`, as the tester
options are) so that a softphone or SIPp can reach the instances through a PBX on this
machine. The options only fill in what a flow's sipInstance node does not say itself: a
node with its own ``pbxHost`` keeps it, so ``--scenario`` flows behave as they do under
``python -m twsip run``. Passwords never come from the command line (a process list shows
it to every user): ``TWSIP_PASSWORD_<DN>``, else ``TWSIP_PASSWORD``, as for flows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.python import usage

from twsip.config import SipInstanceConfig
from twsip.sip.uri import is_loopback
from twsip.lexical import wire_number

__all__ = ["PbxOptions", "PbxSettings", "pbx_settings", "with_pbx", "parse_pbx",
           "listens_tcp"]

TRANSPORTS = ("UDP", "TCP")


@dataclass(frozen=True)
class PbxSettings:
    """Where instances without a PBX of their own register, and as whom."""

    host: str
    port: int
    transport: str = "UDP"
    auth_user: str | None = None
    interval: int | None = None


def parse_pbx(value: str) -> tuple[str, int]:
    """HOST:PORT (PORT defaults to 5060) with HOST a loopback literal or ``localhost``;
    local mode never looks a name up, so anything else is refused here."""
    host, sep, port_text = value.strip().rpartition(":")
    if not sep:
        host, port_text = value.strip(), "5060"
    port = wire_number(port_text)
    if port is None or not 1 <= port <= 65535:
        raise ValueError(f"{value!r}: write HOST:PORT with a port from 1 to 65535")
    if host.lower() != "localhost" and not is_loopback(host):
        raise ValueError(f"{value!r}: local mode registers only to a PBX on 127.0.0.0/8 "
                         f"(an IPv4 literal such as 127.0.0.1, or localhost)")
    return host, port


def _transport(value: str) -> str:
    upper = value.strip().upper()
    if upper not in TRANSPORTS:
        raise ValueError(f"{value!r}: UDP or TCP")
    return upper


_transport.coerceDoc = "UDP or TCP."  # type: ignore[attr-defined]


def _interval(value: str) -> int:
    number = wire_number(value.strip())
    if number is None or not 1 <= number <= 86400:
        raise ValueError(f"whole seconds from 1 to 86400, not {value!r}")
    return number


_interval.coerceDoc = "Whole seconds [default: 300]."  # type: ignore[attr-defined]


def _listen_transports(value: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip().lower() for n in value.split(",") if n.strip()))
    if not names or any(n not in ("udp", "tcp") for n in names) or "udp" not in names:
        raise ValueError(f"{value!r}: udp, or udp,tcp")
    return names


_listen_transports.coerceDoc = "udp, or udp,tcp [default: udp]."  # type: ignore[attr-defined]


def listens_tcp(options: Mapping[str, Any]) -> bool:
    """Whether --transport asks each instance to accept TCP too (tests pass dicts)."""
    return "tcp" in (options.get("transport") or ())


class PbxOptions(usage.Options):
    """The registration options (see the module docstring)."""

    optParameters = [
        ["register", None, None,
         "HOST:PORT of a PBX on 127.0.0.0/8 that every instance registers to (unless its "
         "sipInstance node names its own pbxHost); passwords from TWSIP_PASSWORD_<DN> or "
         "TWSIP_PASSWORD."],
        ["register-transport", None, "UDP",
         "UDP or TCP (one connection per instance) to the --register PBX.", _transport],
        ["auth-user", None, None,
         "Digest username for --register [default: each instance's DN]."],
        ["register-interval", None, None,
         "Expires asked for at --register, refreshed before it runs out.", _interval],
        # Not only for a PBX, but a transport option as --register-transport is: here.
        ["transport", None, ("udp",),
         "udp,tcp: each instance also accepts TCP on its port number (SIPp -t t1).",
         _listen_transports],
    ]

    def check_pbx(self) -> None:
        """Turn --register into `PbxSettings` (self["pbx"]), or a usage error."""
        value = self["register"]
        self["pbx"] = None
        if value is None:
            for name in ("auth-user", "register-interval"):
                if self[name] is not None:
                    raise usage.UsageError(f"--{name} goes with --register HOST:PORT")
            return
        try:
            host, port = parse_pbx(value)
        except ValueError as exc:
            raise usage.UsageError(f"--register {exc}") from None
        self["pbx"] = PbxSettings(host, port, self["register-transport"],
                                  self["auth-user"], self["register-interval"])


def pbx_settings(options: Mapping[str, Any]) -> PbxSettings | None:
    """The settings of parsed options (tests pass plain dicts)."""
    return options.get("pbx")


def with_pbx(configs: Iterable[SipInstanceConfig],
             pbx: PbxSettings | None) -> list[SipInstanceConfig]:
    """The configs to create: those without a pbxHost of their own get `pbx`'s (and
    register); a node's own PBX, and every config when `pbx` is None, stay as they are."""
    if pbx is None:
        return list(configs)
    return [config if config.pbx_host else dataclasses.replace(
        config, register=True, pbx_host=pbx.host, pbx_port=pbx.port,
        pbx_transport=pbx.transport, auth_user=config.auth_user or pbx.auth_user,
        register_interval_seconds=pbx.interval or config.register_interval_seconds)
        for config in configs]
