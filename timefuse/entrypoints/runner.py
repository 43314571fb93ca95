"""Running a process: API, ingest consumer, dispatcher and maintenance, in any combination."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import socket
from collections.abc import Awaitable, Collection, Iterator

import structlog
import uvicorn
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp

from timefuse.adapters.sqlite import DispatchLockError, dispatch_lock, path_from_url
from timefuse.config import ApiSettings, ServerSettings, Settings
from timefuse.config.sections import redacted_url
from timefuse.entrypoints.api.health import DEGRADED, Health, health_app
from timefuse.entrypoints.api.routes import PREFIX
from timefuse.entrypoints.auth import is_loopback, load_key_ring
from timefuse.entrypoints.bootstrap import Timefuse, bootstrap
from timefuse.entrypoints.http_connections import (
    Connections,
    ServerLimits,
    connection_cap,
    count_closures,
)
from timefuse.entrypoints.http_protocol import bounded_protocol
from timefuse.plugins.http_settings import HttpSettings
from timefuse.ports.ingest import BufferUnavailable
from timefuse.ports.store import ReadsFromReplica, StoreError

log = structlog.get_logger("timefuse")

ALL_ROLES = frozenset({"api", "ingest", "dispatch", "maintenance"})


class StartupError(Exception):
    """The process can't start; the message says why, for the command line."""


class _Server(uvicorn.Server):
    # The process owns SIGTERM/SIGINT: the dispatcher must drain after the API stops, and
    # uvicorn's own handlers would re-raise the signal and kill the process before that.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it. Without it the server's loop, given this socket
    # rather than opening its own, leaves Nagle on: a response's body waits behind its
    # headers for the client's delayed ACK, ~40 ms per keep-alive request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


# Each part answers within this or counts as down: a probe must not hang on a dead database.
READINESS_PART_SECONDS = 2.0


async def readiness(tf: Timefuse, *, api: bool = False) -> dict[str, str]:
    """Each part's state: "ok", what is wrong, or "degraded: ..." for a part the process
    does without (see :data:`timefuse.entrypoints.api.health.DEGRADED`)."""
    store, buffer = await asyncio.gather(
        _probe(tf.store.ping(), StoreError), _probe(tf.buffer.ping(), BufferUnavailable)
    )
    if store != "ok" and tf.service.buffered and api:
        # An API process with Kafka still accepts submissions while the store is down: the
        # buffer exists for that. Pulled from a load balancer it would refuse them instead.
        store = f"{DEGRADED}: {store} (submissions are still accepted into Kafka; reads fail)"
    parts = {"store": store, "buffer": buffer}
    replica = tf.store.adapter.capabilities.replica
    if replica is not None:
        max_lag = tf.settings.store.read_max_lag_seconds
        parts["store_replica"] = await replica_readiness(replica, max_lag)
    return parts


async def replica_readiness(replica: ReadsFromReplica, max_lag: float) -> str:
    """``ok, N s behind ...`` (ready, with the lag shown), or why the replica is not usable."""
    try:
        lag = await asyncio.wait_for(replica.replica_lag(), READINESS_PART_SECONDS)
    except TimeoutError:
        return f"no answer within {READINESS_PART_SECONDS:g} s"
    except StoreError as exc:
        return str(exc) or "unreachable"
    if lag > max_lag:
        limit = f"TIMEFUSE_DATABASE_READ_MAX_LAG_SECONDS is {max_lag:g}"
        return f"{lag:.1f} s behind the primary ({limit})"
    return f"ok, {lag:.1f} s behind the primary"


async def _probe(ping: Awaitable[None], failure: type[Exception]) -> str:
    try:
        await asyncio.wait_for(ping, READINESS_PART_SECONDS)
    except TimeoutError:
        return f"no answer within {READINESS_PART_SECONDS:g} s"
    except failure as exc:
        return str(exc) or "unreachable"
    return "ok"


