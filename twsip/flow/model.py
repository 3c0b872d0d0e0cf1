"""Flow JSON of the visual scenario builder -> an ExecutionGraph the engine can run.

Pure data: no Twisted, and no I/O except the single read in `load_scenario`, so the
engine, the CLI and the tests all see the same verdict on a file.  Every mistake is one
`ScenarioError` that names the node and the field, because the person fixing it is
looking at a canvas of boxes (or at a JSON file) and needs to know which box to open.
Checking everything up front means the engine never meets a half-valid flow mid-call.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NoReturn

from twsip.config import KNOWN_CODECS, SipInstanceConfig
from twsip.lexical import wire_number

__all__ = [
    "KNOWN_COMMANDS",
    "KNOWN_EVENTS",
    "ExecutionGraph",
    "FlowWarning",
    "InstanceChain",
    "ScenarioError",
    "ScenarioNode",
    "graph_for_instances",
    "load_scenario",
    "parse_scenario",
]

KNOWN_COMMANDS = (
    "MakeCall", "Answer", "Release", "PlayAudio", "SendDTMF",
    "Hold", "Retrieve", "BlindTransfer", "MuteTransfer",
)
KNOWN_EVENTS = (
    "INCOMING", "DISCONNECTED", "RINGING", "TIMEOUT",
    "DTMFReceived", "HELD", "RETRIEVED", "TRANSFERRED",
)
# Every node of the builder's language parses, so that a flow is judged once; which of
# them the engine can run is its node registry's business (twsip.flow.registry).

DEFAULT_CALL_ID = "call-1"
DEFAULT_TIMEOUT_MS = 10000

_NODE_TYPES = ("sipInstance", "command", "event")
# String fields of flow nodes beyond the ones with a dedicated attribute; checked for
# type so that a wrong value fails here rather than deep inside a call.
_COMMAND_STR_FIELDS = ("filePath", "digits", "targetUser", "targetHost",
                       "primaryCallId", "consultCallId")
_EVENT_STR_FIELDS = ("expectedDigit",)
# Fields that hold digits or a user part: a whole number written there is taken as its text.
_NUMBER_LIKE = frozenset({"dn", "label", "targetUri", "number", "digits", "expectedDigit",
                          "targetUser"})


class ScenarioError(ValueError):
    """A flow the engine cannot run, pinned to what to fix.

    `node` and `field` are for tools (the builder can highlight the box); `str()` is one
    sentence for a person.  `line`/`column` are set only for invalid JSON.
    """

    def __init__(
        self,
        reason: str,
        node: str | None = None,
        field: str | None = None,
        label: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.reason = reason
        self.node = node
        self.field = field
        self.label = label
        self.line = line
        self.column = column
        where = []
        if node is not None:
            where.append(f"node {node!r}" + (f" ({label})" if label else ""))
        if field is not None:
            where.append(field)
        super().__init__(": ".join([*where, reason]))

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep node/field across pickling (e.g. a worker process reporting back).
        return (type(self), (self.reason, self.node, self.field, self.label,
                             self.line, self.column))


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True)
class FlowWarning:
    """Something in a flow that twsip runs anyway, but not quite as written.

    The builder saves flows that a strict reader would refuse (``register: true`` with no
    PBX, codecs twsip does not have, nodes left unconnected on the canvas). They run, and
    each such liberty is said once, pinned like a `ScenarioError` to the node and field.
    """

    reason: str
    node: str | None = None
    field: str | None = None
    label: str | None = None

    def __str__(self) -> str:
        where = []
        if self.node is not None:
            where.append(f"node {self.node!r}" + (f" ({self.label})" if self.label else ""))
        if self.field is not None:
            where.append(self.field)
        return ": ".join([*where, self.reason])


@dataclass(frozen=True)
class ScenarioNode:
    id: str
    kind: str
    name: str
    instance_id: str
    label: str
    call_id: str = DEFAULT_CALL_ID
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    target_uri: str | None = None
    # For INCOMING: the DN waited on, already defaulted to the node's own instance DN.
    number: str | None = None
    # The raw, read-only data for the less common fields (digits, filePath, ...).
    data: Mapping[str, Any] = dataclasses.field(default_factory=_empty, hash=False, repr=False)
    success: str | None = None
    failure: str | None = None


@dataclass(frozen=True)
class InstanceChain:
    config: SipInstanceConfig
    start_nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExecutionGraph:
    instances: tuple[InstanceChain, ...]
    nodes: Mapping[str, ScenarioNode] = dataclasses.field(default_factory=_empty, hash=False)
    # What the file asks for that runs differently than written, in file order.
    warnings: tuple[FlowWarning, ...] = ()
    # The flow file's folder: relative paths in it (PlayAudio's filePath) start there.
    base_dir: str | None = None

    def resolve_path(self, path: str) -> str:
        """`path` as the flow means it: relative to the flow file, not to the cwd."""
        if self.base_dir is None or os.path.isabs(path):
            return path
        return os.path.join(self.base_dir, path)

    @property
    def configs(self) -> list[SipInstanceConfig]:
        """The instances to create for this flow, in file order (for the manager)."""
        return [chain.config for chain in self.instances]

    def instance_by_dn(self, dn: str) -> SipInstanceConfig | None:
        for chain in self.instances:
            if chain.config.dn == dn:
                return chain.config
        return None


def parse_scenario(text: str | bytes) -> ExecutionGraph:
    """Validate a whole flow file and resolve it into per-instance chains.

    Raises ScenarioError for the first problem found; never anything else for bad input.
    """
    return _Parser(_decode_json(text)).graph()


def load_scenario(path: str | os.PathLike[str]) -> ExecutionGraph:
    """Read and parse a flow file; an unreadable file is a ScenarioError like any other."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise ScenarioError(
            f"cannot read scenario file {os.fspath(path)!r}: {e.strerror or e}") from None
    graph = parse_scenario(text)
    base_dir = os.path.dirname(os.path.abspath(os.fspath(path)))
    return dataclasses.replace(graph, base_dir=base_dir)


