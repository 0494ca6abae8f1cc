"""Benchmark: recommendation latency with a shadow version ON and OFF (same load, same data).

Copies the bench world's registry to a temp dir, publishes a second recommendation version
(the CURRENT files under a new name: the same model size, so the same scoring cost) and, for
the ON runs, names it the shadow in ROLLOUT (models/rollout.py). Alternates server processes
with the shadow ON and OFF, each under the same open-loop load (a fixed request rate, so
latency is compared at equal throughput) from the load generator on the same machine; then a
closed-loop phase (saturating) to show that a busy process skips shadow work and counts it.
Prints each run, the medians of p50 / p99, the share of decisions the shadow scored (rows of
the shadow log / rows of the decision log), then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from decision_service.devtools.local_redis import LocalRedis
from decision_service.devtools.server_process import ServerProcess
from decision_service.models.registry import ModelRegistry
from decision_service.models.rollout import Rollout
from loadtests.bench_logging import prepare
from loadtests.loadgen import run
from loadtests.make_requests import recommendation_requests
from offline.features.materialize import materialize
from offline.simulation.world import World

USE_CASE = "recommendation"


def republish(registry: ModelRegistry, use_case: str) -> str:
    """CURRENT's files under a new version name, not CURRENT: the same model (the same scoring
    cost) under another name; returns the name."""
    current = registry.current(use_case)
    staging = registry.staging_dir(use_case)
    for f in current.path.iterdir():
        if f.is_file() and f.name != "manifest.json":
            shutil.copy2(f, staging / f.name)
    manifest = {
        k: v for k, v in current.manifest.items() if k not in ("files", "version", "use_case", "created_at")
    }
    return registry.publish(use_case, staging, manifest, make_current=False).name


def shadow_registry(registry: Path) -> tuple[Path, str]:
    """A private copy of ``registry`` with a second recommendation version (not CURRENT)."""
    root = Path(tempfile.mkdtemp(prefix="bench-shadow-")) / "registry"
    shutil.copytree(registry, root)
    return root, republish(ModelRegistry(root), USE_CASE)


def rows(log_dir: Path, log: str) -> int:
    return sum(pq.read_metadata(f).num_rows for f in (log_dir / log).rglob("*.parquet"))


def measure(root: Path, redis_url: str, shadow: str | None, requests, seconds: float, **load) -> dict:
    ModelRegistry(root).set_rollout(USE_CASE, Rollout().with_shadow(shadow))
    log_dir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    env = {"DS_LOG_DIR": str(log_dir), "DS_LOG_LEVEL": "WARNING", "DS_LOG_FLUSH_INTERVAL_S": "1"}
    server = ServerProcess(root, redis_url, env=env).start()
    try:
        report = asyncio.run(run(server.address, requests, seconds, **load))
    finally:
        server.terminate(timeout_s=60)
    decisions, scored = rows(log_dir, f"decisions/use_case={USE_CASE}"), rows(log_dir, "shadow")
    shadow_ms = [
        v
        for f in (log_dir / "shadow").rglob("*.parquet")
        for v in pq.read_table(f, columns=["shadow_ms"]).column("shadow_ms").to_pylist()
    ]
    shutil.rmtree(log_dir, ignore_errors=True)
    return {
        "rps": report.rps,
        "p50": report.p50_ms,
        "p99": report.p99_ms,
        "errors": sum(n for code, n in report.status.items() if code != "OK"),
        "shadow_share": scored / max(decisions, 1),
        "shadow_ms_p50": float(np.percentile(shadow_ms, 50)) if shadow_ms else 0.0,
        "shadow_ms_p99": float(np.percentile(shadow_ms, 99)) if shadow_ms else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtests.bench_shadow", description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path("data/bench-small"))
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=100.0, help="open-loop requests per second")
    ap.add_argument("--concurrency", type=int, default=8, help="the saturating closed-loop phase")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)

    world_dir, registry = prepare(args.data_dir, args.preset)
    requests = recommendation_requests(World.load(world_dir), 5_000)
    root, shadow = shadow_registry(registry)
    runs: dict[bool, list[dict]] = {True: [], False: []}
    with LocalRedis() as redis_server:
        materialize(world_dir, redis_server.url)
        for r in range(args.rounds):
            for on in (True, False) if r % 2 == 0 else (False, True):
                m = measure(
                    root, redis_server.url, shadow if on else None, requests, args.seconds, rate=args.rate
                )
                runs[on].append(m)
                print(
                    f"round {r + 1} shadow {'ON ' if on else 'OFF'} at {args.rate:.0f} req/s: {m['rps']:.1f} "
                    f"req/s, p50 {m['p50']:.2f} ms, p99 {m['p99']:.2f} ms, errors {m['errors']}, "
                    f"shadow scored {m['shadow_share']:.0%} of decisions "
                    f"(a job p50 {m['shadow_ms_p50']:.2f} ms, p99 {m['shadow_ms_p99']:.2f} ms)",
                    flush=True,
                )
        busy = measure(root, redis_server.url, shadow, requests, args.seconds, concurrency=args.concurrency)
        print(
            f"saturating (concurrency {args.concurrency}) shadow ON: {busy['rps']:.1f} req/s, "
            f"p99 {busy['p99']:.2f} ms, shadow scored {busy['shadow_share']:.0%} (the rest skipped, counted)",
            flush=True,
        )

    def med(on: bool, key: str) -> float:
        return statistics.median(m[key] for m in runs[on])

    summary = {
        "rate": args.rate,
        "p50_on_ms": round(med(True, "p50"), 2),
        "p50_off_ms": round(med(False, "p50"), 2),
        "p99_on_ms": round(med(True, "p99"), 2),
        "p99_off_ms": round(med(False, "p99"), 2),
        "shadow_scored_share": round(med(True, "shadow_share"), 3),
        "shadow_job_ms_p50": round(med(True, "shadow_ms_p50"), 2),
        "shadow_job_ms_p99": round(med(True, "shadow_ms_p99"), 2),
        "saturated_rps": round(busy["rps"], 1),
        "saturated_shadow_scored_share": round(busy["shadow_share"], 3),
    }
    print(
        f"median at {args.rate:.0f} req/s: p99 shadow ON {summary['p99_on_ms']} ms vs OFF "
        f"{summary['p99_off_ms']} ms; p50 {summary['p50_on_ms']} vs {summary['p50_off_ms']} ms; "
        f"shadow scored {summary['shadow_scored_share']:.0%}"
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
