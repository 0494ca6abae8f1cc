"""Profiles one recommendation request in process: per-stage medians, then a pyinstrument tree.

No gRPC: the same executor, pipeline, Redis store and artifacts the server builds, driven
directly with realistic requests from the world. Use it to see where a request's time goes
before optimising (``--profile`` needs ``pip install pyinstrument``).

    python -m loadtests.profile_request --data-dir data/bench-small [--scorer compiled] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from decision_service.config import ServiceConfig
from decision_service.devtools.local_redis import LocalRedis, LocalRedisCluster
from decision_service.features.redis_cluster import ClusterMultiplexedRedis
from decision_service.features.redis_mux import MultiplexedRedis
from decision_service.features.redis_store import LAYOUT_KEY, STANDALONE, KeyLayout, RedisFeatureReads
from decision_service.models.registry import ModelRegistry
from decision_service.models.serving import RecommendationModels
from decision_service.use_cases.recommendation.convert import (
    RecommendationLimits,
    recommendation_request_from_proto,
)
from decision_service.use_cases.recommendation.executor import RecommendationExecutor
from decision_service.use_cases.recommendation.pipeline import recommendation_pipeline
from loadtests.make_requests import recommendation_requests
from offline.features.materialize import materialize
from offline.simulation.world import World


async def stage_timings(
    config: ServiceConfig, requests: list, rounds: int, profile: bool
) -> tuple[dict[str, list[float]], str | None]:
    """Runs ``rounds`` requests; returns per-stage ms lists (+ "total") and a profile text."""
    faiss.omp_set_num_threads(1)
    models = RecommendationModels(ModelRegistry(config.registry_root), config)
    models.load_current()
    if config.redis_url.startswith("redis+cluster://"):  # the cluster store, as the server builds it
        client = ClusterMultiplexedRedis.from_url(config.redis_url, timeout_s=1.0)
        layout = KeyLayout.parse(await client.execute("GET", LAYOUT_KEY))
    else:
        client, layout = MultiplexedRedis(config.redis_url), STANDALONE
    store = RedisFeatureReads(client, config.max_seen_items, config.fraud_max_velocity_events, layout)
    executor = RecommendationExecutor(recommendation_pipeline(config, store), models.get)
    limits = RecommendationLimits.from_config(config)
    domain = [recommendation_request_from_proto(r, limits) for r in requests]
    for r in domain[:200]:  # warm-up: caches, lazy imports, connection pool
        await executor.run(r, 1.0)
    gc.collect()
    gc.freeze()
    timings: dict[str, list[float]] = {}
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0002, async_mode="disabled")
        profiler.start()
    for i in range(rounds):
        t0 = time.perf_counter()
        decision = await executor.run(domain[i % len(domain)], 1.0)
        total = (time.perf_counter() - t0) * 1000.0
        for k, v in decision.stage_ms.items():
            timings.setdefault(k, []).append(v)
        timings.setdefault("total", []).append(total)
    text = None
    if profiler is not None:
        profiler.stop()
        text = profiler.output_text(unicode=False, color=False, show_all=False)
    await client.aclose()
    return timings, text


def summarise(timings: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {
        k: {
            "median_ms": round(statistics.median(v), 4),
            "p99_ms": round(float(np.percentile(v, 99)), 4),
        }
        for k, v in timings.items()
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m loadtests.profile_request", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--data-dir", type=Path, default=Path("data/bench-small"), help="world/ + registry/")
    ap.add_argument("--redis-url", default=None, help="an already materialized Redis (else a private one)")
    ap.add_argument("--cluster", action="store_true", help="a private 3-primary Redis Cluster instead")
    ap.add_argument("--rounds", type=int, default=2_000)
    ap.add_argument("--scorer", default="lightgbm", choices=["auto", "lightgbm", "compiled"])
    ap.add_argument("--profile", action="store_true", help="print a pyinstrument call tree")
    args = ap.parse_args(argv)
    world_dir = args.data_dir / "world"
    requests = recommendation_requests(World.load(world_dir), 5_000)

    def run(url: str) -> tuple[dict[str, list[float]], str | None]:
        config = ServiceConfig.from_env(
            registry_dir=args.data_dir / "registry", redis_url=url, scorer=args.scorer
        )  # DS_IVF_NPROBE / DS_HNSW_EF_SEARCH from the environment, as the server
        return asyncio.run(stage_timings(config, requests, args.rounds, args.profile))

    if args.redis_url:
        timings, text = run(args.redis_url)
    elif args.cluster:
        with LocalRedisCluster(3) as cluster:
            materialize(world_dir, cluster.url, history_root=Path("/tmp") / "ds-profile-history")
            timings, text = run(cluster.url)
    else:
        with LocalRedis() as server:
            materialize(world_dir, server.url, history_root=Path("/tmp") / "ds-profile-history")
            timings, text = run(server.url)
    summary = summarise(timings)
    for k, v in summary.items():
        print(f"{k:<22} median {v['median_ms']:7.3f} ms   p99 {v['p99_ms']:7.3f} ms")
    if text:
        print(text)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
