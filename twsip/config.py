"""What an instance is, as plain data: the manager creates instances from it, and the flow
model converts a flow file's sipInstance nodes into it. It lives below both so that neither
depends on the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["KNOWN_CODECS", "SipInstanceConfig"]

KNOWN_CODECS = ("PCMU", "PCMA")


@dataclass(frozen=True)
class SipInstanceConfig:
    """One SIP instance: its id, its DN, the codecs it offers, and (for registration)
    its PBX."""

    id: str
    label: str
    dn: str
    mode: str = "DN"
    register: bool = True
    color: str | None = None
    codecs: tuple[str, ...] = KNOWN_CODECS
    pbx_host: str | None = None
    pbx_port: int | None = None
    pbx_transport: str | None = None
    register_interval_seconds: int | None = None
    # Digest credentials for the PBX; the password is kept out of every repr (and so out
    # of logs and reports). It usually comes from the environment instead (the manager).
    auth_user: str | None = None
    auth_password: str | None = field(default=None, repr=False)