def _api_task(
    tf: Timefuse, sock: socket.socket, api: bool = True
) -> tuple[_Server, Awaitable[None]]:
    """The REST API, or with ``api=False`` only /health and /metrics (for ingest, dispatch)."""
    app: ASGIApp
    if api:
        # Here, not at the top: dispatch and ingest serve only the probes and /metrics.
        from timefuse.entrypoints.api.app import create_app
        from timefuse.entrypoints.api.refused import refused_records

        app = create_app(
            service=tf.service,
            metrics=tf.metrics,
            settings=tf.settings.api,
            http_settings=tf.plugins.section(HttpSettings),
            readiness=lambda: readiness(tf, api=True),
            admin=tf.admin,
            registry=tf.registry,
            refused=refused_records(tf.settings.kafka),
            schedules=tf.schedules,
        )
    else:
        app = metrics_app(tf, sock)
    server = _Server(server_config(app, tf.settings.server, tf.metrics.registry, lifespan=api))
    return server, server.serve(sockets=[sock])


def metrics_app(tf: Timefuse, sock: socket.socket) -> ASGIApp:
    """/metrics and the health probes of a process without the API, under the API's rules
    for keys. Without keys, a listener beyond loopback names no receiver: its /metrics
    leaves the per-destination series out (the API itself would refuse to listen there)."""
    settings = tf.settings.api
    keys = load_key_ring(settings)
    health = Health(tf.metrics, lambda: readiness(tf))
    if keys is None and not is_loopback(str(sock.getsockname()[0])):
        log.info(
            "no API keys: /metrics on this address shows no per-destination series",
            host=sock.getsockname()[0],
        )
        return health_app(health, PREFIX, keys=keys, metrics_auth=False, trusted=False)
    return health_app(health, PREFIX, keys=keys, metrics_auth=settings.metrics_auth)


def server_config(
    app: ASGIApp,
    settings: ServerSettings,
    registry: CollectorRegistry | None = None,
    *,
    lifespan: bool = False,
) -> uvicorn.Config:
    """uvicorn serving ``app`` with the listener's limits (see ``http_protocol``)."""
    limits = ServerLimits(
        max_connections=settings.max_connections,
        header_timeout=settings.header_timeout,
        max_header_bytes=settings.max_header_bytes,
        body_timeout=settings.body_timeout,
        keepalive_seconds=settings.keepalive_seconds,
    )
    cap = connection_cap(limits.max_connections)
    if cap < limits.max_connections:
        log.info(
            "fewer connections than TIMEFUSE_SERVER_MAX_CONNECTIONS: half the open-file limit",
            max_connections=cap,
        )
    connections = Connections(cap)
    if registry is not None:
        connections.closed = count_closures(registry, connections)
    return uvicorn.Config(
        app,
        http=bounded_protocol(limits, connections),
        ws="none",
        timeout_keep_alive=limits.keepalive_seconds,
        # log_config=None: uvicorn's records go through the handler configure_logging set up.
        log_config=None,
        log_level="warning",
        access_log=False,
        # The API's lifespan keeps the console's per-minute figures; the rest of the
        # process is opened and closed by run() itself.
        lifespan="on" if lifespan else "off",
        timeout_graceful_shutdown=5,
    )


