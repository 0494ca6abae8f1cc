"""Builds and runs the grpc.aio server: servicer, health, reflection, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import redis.asyncio as aioredis
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.config import ServiceConfig, mask_url
from decision_service.features.redis_cluster import SCHEME as CLUSTER_SCHEME
from decision_service.features.redis_cluster import ClusterMultiplexedRedis
from decision_service.features.redis_mux import MultiplexedRedis
from decision_service.features.redis_store import (
    CLUSTER_UNSUPPORTED,
    LAYOUT_KEY,
    STANDALONE,
    KeyLayout,
    LayoutError,
    RedisFeatureReads,
    RedisStateWrites,
    is_cluster_node,
)
from decision_service.features.store import FeatureReads, StateWrites
from decision_service.models.registry import ModelRegistry, RegistryError
from decision_service.models.reload import ModelReloader
from decision_service.models.rollout import RolloutModels
from decision_service.server import drain, security
from decision_service.server.collect import Collect
from decision_service.server.drain import DrainGate
from decision_service.server.errors import EdgeGuardInterceptor, ErrorMappingInterceptor
from decision_service.server.metrics_http import MetricsEndpoint, start_for_server
from decision_service.server.metrics_interceptor import RequestMetricsInterceptor
from decision_service.server.reflection_pool import MethodAwarePool
from decision_service.server.servicer import DecisionServicer
from decision_service.stages.side_effects.shadow_score import ShadowRunner
from decision_service.telemetry import Telemetry
from decision_service.use_cases import USE_CASES
from decision_service.use_cases.base import Served, ServingEnv, UseCase
from decision_service.use_cases.proto import RequestLimits

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DecisionService"].full_name
_REDIS_RETRY_S = 1.0


@dataclass
class RunningServer:
    server: aio.Server
    port: int
    health: health.aio.HealthServicer
    redis: aioredis.Redis | _MuxLookups
    redis_reads: MultiplexedRedis | ClusterMultiplexedRedis
    redis_outcomes: MultiplexedRedis | ClusterMultiplexedRedis
    served: dict[str, Served]  # use case name -> what serves it (published use cases only)
    collect: Collect
    _readiness: asyncio.Task[None] | None = None
    reloader: ModelReloader | None = None
    _reload_task: asyncio.Task[None] | None = None
    telemetry: Telemetry | None = None
    gate: DrainGate | None = None
    metrics: MetricsEndpoint | None = None  # Prometheus /metrics (DS_METRICS_PORT), if on
    shadow: ShadowRunner | None = None  # shadow scoring off the answer path (models/rollout.py)

    async def stop(self, grace_s: float | None = None) -> None:
        """Stops accepting, lets in-flight calls finish within ``grace_s``, flushes the logs,
        closes Redis.

        Contract (server/drain.py): calls started before the stop finish; calls handed over
        after it answer UNAVAILABLE (retryable, nothing done); none is CANCELLED unless a call
        outlives ``grace_s``.
        ``grace_s`` None: cancel every call now.
        """
        await self.health.enter_graceful_shutdown()
        for task in (self._readiness, self._reload_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if grace_s is not None and self.gate is not None:
            deadline = time.monotonic() + grace_s
            self.gate.start_draining()
            if not await self.gate.wait_idle(grace_s):
                log.warning("%d calls still running after the grace period", self.gate.running)
            await asyncio.sleep(drain.FLUSH_PAUSE_S)
            drain.disconnect_clients(self.port)
            grace_s = max(0.0, deadline - time.monotonic())
        await self.server.stop(grace_s)
        if self.shadow is not None:  # before the logs close: what it scored is flushed with them
            await self.shadow.stop()
        await self.collect.stop()
        await self.redis.aclose()
        await self.redis_reads.aclose()
        await self.redis_outcomes.aclose()
        if self.metrics is not None:  # scrapable while draining; closed before the providers
            self.metrics.stop()
        if self.telemetry is not None:
            self.telemetry.shutdown()


async def start_server(config: ServiceConfig, telemetry: Telemetry | None = None) -> RunningServer:
    """Loads artifacts (raising RegistryError if they are missing or bad), then listens.

    Health reports NOT_SERVING until Redis has answered once; after that a Redis outage
    degrades answers instead of taking the replica out of rotation.
    """
    faiss.omp_set_num_threads(1)  # one thread per query is as fast as two (ARCHITECTURE.md)
    timeout_s = config.redis_timeout_ms / 1000.0
    connect_timeout_s = config.redis_connect_timeout_ms / 1000.0
    cluster = config.redis_url.startswith(CLUSTER_SCHEME)
    # a decision's reads, its commit and its decision-index write go through one multiplexed
    # connection (in a cluster: one per primary); outcome effects through their own (a batch
    # of up to max_outcomes_per_request scripts must not queue ahead of decisions); the
    # decision-index lookups use redis-py (in a cluster: the outcomes' connections)
    reads: MultiplexedRedis | ClusterMultiplexedRedis
    outcomes_conn: MultiplexedRedis | ClusterMultiplexedRedis
    client: aioredis.Redis | _MuxLookups
    if cluster:
        reads = ClusterMultiplexedRedis.from_url(config.redis_url, timeout_s, connect_timeout_s)
        outcomes_conn = ClusterMultiplexedRedis.from_url(config.redis_url, timeout_s, connect_timeout_s)
        client = _MuxLookups(outcomes_conn)
    else:
        reads = MultiplexedRedis(config.redis_url, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s)
        outcomes_conn = MultiplexedRedis(
            config.redis_url, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s
        )
        client = aioredis.Redis.from_url(
            config.redis_url,
            socket_timeout=timeout_s,
            socket_connect_timeout=connect_timeout_s,
            max_connections=config.redis_max_connections,
            decode_responses=False,
        )
    # the online store's halves (features/store.py), on the Redis backend; a cluster's key
    # layout is read from the cluster before the server reports SERVING (_become_ready)
    layout = None if cluster else STANDALONE
    store_reads = RedisFeatureReads(reads, config.max_seen_items, config.fraud_max_velocity_events, layout)
    store_writes = RedisStateWrites(reads, config.max_seen_items, layout)
    outcome_writes = RedisStateWrites(outcomes_conn, config.max_seen_items, layout)
    # the decision index write each answer awaits goes over `reads`
    collect = Collect.build(config, client, USE_CASES, reads, outcome_writes)
    telemetry = telemetry or Telemetry.from_exporter(
        config.telemetry_exporter, prometheus=config.metrics_port is not None
    )
    gate = DrainGate()
    # shadow versions score served decisions only while no call runs (after the replies)
    shadow = ShadowRunner(gate.idle, collect.shadow_log, telemetry, config.shadow_max_queue)
    served = _serve_use_cases(config, USE_CASES, store_reads, store_writes, collect, telemetry, shadow)
    _register_gauges(telemetry, collect, served, reads, shadow)
    reloader = ModelReloader({name: s.models for name, s in served.items()}, config.model_reload_interval_s)
    for name, s in served.items():  # the canary and shadow ROLLOUT names serve from the start
        if isinstance(s.models, RolloutModels):
            await reloader.check_rollout(name, s.models)

    server = aio.server(
        interceptors=[
            *([RequestMetricsInterceptor(telemetry)] if telemetry.enabled else []),
            gate,  # graceful stop: refuses calls handed over after it began (server/drain.py)
            EdgeGuardInterceptor(),  # undecodable bodies, failing interceptors: a status, no traceback
            *security.interceptors(config),
            ErrorMappingInterceptor(),
        ],
        options=security.server_options(config),
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,  # beyond: RESOURCE_EXHAUSTED
    )
    pb_grpc.add_DecisionServiceServicer_to_server(
        DecisionServicer(
            {u.request_field: served.get(u.name) for u in USE_CASES},
            RequestLimits.from_config(config),
            config.request_budget_ms,
            collect.recorder,
        ),
        server,
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    # MethodAwarePool: clients such as ghz ask reflection for the file of a *method*
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server, pool=MethodAwarePool()
    )
    port = security.bind(server, config)
    metrics = start_for_server(config, telemetry)  # ListenError when its port is taken
    collect.start()
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    running = RunningServer(
        server,
        port,
        health_servicer,
        client,
        reads,
        outcomes_conn,
        served,
        collect,
        telemetry=telemetry,
        gate=gate,
        metrics=metrics,
        shadow=shadow,
    )
    if isinstance(reads, ClusterMultiplexedRedis):
        running._readiness = asyncio.create_task(
            _become_ready_cluster(reads, (store_reads, store_writes, outcome_writes), health_servicer)
        )
    else:
        running._readiness = asyncio.create_task(_become_ready(reads, health_servicer))
    running.reloader = reloader
    if config.model_reload_interval_s > 0:
        running._reload_task = asyncio.create_task(reloader.run())
    log.info("decision service listening on %s:%d", config.host, port)
    return running


def _serve_use_cases(
    config: ServiceConfig,
    use_cases: tuple[UseCase, ...],
    reads: FeatureReads,
    writes: StateWrites,
    collect: Collect,
    telemetry: Telemetry,
    shadow: ShadowRunner | None = None,
) -> dict[str, Served]:
    """Builds every registered use case that has a published version.

    On failure: RegistryError when a use case's published version cannot be loaded (or a
    use case that requires one has none), or when no use case has a version at all."""
    registry = ModelRegistry(config.registry_root, config.registry_cache_dir, config.registry_cache_versions)
    limits = RequestLimits.from_config(config)
    served: dict[str, Served] = {}
    for use_case in use_cases:
        env = ServingEnv(
            config,
            registry,
            reads,
            writes,
            telemetry,
            collect.index,
            limits,
            collect.decision_logs.get(use_case.name),
            shadow,
        )
        one = use_case.serve(env)
        if one is None:
            log.info("use case %s: no version published, its requests answer UNIMPLEMENTED", use_case.name)
            continue
        served[use_case.name] = one
    if not served:
        raise RegistryError(f"no use case has a published version under {config.registry_root}")
    return served


def _register_gauges(
    telemetry: Telemetry,
    collect: Collect,
    served: dict[str, Served],
    reads: MultiplexedRedis | ClusterMultiplexedRedis,
    shadow: ShadowRunner | None = None,
) -> None:
    if not telemetry.enabled:
        return
    writers = collect.labelled_writers()

    def queue_depth() -> list[tuple[float, dict[str, str]]]:
        return [(w.queue_depth, {"log": label}) for label, w in writers]

    def dropped() -> list[tuple[float, dict[str, str]]]:
        out = []
        for label, w in writers:
            out.append((w.stats.dropped_queue_full, {"log": label, "cause": "queue_full"}))
            out.append((w.stats.dropped_write_error, {"log": label, "cause": "write_error"}))
        return out

    def versions() -> list[tuple[float, dict[str, str]]]:
        out = []
        for name, s in served.items():
            out.append((1.0, {"use_case": name, "version": s.model_version(), "arm": "live"}))
            models = s.models
            if isinstance(models, RolloutModels):  # the canary and the shadow being served
                for arm, artifacts in (("canary", models.canary), ("shadow", models.shadow)):
                    if artifacts is not None:
                        out.append((1.0, {"use_case": name, "version": artifacts.version, "arm": arm}))
        return out

    telemetry.add_gauge("decision.log.queue_depth", queue_depth)
    telemetry.add_gauge("decision.redis.pending_commands", lambda: [(reads.pending, {})])
    if isinstance(reads, ClusterMultiplexedRedis):  # a primary that fails sends, by address
        telemetry.add_gauge(
            "decision.redis.node_errors",
            lambda: [(float(n), {"node": node}) for node, n in sorted(reads.node_errors.items())],
        )
    telemetry.add_gauge("decision.log.dropped", dropped)
    telemetry.add_gauge("decision.model.version", versions)
    if shadow is not None:
        telemetry.add_gauge("decision.shadow.queue_depth", lambda: [(float(shadow.queue_depth), {})])


async def _become_ready(reads: MultiplexedRedis, health_servicer: health.aio.HealthServicer) -> None:
    warned = False
    while True:
        try:
            await reads.execute("PING")
            break
        except Exception as exc:  # noqa: BLE001 - keep trying until Redis answers
            if not warned:
                log.warning("waiting for Redis before reporting SERVING: %s", exc)
                warned = True
            await asyncio.sleep(_REDIS_RETRY_S)
    if is_cluster_node(await reads.execute("INFO", "cluster")):
        # never SERVING on a store that would turn every read into a silent degradation
        log.error("not ready, health stays NOT_SERVING: the online store %s", CLUSTER_UNSUPPORTED)
        return
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("ready: health SERVING")


async def _become_ready_cluster(
    reads: ClusterMultiplexedRedis,
    halves: tuple[RedisFeatureReads | RedisStateWrites, ...],
    health_servicer: health.aio.HealthServicer,
) -> None:
    """SERVING once every primary answers PING and the cluster's key layout is loaded into the
    store's halves (until then they fail as an unavailable store). Each cause is logged once."""
    said: set[str] = set()

    def wait(cause: str) -> None:
        if cause not in said:
            log.warning("waiting for the Redis Cluster before reporting SERVING: %s", cause)
            said.add(cause)

    while True:
        try:
            answers = await reads.ping_all()
            down = sorted(node for node, ok in answers.items() if not ok)
            if down:
                wait(f"primaries not answering: {', '.join(down)}")
            else:
                layout = KeyLayout.parse(await reads.execute("GET", LAYOUT_KEY))
                break
        except LayoutError as exc:
            wait(str(exc))
        except Exception as exc:  # noqa: BLE001 - keep trying until the cluster answers
            wait(f"{type(exc).__name__}: {mask_url(str(exc))}")
        await asyncio.sleep(_REDIS_RETRY_S)
    for half in halves:
        half.use_layout(layout)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("ready: health SERVING (Redis Cluster: %d primaries, %d buckets)", len(answers), layout.buckets)


