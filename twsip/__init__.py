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
    "SipInstance": "instance",
    "ClientSession": "dialog",
    "ServerSession": "dialog",
    "CallFailed": "dialog",
    "InstanceManager": "manager",
    "ManagedInstance": "manager",
    "PortAllocationError": "manager",
    "InstanceCreationError": "manager",
    "SipParseError": "message",
    "parse": "message",
    "Request": "message",
    "Response": "message",
    "TimerSettings": "transaction",
    "SipInstanceConfig": "scenario",
    "InstanceChain": "scenario",
    "ExecutionGraph": "scenario",
    "ScenarioError": "scenario",
    "parse_scenario": "scenario",
    "load_scenario": "scenario",
    "Engine": "engine",
    "ScenarioResult": "engine",
    "EventStream": "events",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ does it
    from .dialog import CallFailed, ClientSession, ServerSession
    from .instance import SipInstance
    from .manager import (
        InstanceCreationError,
        InstanceManager,
        ManagedInstance,
        PortAllocationError,
    )
    from .message import Request, Response, SipParseError, parse
    from .scenario import (
        ExecutionGraph,
        InstanceChain,
        ScenarioError,
        SipInstanceConfig,
        load_scenario,
        parse_scenario,
    )
    from .transaction import TimerSettings
    from .engine import Engine, ScenarioResult
    from .events import EventStream


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'twsip' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next lookup is a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