async def run(
    settings: Settings,
    roles: Collection[str],
    host: str | None = None,
    port: int | None = None,
    *,
    insecure_no_auth: bool = False,
) -> None:
    """Run ``roles`` until SIGTERM or SIGINT, then stop gracefully."""
    tf = bootstrap(settings)
    log.info("delivery types loaded", types=_loaded_types(tf))
    if "ingest" in roles and tf.ingest is None:
        raise StartupError("the ingest role reads Kafka: set KAFKA_BOOTSTRAP_SERVERS")
    if "api" in roles:
        check_exposure(settings.api, host or settings.api.host, insecure_no_auth)
    sock = _listener(settings, roles, host, port)
    sole = contextlib.ExitStack()
    if "dispatch" in roles and settings.store.url.startswith("sqlite:"):
        try:
            sole.enter_context(dispatch_lock(path_from_url(settings.store.url)))
        except DispatchLockError as exc:
            if sock is not None:
                sock.close()
            raise StartupError(str(exc)) from None
    await tf.open()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server: _Server | None = None
    tasks: list[asyncio.Task[None]] = []
    # Heartbeats go on until every other role has stopped: a dispatcher that drains its
    # running attempts after the stop signal is alive, not a dead worker whose claims the
    # other processes' lease recovery should take back.
    beats_stop = asyncio.Event()
    beating: asyncio.Task[None] | None = None
    try:
        if sock is not None:
            server, serving = _api_task(tf, sock, api="api" in roles)
            tasks.append(asyncio.ensure_future(serving))
            address = sock.getsockname()
            log.info(
                "listening",
                host=address[0],
                port=address[1],
                store=redacted_url(tf.settings.store.url),
            )
        if "ingest" in roles and tf.ingest is not None:
            tasks.append(asyncio.create_task(tf.ingest.run(stop)))
        presence = tf.presence(roles)
        if "dispatch" in roles:
            # Heard of before it claims: a stale row of an earlier run under the same worker
            # id must not get this run's first claims taken back as a dead worker's.
            with contextlib.suppress(StoreError):
                await presence.beat()
            tasks.append(asyncio.create_task(tf.dispatcher.run(stop, presence=presence)))
        if "maintenance" in roles:
            tasks.append(asyncio.create_task(tf.maintenance.run(stop)))
        beating = asyncio.create_task(presence.run(beats_stop))
        tasks.append(beating)
        log.info("started", roles=sorted(roles), worker=tf.worker_id)
        await _until_stopped(stop, tasks)
    finally:
        log.info("stopping")
        stop.set()
        if server is not None:
            server.should_exit = True
        await asyncio.gather(
            *(task for task in tasks if task is not beating), return_exceptions=True
        )
        beats_stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await tf.close()
        if sock is not None:
            sock.close()
        sole.close()
        log.info("stopped")


def check_exposure(settings: ApiSettings, host: str, insecure_no_auth: bool) -> None:
    """Refuse to serve an API without keys beyond loopback, unless explicitly told to.

    Loads the keys file too, so a bad one stops the process before it listens.
    """
    keys = load_key_ring(settings)
    if keys is not None:
        log.info("API keys loaded", keys=len(keys), metrics_auth=settings.metrics_auth)
        return
    if is_loopback(host):
        log.info(
            "no API keys configured (TIMEFUSE_API_KEYS_FILE): the API trusts every caller, "
            "so it listens on loopback only",
            host=host,
        )
        return
    if not insecure_no_auth:
        raise StartupError(
            f"refusing to listen on {host!r} without API keys: anyone who can reach it could "
            "submit and cancel events. Set TIMEFUSE_API_KEYS_FILE (`timefuse keys new` makes "
            "a key), listen on 127.0.0.1, or pass --insecure-no-auth if something in front "
            "of timefuse authenticates callers"
        )
    log.warning(
        "no API keys configured and --insecure-no-auth given: anyone who can reach this "
        "address can use the API",
        host=host,
    )


def _listener(
    settings: Settings, roles: Collection[str], host: str | None, port: int | None
) -> socket.socket | None:
    api = settings.api
    if "api" in roles:
        return bind(host or api.host, api.port if port is None else port)
    if settings.process.metrics_port is not None:
        # Processes without the API still answer Prometheus and health probes.
        return bind(host or api.host, settings.process.metrics_port)
    return None


async def _until_stopped(stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    for task in done:
        if task is waiter or stop.is_set() or task.cancelled():
            continue
        # Roles run until told to stop: one that ends by itself, even without an error, leaves
        # the process doing less than it says, so the process stops and says why.
        reason = task.exception()
        raise StartupError(
            f"a role stopped unexpectedly: {reason!r}"
            if reason
            else f"a role stopped unexpectedly: {task.get_name()}"
        )


def _loaded_types(tf: Timefuse) -> dict[str, str]:
    """Each delivery type this process delivers with, and where it comes from."""
    return {
        t.name: f"{t.origin} {t.version}".strip() if t.version else t.origin
        for t in tf.registry.types()
    }