class _MuxLookups:
    """The two redis-py calls the decision index makes (``mget``, ``execute_command``) on a
    cluster's multiplexed connections (the MGET is split by slot)."""

    def __init__(self, mux: ClusterMultiplexedRedis) -> None:
        self._mux = mux

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        return await self._mux.execute("MGET", *keys)

    async def execute_command(self, *args: object) -> object:
        return await self._mux.execute(*args)

    async def aclose(self) -> None:
        """The connections belong to the server (closed with it)."""


async def serve(config: ServiceConfig, on_ready: Callable[[int, int | None], None] | None = None) -> None:
    """Runs until SIGTERM or SIGINT, then shuts down gracefully. ``on_ready(port, metrics_port)``
    is called once the server listens (the multi-worker supervisor waits for it,
    server/workers.py); ``metrics_port`` is None when /metrics is off."""
    running = await start_server(config)
    # What start-up loaded (artifacts, modules) lives as long as the process: move it out of
    # the collector's reach so collections only walk per-request objects (ARCHITECTURE.md).
    gc.collect()
    gc.freeze()
    if on_ready is not None:
        on_ready(running.port, running.metrics.port if running.metrics is not None else None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down (grace %.1fs)", config.grace_period_s)
    await running.stop(config.grace_period_s)
    log.info("stopped")
