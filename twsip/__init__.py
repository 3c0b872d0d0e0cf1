"""twsip: many RFC 3261 SIP user agents on 127.0.0.1 in one Twisted reactor.

The public names below are loaded on first use (PEP 562), so ``import twsip`` stays cheap
and never imports the reactor: the twistd plugin imports this package before twistd has
installed the reactor it was asked for (``twistd -r asyncio``).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the submodule that defines it
_EXPORTS: dict[str, str] = {
    "SipInstance": "sip.instance",
    "ClientSession": "sip.dialog",
    "ServerSession": "sip.dialog",
    "CallFailed": "sip.dialog",
    "InstanceManager": "manager",
    "ManagedInstance": "manager",
    "PortAllocationError": "manager",
    "InstanceCreationError": "manager",
    "SipParseError": "sip.message",
    "parse": "sip.message",
    "Request": "sip.message",
    "Response": "sip.message",
    "TimerSettings": "sip.transaction",
    "SipInstanceConfig": "config",
    "InstanceChain": "flow.model",
    "ExecutionGraph": "flow.model",
    "ScenarioError": "flow.model",
    "parse_scenario": "flow.model",
    "load_scenario": "flow.model",
    "Engine": "flow.engine",
    "ScenarioResult": "flow.result",
    "EventStream": "flow.events",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ does it
    from .config import SipInstanceConfig
    from .sip.dialog import CallFailed, ClientSession, ServerSession
    from .sip.instance import SipInstance
    from .manager import (
        InstanceCreationError,
        InstanceManager,
        ManagedInstance,
        PortAllocationError,
    )
    from .sip.message import Request, Response, SipParseError, parse
    from .flow.model import (
        ExecutionGraph,
        InstanceChain,
        ScenarioError,
        load_scenario,
        parse_scenario,
    )
    from .sip.transaction import TimerSettings
    from .flow.engine import Engine
    from .flow.result import ScenarioResult
    from .flow.events import EventStream


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'twsip' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next lookup is a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
