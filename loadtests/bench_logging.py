"""Benchmark: GetDecision throughput with the decision log on and off, and bytes per record.

Starts a private redis-server, (re)uses a bootstrapped world, then alternates server
processes with logging ON and OFF (same port, same data), each measured by the closed-loop
load generator on the same machine. Prints each run, the medians, the overhead and the
on-disk bytes per logged decision, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from decision_service.devtools.local_redis import LocalRedis
from decision_service.devtools.server_process import ServerProcess
from loadtests.loadgen import run
from loadtests.make_requests import recommendation_requests
from offline.features.materialize import materialize
from offline.runs.bootstrap import bootstrap
from offline.simulation.world import World, generate_world, preset


def prepare(data_dir: Path, preset_name: str) -> tuple[Path, Path]:
    world_dir, registry = data_dir / "world", data_dir / "registry"
    if not (registry / "recommendation" / "CURRENT").exists():
        generate_world(preset(preset_name), world_dir)
        bootstrap(world_dir, registry)
    return world_dir, registry


def measure(registry: Path, redis_url: str, log_on: bool, requests, seconds: float, concurrency: int):
    log_dir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    env = {
        "DS_LOG_ENABLED": "true" if log_on else "false",
        "DS_LOG_DIR": str(log_dir),
        "DS_LOG_LEVEL": "WARNING",
    }
    server = ServerProcess(registry, redis_url, env=env).start()
    try:
        report = asyncio.run(run(server.address, requests, seconds, concurrency=concurrency))
    finally:
        server.terminate(timeout_s=60)
    files = list(log_dir.rglob("*.parquet"))
    records = sum(pq.read_metadata(f).num_rows for f in files)
    size = sum(f.stat().st_size for f in files)
    return report, records, size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m loadtests.bench_logging", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--data-dir", type=Path, default=Path("data/bench-small"))
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)

    world_dir, registry = prepare(args.data_dir, args.preset)
    requests = recommendation_requests(World.load(world_dir), 5_000)
    rps: dict[bool, list[float]] = {True: [], False: []}
    bytes_per_record: list[float] = []
    with LocalRedis() as redis_server:
        materialize(world_dir, redis_server.url)
        for r in range(args.rounds):
            for log_on in (True, False):
                report, records, size = measure(
                    registry, redis_server.url, log_on, requests, args.seconds, args.concurrency
                )
                rps[log_on].append(report.rps)
                line = (
                    f"round {r + 1} logging {'ON ' if log_on else 'OFF'}: {report.rps:8.1f} req/s, "
                    f"p50 {report.p50_ms:.2f} ms, p99 {report.p99_ms:.2f} ms"
                )
                if log_on:
                    bytes_per_record.append(size / max(records, 1))
                    line += f", {records} records, {size / max(records, 1):,.0f} B/record"
                print(line, flush=True)
    on, off = statistics.median(rps[True]), statistics.median(rps[False])
    overhead = 100.0 * (off - on) / off
    print(f"median: logging ON {on:.1f} req/s, OFF {off:.1f} req/s -> overhead {overhead:.1f}%")
    print(
        json.dumps(
            {
                "rec_rps_log_on": round(on, 1),
                "rec_rps_log_off": round(off, 1),
                "log_overhead_pct": round(overhead, 1),
                "log_bytes_per_record": round(statistics.median(bytes_per_record)),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