def graph_for_instances(count: int, first_dn: int = 100) -> ExecutionGraph:
    """A flow-less graph of `count` plain phones for `twistd sipinstances --instances N`.

    DNs go up in hundreds from first_dn (100, 200, 300, ...) so they read like extensions;
    register is off because local mode has no registrar.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"the number of instances must be a positive integer, not {count!r}")
    if isinstance(first_dn, bool) or not isinstance(first_dn, int) or first_dn < 0:
        raise ValueError(f"the first DN must be a non-negative integer, not {first_dn!r}")
    chains = []
    for k in range(count):
        dn = str(first_dn + 100 * k)
        config = SipInstanceConfig(id=f"instance-{dn}", label=dn, dn=dn, register=False)
        chains.append(InstanceChain(config))
    return ExecutionGraph(tuple(chains))


def _decode_json(text: str | bytes) -> Any:
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise ScenarioError(
                f"the file is not UTF-8 text (bad byte at offset {e.start})") from None
    elif not isinstance(text, str):
        raise TypeError(f"parse_scenario() wants str or bytes, not {type(text).__name__}")
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ScenarioError(f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}",
                            line=e.lineno, column=e.colno) from None
    except (ValueError, RecursionError) as e:  # e.g. an integer of more than 4300 digits
        raise ScenarioError(f"invalid JSON: {e or 'nested too deeply'}") from None


def _show(value: Any) -> str:
    """A wrong value as the user wrote it (true/null as in JSON, strings quoted like ids)."""
    shown = repr(value) if isinstance(value, str) else json.dumps(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


class _FieldReader:
    """Reads one field of a node's data the way the builder writes it, or fails naming the
    node (by its label, once known) and the field."""

    def __init__(self) -> None:
        self.labels: dict[str, str | None] = {}
        self.warnings: list[FlowWarning] = []

    def fail(self, node: str | None, field: str | None, reason: str) -> NoReturn:
        raise ScenarioError(reason, node, field, self.labels.get(node) if node else None)

    def warn(self, node: str | None, field: str | None, reason: str) -> None:
        self.warnings.append(
            FlowWarning(reason, node, field, self.labels.get(node) if node else None))

    def opt_str(self, nid: str, data: dict[str, Any], key: str) -> str | None:
        """A string field; absent, null and blank all mean "not given", as the builder
        leaves an emptied input as "" rather than dropping it."""
        value = data.get(key)
        if value is None:
            return None
        if key in _NUMBER_LIKE and isinstance(value, int) and not isinstance(value, bool) \
                and value >= 0:
            return str(value)  # "dn": 100, "digits": 123: numbers typed into a text box
        if not isinstance(value, str):
            self.fail(nid, f"data.{key}", f"{key} must be a string, not {_show(value)}")
        return value.strip() or None

    def opt_int(self, nid: str, data: dict[str, Any], key: str,
                low: int, high: int | None = None) -> int | None:
        value = data.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        number = value
        if isinstance(value, str) and wire_number(value.strip()) is not None:
            number = wire_number(value.strip())
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        if (isinstance(number, bool) or not isinstance(number, int) or number < low
                or (high is not None and number > high)):
            bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
            self.fail(nid, f"data.{key}", f"{key} must be a whole number {bounds}, "
                                          f"not {_show(value)}")
        return number

    def positive_ms(self, nid: str, data: dict[str, Any], key: str, default: int) -> int:
        """Milliseconds as the builder writes them: a number or a numeric string, never a bool."""
        value = data.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            return default
        if isinstance(value, int) and not isinstance(value, bool):
            if value > 0:
                return value
            number: float = math.nan
        elif isinstance(value, float):
            number = value
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = math.nan
        else:
            number = math.nan
        if not (number > 0 and math.isfinite(number)):
            self.fail(nid, f"data.{key}",
                      f"{key} must be a positive number of milliseconds, not {_show(value)}")
        return math.ceil(number)


class _InstanceReader(_FieldReader):
    """Reads sipInstance nodes: the builder's defaults (register, codecs) taken with a
    warning where local mode runs them differently."""

    def instance(self, nid: str, data: dict[str, Any]) -> SipInstanceConfig:
        dn = self.opt_str(nid, data, "dn") if not isinstance(data.get("dn"), bool) else None
        if dn is None:
            self.fail(nid, "data.dn", f"dn must be a non-empty string such as \"100\", "
                                      f"not {_show(data.get('dn'))}")
        register = data.get("register", True)
        if register is None:
            register = True
        if not isinstance(register, bool):
            self.fail(nid, "data.register",
                      f"register must be true or false, not {_show(register)}")
        pbx_host = self.opt_str(nid, data, "pbxHost")
        config = SipInstanceConfig(
            id=nid,
            label=self.opt_str(nid, data, "label") or dn,
            dn=dn,
            mode=self.opt_str(nid, data, "mode") or "DN",
            register=register,
            color=self.opt_str(nid, data, "color"),
            codecs=self.codecs(nid, data),
            pbx_host=pbx_host,
            pbx_port=self.opt_int(nid, data, "pbxPort", 1, 65535),
            pbx_transport=self.opt_str(nid, data, "pbxTransport"),
            register_interval_seconds=self.opt_int(nid, data, "registerIntervalSeconds", 1),
            auth_user=self.opt_str(nid, data, "authUser"),
            auth_password=self.password(nid, data),
        )
        if register and pbx_host is None:
            # The builder sets register on every new instance and leaves the PBX optional:
            # with nothing to register to, the instance is reached through the DN table.
            how = " (the default)" if data.get("register") is None else ""
            self.warn(nid, "data.register",
                      f"register is true{how} but there is no pbxHost, so there is nothing to "
                      f"register to: DN {dn} runs unregistered, reachable by its DN")
            config = dataclasses.replace(config, register=False)
        return config

    def password(self, nid: str, data: dict[str, Any]) -> str | None:
        """``authPassword`` exactly as written (spaces count in a password); the value is
        never echoed in an error, since it is a secret even when it is malformed."""
        value = data.get("authPassword")
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            self.fail(nid, "data.authPassword", "authPassword must be a string")
        return value

    def codecs(self, nid: str, data: dict[str, Any]) -> tuple[str, ...]:
        codecs = data.get("codecs")
        if codecs is None:
            return KNOWN_CODECS
        if not isinstance(codecs, list) or not all(isinstance(c, str) for c in codecs):
            self.fail(nid, "data.codecs", f"codecs must be a list of strings such as "
                                          f"[\"PCMU\", \"PCMA\"], not {_show(codecs)}")
        # Encoding names are case-insensitive in SDP (RFC 4566). telephone-event is always
        # offered, so naming it changes nothing; an empty list means the default.
        names = [c.strip().upper() for c in codecs]
        kept = []
        for name, given in zip(names, codecs):
            if name in KNOWN_CODECS:
                kept.append(name)
            elif name != "TELEPHONE-EVENT":
                self.warn(nid, "data.codecs", f"codec {given!r} is not supported (twsip has "
                                              f"{', '.join(KNOWN_CODECS)}): left out")
        if not codecs:
            return KNOWN_CODECS
        if not kept:
            self.fail(nid, "data.codecs",
                      f"none of the codecs {', '.join(map(repr, codecs))} is supported; list "
                      f"at least one of {', '.join(KNOWN_CODECS)}")
        return tuple(dict.fromkeys(kept))

    def check_unique_dns(self, instances: dict[str, SipInstanceConfig]) -> None:
        owner: dict[str, str] = {}
        for nid, config in instances.items():
            if config.dn in owner:
                first = owner[config.dn]
                self.fail(nid, "data.dn", f"DN {config.dn!r} is already used by node {first!r} "
                                          f"({instances[first].label}); DNs must be unique")
            owner[config.dn] = nid


class _Parser(_InstanceReader):
    """One parse: the checks run in passes, each relying on the ones before."""

    def __init__(self, doc: Any) -> None:
        super().__init__()
        self.doc = doc

    def graph(self) -> ExecutionGraph:
        raw = self.collect_nodes()
        instances = {nid: self.instance(nid, data)
                     for nid, (ntype, data) in raw.items() if ntype == "sipInstance"}
        self.check_unique_dns(instances)
        fields = {nid: self.flow_node(nid, ntype, data, instances)
                  for nid, (ntype, data) in raw.items() if ntype != "sipInstance"}
        starts, branches = self.edges(raw, instances)
        order = self.topological_order(fields, branches)
        owners = self.resolve_instances(fields, order, starts, branches)
        dns = [config.dn for config in instances.values()]
        nodes = {}
        for nid, kw in fields.items():
            if nid not in owners:
                continue  # on the canvas, but connected to no instance: warned about
            kw["instance_id"] = owners[nid]
            if kw["name"] == "INCOMING":
                kw["number"] = kw["number"] or instances[owners[nid]].dn
                if kw["number"] not in dns:
                    self.fail(nid, "data.number",
                              f"INCOMING waits on DN {kw['number']!r}, but no sipInstance has "
                              f"that DN (DNs: {', '.join(dns)})")
            nodes[nid] = ScenarioNode(**kw, success=branches["success"].get(nid, (None,))[0],
                                      failure=branches["failure"].get(nid, (None,))[0])
        chains = tuple(InstanceChain(config, tuple(starts[iid]))
                       for iid, config in instances.items())
        self.warn_unreachable(nodes, chains)
        return ExecutionGraph(chains, MappingProxyType(nodes), tuple(self.warnings))

    def collect_nodes(self) -> dict[str, tuple[str, dict[str, Any]]]:
        if not isinstance(self.doc, dict):
            self.fail(None, None, "the file must hold a JSON object with \"nodes\" and \"edges\"")
        nodes = self.doc.get("nodes")
        if not isinstance(nodes, list):
            self.fail(None, "nodes", "the file needs a \"nodes\" list")
        raw: dict[str, tuple[str, dict[str, Any]]] = {}
        for i, node in enumerate(nodes):
            if not isinstance(node, dict):
                self.fail(None, f"nodes[{i}]", f"a node must be an object, not {_show(node)}")
            nid = node.get("id")
            if not isinstance(nid, str) or not nid:
                self.fail(None, f"nodes[{i}].id", "a node needs a non-empty string id")
            if nid in raw:
                self.fail(nid, "id", f"nodes[{i}] reuses the id of an earlier node")
            data = node.get("data")
            if data is None:
                data = {}
            if not isinstance(data, dict):
                self.fail(nid, "data", f"data must be an object, not {_show(data)}")
            self.labels[nid] = next((data[k] for k in ("label", "command", "event", "dn")
                                     if isinstance(data.get(k), str) and data[k].strip()), None)
            ntype = node.get("type")
            if not isinstance(ntype, str) or ntype not in _NODE_TYPES:
                self.fail(nid, "type", f"unknown node type {_show(ntype)}; "
                                       f"a node is a sipInstance, a command or an event")
            raw[nid] = (ntype, data)
        return raw

    def flow_node(self, nid: str, ntype: str, data: dict[str, Any],
                  instances: dict[str, SipInstanceConfig]) -> dict[str, Any]:
        """The ScenarioNode fields known before edges are read (instance_id may be None)."""
        known = KNOWN_COMMANDS if ntype == "command" else KNOWN_EVENTS
        name = data.get(ntype)
        if not isinstance(name, str) or name not in known:
            self.fail(nid, f"data.{ntype}", f"unknown {ntype} {_show(name)}; "
                                            f"known {ntype}s: {', '.join(known)}")
        instance_id = self.opt_str(nid, data, "sipInstanceId")
        if instance_id is not None and instance_id not in instances:
            self.fail(nid, "data.sipInstanceId",
                      f"{instance_id!r} names no sipInstance node in this file")
        for key in _COMMAND_STR_FIELDS if ntype == "command" else _EVENT_STR_FIELDS:
            self.opt_str(nid, data, key)
        if "intervalMs" in data:
            self.positive_ms(nid, data, "intervalMs", 100)
        target_uri = self.opt_str(nid, data, "targetUri") if ntype == "command" else None
        if name == "MakeCall" and target_uri is None:
            self.fail(nid, "data.targetUri", "MakeCall needs a target (a DN or a sip: URI)")
        return dict(
            id=nid,
            kind=ntype,
            name=name,
            instance_id=instance_id,
            label=self.opt_str(nid, data, "label") or name,
            call_id=self.opt_str(nid, data, "callId") or DEFAULT_CALL_ID,
            timeout_ms=self.positive_ms(nid, data, "timeout", DEFAULT_TIMEOUT_MS),
            target_uri=target_uri,
            number=self.opt_str(nid, data, "number") if ntype == "event" else None,
            data=MappingProxyType(dict(data)),
        )

    def edges(self, raw: dict[str, tuple[str, dict[str, Any]]],
              instances: dict[str, SipInstanceConfig],
              ) -> tuple[dict[str, list[str]], dict[str, dict[str, tuple[str, int]]]]:
        """Start nodes per instance, and per branch kind: source -> (target, edge index)."""
        edges = self.doc.get("edges")
        if edges is None:
            edges = []
        if not isinstance(edges, list):
            self.fail(None, "edges", "\"edges\" must be a list")
        starts: dict[str, list[str]] = {iid: [] for iid in instances}
        branches: dict[str, dict[str, tuple[str, int]]] = {"success": {}, "failure": {}}
        for i, edge in enumerate(edges):
            where = f"edges[{i}]"
            if not isinstance(edge, dict):
                self.fail(None, where, f"an edge must be an object, not {_show(edge)}")
            name = edge["id"] if isinstance(edge.get("id"), str) else where
            ends = []
            for end in ("source", "target"):
                nid = edge.get(end)
                if not isinstance(nid, str) or not nid:
                    self.fail(None, f"{where}.{end}", f"edge {name!r} needs a node id as {end}")
                if nid not in raw:
                    self.fail(nid, f"{where}.{end}",
                              f"edge {name!r} points at this node, which is not in the file")
                ends.append(nid)
            source, target = ends
            if target in instances:
                self.fail(target, f"{where}.target", f"edge {name!r} ends at a sipInstance "
                                                     f"node; instances only start chains")
            if source in instances:
                if target not in starts[source]:
                    starts[source].append(target)
                continue
            data = edge.get("data")
            failure = edge.get("sourceHandle") == "failure" or (
                isinstance(data, dict) and data.get("branchType") == "failure")
            kind = "failure" if failure else "success"
            table = branches[kind]
            if source in table:
                self.fail(source, where,
                          f"edge {name!r} is a second {kind} branch (the first goes to node "
                          f"{table[source][0]!r}); a node has at most one {kind} branch")
            table[source] = (target, i)
        return starts, branches

    def topological_order(self, fields: dict[str, Any],
                          branches: dict[str, dict[str, tuple[str, int]]]) -> list[str]:
        """Kahn's order, so inheritance flows downstream; what it cannot place is in a cycle
        or behind one."""
        successors = {nid: [t[0] for t in (branches["success"].get(nid),
                                           branches["failure"].get(nid)) if t]
                      for nid in fields}
        predecessors: dict[str, list[str]] = {nid: [] for nid in fields}
        for nid, nexts in successors.items():
            for nxt in nexts:
                predecessors[nxt].append(nid)
        waiting = {nid: len(predecessors[nid]) for nid in fields}
        ready = deque(nid for nid in fields if not waiting[nid])
        order = []
        while ready:
            nid = ready.popleft()
            order.append(nid)
            for nxt in successors[nid]:
                waiting[nxt] -= 1
                if not waiting[nxt]:
                    ready.append(nxt)
        if len(order) < len(fields):
            self.report_cycle([nid for nid in fields if waiting[nid]], predecessors, branches)
        return order

    def report_cycle(self, stuck: list[str], predecessors: dict[str, list[str]],
                     branches: dict[str, dict[str, tuple[str, int]]]) -> NoReturn:
        # Every stuck node has a stuck predecessor, so walking back must come round.
        stuck_set = set(stuck)
        seen: list[str] = []
        nid = stuck[0]
        while nid not in seen:
            seen.append(nid)
            nid = next(p for p in predecessors[nid] if p in stuck_set)
        loop = seen[seen.index(nid):][::-1]
        # Name the loop from its first node in file order, so the report is stable.
        first = min(loop, key=stuck.index)
        loop = loop[loop.index(first):] + loop[:loop.index(first)]
        following = loop[1] if len(loop) > 1 else first
        index = next(t[1] for t in (branches["success"].get(first),
                                    branches["failure"].get(first)) if t and t[0] == following)
        path = " -> ".join(repr(n) for n in [*loop, first])
        self.fail(first, f"edges[{index}]",
                  f"the edges form a cycle ({path}); a flow must not loop")

    def warn_unreachable(self, nodes: Mapping[str, ScenarioNode],
                         chains: tuple[InstanceChain, ...]) -> None:
        """A node with its sipInstanceId but below no chain is kept (the record shows it
        pending) and said once: it never runs."""
        seen: set[str] = set()
        todo = [nid for chain in chains for nid in chain.start_nodes]
        while todo:
            nid = todo.pop()
            if nid not in seen:
                seen.add(nid)
                todo.extend(n for n in (nodes[nid].success, nodes[nid].failure) if n)
        for nid in nodes:
            if nid not in seen:
                self.warn(nid, "data.sipInstanceId", "not connected below a sipInstance node, "
                                                     "so it never runs")

    def resolve_instances(self, fields: dict[str, Any], order: list[str],
                          starts: dict[str, list[str]],
                          branches: dict[str, dict[str, tuple[str, int]]]) -> dict[str, str]:
        """Give each node without sipInstanceId the instance of whatever leads to it."""
        inherited: dict[str, dict[str, None]] = {nid: {} for nid in fields}
        for iid, targets in starts.items():
            for target in targets:
                inherited[target][iid] = None
        owners: dict[str, str] = {}
        for nid in order:
            owner = fields[nid]["instance_id"]
            if owner is None:
                candidates = list(inherited[nid])
                if not candidates:
                    # Only other such nodes lead here: a sketch left on the canvas.
                    self.warn(nid, "data.sipInstanceId",
                              "connected below no sipInstance node and without "
                              "sipInstanceId, so no instance runs it: left out")
                    continue
                if len(candidates) > 1:
                    names = ", ".join(f"{c!r} ({self.labels.get(c) or c})" for c in candidates)
                    self.fail(nid, "data.sipInstanceId",
                              f"this node is reached from the chains of several instances "
                              f"({names}); set sipInstanceId to choose one")
                owner = candidates[0]
            owners[nid] = owner
            for table in branches.values():
                if nid in table:
                    inherited[table[nid][0]][owner] = None
        return owners
