"""InstanceManager: the ports, the instances on them, the DN table, and cleaning all up.

Ports are taken by binding, never by probing: `allocate_port` calls `listenUDP` on the next
port and moves on by +2 on `CannotListenError`, keeping the port it got. Creation is all or
nothing, and `cleanup()` leaves no bound port and no twsip timer behind.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, cast

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python.failure import Failure

from twsip.config import SipInstanceConfig
from twsip.interfaces import ListeningPort, UDPReactor
from twsip.quiet_udp import listen_udp
from twsip.sip.digest import ChallengeAnswerer, Credentials
from twsip.sip.dialog import ClientSession
from twsip.sip.instance import SipInstance
from twsip.sip.limits import DEFAULT_MAX_CALL_SECONDS, DEFAULT_MAX_CALLS
from twsip.sip.overload import OverloadSettings
from twsip.sip.registration import DEFAULT_EXPIRES, Registration, RegistrationFailed
from twsip.sip.stream import StreamRouter
from twsip.sip.transaction import TimerSettings
from twsip.sip.uri import Address, is_loopback, loopback_address

__all__ = ["InstanceManager", "ManagedInstance", "PortAllocationError", "UnknownInstance",
           "InstanceCreationError", "LOCAL_HOST", "RegistrationFailed", "credentials_for",
           "pbx_address"]

log = Logger(namespace="twsip.manager")

LOCAL_HOST = "127.0.0.1"


def _whole_datagrams(listening: ListeningPort) -> ListeningPort:
    """Read datagrams up to the UDP maximum: Twisted's default of 8192 bytes silently
    truncates larger SIP messages, which would then be misjudged or cut short."""
    listening.maxPacketSize = 65535
    return listening


def pbx_address(config: SipInstanceConfig) -> Address:
    """Where an instance registers: its pbxHost (``localhost`` is 127.0.0.1, mapped here
    rather than looked up, since local mode never resolves a name) and pbxPort (5060)."""
    host = config.pbx_host or ""
    if host.lower() == "localhost":
        host = LOCAL_HOST
    if not is_loopback(host):
        raise ValueError(f"pbxHost {config.pbx_host!r} is not a loopback address")
    return host, config.pbx_port or 5060


def _env_name(dn: str) -> str:
    return "TWSIP_PASSWORD_" + re.sub(r"[^A-Za-z0-9]", "_", dn).upper()


def credentials_for(config: SipInstanceConfig,
                    environ: Mapping[str, str] | None = None) -> Credentials | None:
    """The instance's digest credentials: username `authUser` (else the DN); password
    from ``TWSIP_PASSWORD_<DN>``, else ``TWSIP_PASSWORD``, else the flow's `authPassword`
    (throwaway test PBXs only: a flow file gets shared). None when there is no password."""
    env = os.environ if environ is None else environ
    password = env.get(_env_name(config.dn)) or env.get("TWSIP_PASSWORD") or \
        config.auth_password
    if not password:
        return None
    return Credentials(config.auth_user or config.dn, password)


class PortAllocationError(RuntimeError):
    """No port could be bound; `ports` lists every one tried."""

    def __init__(self, host: str, ports: list[int], last_error: Exception | None) -> None:
        tried = ", ".join(str(p) for p in ports)
        super().__init__(f"no free UDP port on {host}: tried {tried} ({last_error})")
        self.host = host
        self.ports = ports


class InstanceCreationError(RuntimeError):
    """`create_instances` failed for one instance; none of the batch was kept."""

    def __init__(self, instance_id: str, dn: str, cause: Exception) -> None:
        super().__init__(f"cannot create instance {instance_id!r} (DN {dn}): {cause}")
        self.instance_id = instance_id
        self.cause = cause


class UnknownInstance(LookupError):
    """An instance id or DN that the manager does not hold."""


@dataclass
class ManagedInstance:
    config: SipInstanceConfig
    ua: SipInstance
    port: int
    listening_port: ListeningPort

    @property
    def incoming(self):  # -> DeferredQueue[ServerSession]
        return self.ua.incoming


class InstanceManager:
    """Creates SIP instances on 127.0.0.1 at base_port, base_port+2, ... and tears them down."""

    def __init__(self, base_port: int = 5060, max_retries: int = 10, host: str = LOCAL_HOST,
                 reactor: UDPReactor | None = None, timers: TimerSettings | None = None,
                 log_messages: bool = False, queue_size: int = 64,
                 trace_messages: bool = False, media: bool = True,
                 record_dir: str | None = None, register_timeout: float = 32.0,
                 max_calls: int = DEFAULT_MAX_CALLS,
                 max_call_seconds: float = DEFAULT_MAX_CALL_SECONDS,
                 overload: OverloadSettings | None = None,
                 listen_tcp: bool = False) -> None:
        if not is_loopback(host):
            raise ValueError(f"twsip runs in local mode only: host must be in 127.0.0.0/8, "
                             f"not {host!r}")
        if reactor is None:
            from twisted.internet import reactor as global_reactor
            reactor = global_reactor  # type: ignore[assignment]
        self.reactor: UDPReactor = reactor  # type: ignore[assignment]
        self.host = host
        self.base_port = base_port
        self.next_port = base_port
        self.max_retries = max_retries
        self.timers = timers
        self.log_messages = log_messages
        self.trace_messages = trace_messages
        self.queue_size = queue_size
        # every call gets an RTP endpoint (off: signalling only, the SDP names a dead port)
        self.media = media
        self.record_dir = record_dir  # one WAV per call leg of what it received
        self.max_calls = max_calls  # per instance; beyond it a new INVITE gets 503
        self.max_call_seconds = max_call_seconds  # how long an auto-answered call may last
        self.overload = overload  # when instances shed new calls 503 (None: the defaults)
        self.instances: dict[str, ManagedInstance] = {}
        self._by_dn: dict[str, ManagedInstance] = {}
        # instance id -> its binding at its PBX, for the instances that registered
        self.registrations: dict[str, Registration] = {}
        self.register_timeout = register_timeout  # a PBX that never answers fails then
        # instance id -> its TCP connections (pbxTransport TCP), closed at cleanup
        self.streams: dict[str, StreamRouter] = {}
        # each instance also accepts TCP on its port number (--transport udp,tcp)
        self.listen_tcp = listen_tcp

    # -- ports -----------------------------------------------------------------------------
    def allocate_port(self, protocol: SipInstance) -> ListeningPort:
        """Bind `protocol` at next_port, or +2, +4, ... (max_retries more tries).

        A base_port of 0 lets the system pick a free port each time (tests use it).
        """
        if self.base_port == 0:
            return _whole_datagrams(listen_udp(self.reactor, 0, protocol, self.host, 65535))
        tried: list[int] = []
        port = self.next_port
        last_error: Exception | None = None
        for _ in range(self.max_retries + 1):
            if port > 65535:
                break
            tried.append(port)
            try:
                listening = listen_udp(self.reactor, port, protocol, self.host, 65535)
            except CannotListenError as exc:
                last_error = exc
                port += 2
                continue
            self.next_port = port + 2
            if port != tried[0]:
                # A SIPp started first on 5060 silently pushes DN 100 away, and then calls
                # itself: say so once, with both ports.
                log.warn("DN {dn}: port {wanted} is taken, listening on {port} instead",
                         dn=getattr(protocol, "dn", "?"), wanted=tried[0], port=port)
            return _whole_datagrams(listening)
        raise PortAllocationError(self.host, tried, last_error)

    # -- instances -------------------------------------------------------------------------
    def create_instance(self, config: SipInstanceConfig) -> ManagedInstance:
        if config.id in self.instances:
            raise ValueError(f"instance {config.id!r} exists already")
        if config.dn in self._by_dn:
            raise ValueError(f"instance {config.id!r}: DN {config.dn} is already used by "
                             f"instance {self._by_dn[config.dn].config.id!r}")
        ua = SipInstance(config.dn, host=self.host, codecs=config.codecs,
                         reactor=self.reactor,  # type: ignore[arg-type]
                         timers=self.timers, queue_size=self.queue_size,
                         log_messages=self.log_messages,
                         trace_messages=self.trace_messages, media=self.media,
                         record_dir=self.record_dir, max_calls=self.max_calls,
                         overload=self.overload)
        ua.limits.max_call_seconds = self.max_call_seconds
        listening = self.allocate_port(ua)
        if self.listen_tcp:
            try:
                self.streams[config.id] = StreamRouter.install(ua)
                self.streams[config.id].listen(self.reactor)
            except Exception:
                self.streams.pop(config.id, None)
                listening.stopListening()
                ua.transactions.close()
                raise
        managed = ManagedInstance(config, ua, listening.getHost().port, listening)
        self.instances[config.id] = managed
        self._by_dn[config.dn] = managed
        log.info("instance {id} DN {dn} listening on {host}:{port}", id=config.id,
                 dn=config.dn, host=self.host, port=managed.port)
        return managed

    def create_instances(self, configs: Iterable[SipInstanceConfig]) -> list[ManagedInstance]:
        """One instance per config, in order; on any failure none of them stays."""
        configs = list(configs)
        seen: set[str] = set()
        for config in configs:
            if config.dn in seen:
                raise InstanceCreationError(config.id, config.dn,
                                            ValueError("the DN is used by two instances"))
            seen.add(config.dn)
        first_port = self.next_port
        created: list[ManagedInstance] = []
        for config in configs:
            try:
                created.append(self.create_instance(config))
            except Exception as exc:
                for managed in created:
                    self._forget(managed)
                    router = self.streams.pop(managed.config.id, None)
                    if router is not None:
                        router.close()
                    managed.listening_port.stopListening()
                    managed.ua.transactions.close()
                self.next_port = first_port
                raise InstanceCreationError(config.id, config.dn, exc) from exc
        return created

    def _forget(self, managed: ManagedInstance) -> None:
        self.instances.pop(managed.config.id, None)
        self._by_dn.pop(managed.config.dn, None)

    def start_serving(self, auto_answer: bool = False,
                      max_call_seconds: float | None = None) -> None:
        """From now on each instance queues new INVITEs (before, they get 480); with
        `auto_answer` it answers them itself and ends each after `max_call_seconds` (the
        manager's own, set at creation, when None; 0: never)."""
        for managed in self.instances.values():
            managed.ua.start_serving(auto_answer=auto_answer,
                                     max_call_seconds=max_call_seconds)

    def get_instance(self, instance_id: str) -> ManagedInstance:
        try:
            return self.instances[instance_id]
        except KeyError:
            known = ", ".join(sorted(self.instances)) or "none"
            raise UnknownInstance(f"no instance {instance_id!r} (known: {known})") from None

    def by_dn(self, dn: str) -> ManagedInstance:
        try:
            return self._by_dn[dn]
        except KeyError:
            known = ", ".join(sorted(self._by_dn)) or "none"
            raise UnknownInstance(f"no instance with DN {dn!r} (known: {known})") from None

    def resolve_target(self, dn_or_uri: str, caller: SipInstance | None = None) -> str:
        """A DN becomes ``sip:<dn>@127.0.0.1:<port>``, or ``sip:<dn>@<pbx>`` when the
        `caller` is registered (the PBX routes it); a sip: URI passes through."""
        target = dn_or_uri.strip()
        if target.lower().startswith(("sip:", "sips:")):
            return target
        registration = self.registration_of(caller) if caller is not None else None
        if registration is not None:
            host, port = registration.registrar
            return f"sip:{target}@{host}:{port}"
        managed = self.by_dn(target)
        return f"sip:{managed.config.dn}@{self.host}:{managed.port}"

    # -- registration (RFC 3261 §10) -------------------------------------------------------
    def registration_of(self, ua: SipInstance) -> Registration | None:
        for instance_id, registration in self.registrations.items():
            if registration.ua is ua:
                return registration
        return None

    async def register(self, managed_all: Iterable[ManagedInstance]) -> None:
        """Register every instance whose config asks for it (register true and a pbxHost),
        all at once; fails with the first `RegistrationFailed` in the given order once all
        have answered. The ones that did register stay so until `cleanup`."""
        started: list[tuple[ManagedInstance, Deferred[int]]] = []
        for managed in managed_all:
            config = managed.config
            if not config.register or not config.pbx_host:
                continue
            registration = Registration(
                managed.ua, pbx_address(config), pbx_address(config)[0],
                credentials=credentials_for(config),
                expires=config.register_interval_seconds or DEFAULT_EXPIRES,
                who=f"instance {config.id!r} (DN {config.dn})",
                timeout=self.register_timeout)
            self.registrations[config.id] = registration
            tcp = (config.pbx_transport or "UDP").upper() == "TCP"
            started.append((managed, self._over_tcp(managed, registration) if tcp
                            else registration.register()))
        results = await DeferredList([d for _, d in started], consumeErrors=True)
        for (managed, _), (ok, value) in zip(started, results):
            if ok:
                log.info("DN {dn} registered to {pbx} for {granted} s", dn=managed.config.dn,
                         pbx=self.registrations[managed.config.id].where, granted=value)
        for ok, value in results:
            if not ok:
                cast(Failure, value).raiseException()

    def _over_tcp(self, managed: ManagedInstance, registration: Registration
                  ) -> Deferred[int]:
        """Connect to the PBX over TCP (RFC 3261 §18), then register over the
        connection; a PBX that does not take the connection fails as 503."""
        router = self.streams[managed.config.id] = StreamRouter.install(managed.ua)
        d: Deferred[Any] = router.connect(registration.registrar, self.reactor,
                                          timeout=min(self.register_timeout, 5.0))

        def refused(failure: Failure) -> Failure:
            registration.last_status = 503
            return Failure(RegistrationFailed(registration.who, registration.where, 503,
                                              failure.getErrorMessage()))

        def register(_: object) -> Any:
            return registration.register()

        d.addCallbacks(register, refused)
        return cast("Deferred[int]", d)

    def dial(self, ua: SipInstance, target: str, timeout: float | None) -> ClientSession:
        """Start a call from `ua`: through its PBX when it is registered there and the
        target is the PBX's (From its AOR, a 401/407 answered with its credentials),
        else straight, as `SipInstance.dial` does."""
        registration = self.registration_of(ua)
        addr = loopback_address(target)
        if registration is None or addr != registration.registrar:
            return ua.dial(target, timeout)
        session = ClientSession(ua, target, addr, ua.new_call_id(), timeout,
                                from_uri=registration.aor)
        if registration.credentials is not None:
            session.challenges = ChallengeAnswerer(registration.credentials)
        ua.calls.add(session)  # until it ends: its end unregisters it (registry.remove)
        return session

    async def unregister_all(self) -> None:
        """``Expires: 0`` for every binding (each bounded by its grace), in parallel."""
        registrations = list(self.registrations.values())
        self.registrations.clear()
        if registrations:
            await DeferredList([r.unregister() for r in registrations], consumeErrors=True)

    # -- teardown ----------------------------------------------------------------------------
    def cleanup(self) -> Deferred[None]:
        """Hang up, stop every port, cancel every timer; fires when all ports are free.

        Never fails and never stops half-way: an instance whose cleanup or port fails is
        logged, and every other one is still cleaned up and closed."""
        managed_all = list(self.instances.values())
        self.instances.clear()
        self._by_dn.clear()
        self.next_port = self.base_port
        if not managed_all:
            return succeed(None)
        # Nothing stays registered: the bindings go first, while the ports are still open.
        unregistered: Deferred[Any] = Deferred.fromCoroutine(self.unregister_all())
        unregistered.addErrback(lambda f: log.failure("unregistering failed", f))

        def each(step: str, action: Any, managed: ManagedInstance) -> Deferred[Any]:
            d = maybeDeferred(action)
            d.addErrback(lambda f: log.failure("DN {dn}: {step} failed", f,
                                               dn=managed.config.dn, step=step))
            return d

        streams = list(self.streams.values())
        self.streams.clear()

        def stop_ports(_: object) -> Deferred[Any]:
            closing = [router.close() for router in streams]  # TCP connections too
            return DeferredList([*closing, *(
                each("closing its port", m.listening_port.stopListening, m)
                for m in managed_all)])

        def clean_instances(_: object) -> Deferred[Any]:
            return DeferredList([each("cleanup", m.ua.cleanup, m) for m in managed_all])

        d = unregistered.addCallback(clean_instances)
        d.addCallback(stop_ports)
        d.addCallback(lambda _: None)
        return d

    def reset(self) -> Deferred[None]:
        """Cleanup, then back to the state of a new manager."""
        return self.cleanup()
