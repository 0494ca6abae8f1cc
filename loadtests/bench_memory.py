"""Benchmark: server memory under many concurrent large requests, old vs new resource bounds.

Starts a private redis-server and one single-process server per configuration over a
(re)used tiny world, sends ``--calls`` concurrent requests of ``--mb`` MB each on ONE channel
(the report's "200 concurrent 3.9 MB requests"), and prints the server's RSS before and its
peak (VmHWM) after, with the status counts, then one JSON line.

Configurations: ``old`` = the bounds before issue 11 (4 MiB messages, no bound on the calls
handled at once); ``new`` = today's defaults (config.py: max_message_bytes,
max_concurrent_rpcs), once with the same bodies and once with bodies just under the new
message limit. The peak varies with timing: each configuration runs ``--rounds`` times.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import tempfile
from pathlib import Path

from grpc import aio

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.devtools.local_redis import LocalRedis
from decision_service.devtools.server_process import ServerProcess
from offline.features.materialize import materialize
from offline.runs.bootstrap import bootstrap
from offline.simulation.world import generate_world, preset

OLD = {
    "DS_MAX_MESSAGE_BYTES": str(4 * 1024 * 1024),
    "DS_MAX_CONCURRENT_RPCS": str(1_000_000),
    "DS_MAX_CONNECTION_AGE_S": "0",
}


def prepare(data_dir: Path) -> tuple[Path, Path]:
    world_dir, registry = data_dir / "world", data_dir / "registry"
    if not (registry / "recommendation" / "CURRENT").exists():
        generate_world(preset("tiny"), world_dir)
        bootstrap(world_dir, registry)
    return world_dir, registry


def rss_kb(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def request(size_bytes: int) -> pb.GetDecisionRequest:
    n = max(1, size_bytes // 202)
    return pb.GetDecisionRequest(
        recommendation=pb.RecommendationRequest(user_id="u1", num_items=5, exclude_item_ids=["x" * 200] * n)
    )


async def fire(address: str, body: pb.GetDecisionRequest, calls: int) -> collections.Counter[str]:
    """Status counts; each code other than OK is counted with its first details."""
    options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
    async with aio.insecure_channel(address, options=options) as channel:
        stub = pb_grpc.DecisionServiceStub(channel)

        async def one() -> str:
            try:
                await stub.GetDecision(body, timeout=60)
                return "OK"
            except aio.AioRpcError as err:
                details.setdefault(err.code().name, (err.details() or "")[:80])
                return err.code().name

        details: dict[str, str] = {}
        counts = collections.Counter(await asyncio.gather(*(one() for _ in range(calls))))
        return collections.Counter({f"{code} ({details[code]})" if code in details else code: n
                                    for code, n in counts.items()})


def measure(registry: Path, redis_url: str, env: dict[str, str], size: int, calls: int) -> dict[str, object]:
    log_dir = tempfile.mkdtemp(prefix="bench-mem-logs-")
    server = ServerProcess(
        registry, redis_url,
        env={"DS_WORKERS": "1", "DS_LOG_DIR": log_dir, "DS_LOG_LEVEL": "ERROR", **env},
    ).start()
    try:
        assert server.process is not None
        before = rss_kb(server.process.pid)
        statuses = asyncio.run(fire(server.address, request(size), calls))
        after = rss_kb(server.process.pid)
    finally:
        server.terminate(timeout_s=60)
    return {
        "rss_before_mb": round(before["VmRSS"] / 1024, 1),
        "peak_rss_mb": round(after["VmHWM"] / 1024, 1),
        "statuses": dict(statuses),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtests.bench_memory", description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path("data/bench-memory"))
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--mb", type=float, default=3.9, help="size of each request body")
    ap.add_argument("--rounds", type=int, default=3, help="runs per configuration; the peak varies")
    args = ap.parse_args(argv)
    _, registry = prepare(args.data_dir)
    big = int(args.mb * 1_000_000)
    runs = [
        ("old bounds", OLD, big),
        ("new bounds", {}, big),
        ("new bounds, bodies under the limit", {}, 1_000_000),
    ]
    results: dict[str, dict[str, object]] = {}
    with LocalRedis() as redis_server:
        materialize(args.data_dir / "world", redis_server.url)
        for r in range(args.rounds):
            for name, env, size in runs:
                m = measure(registry, redis_server.url, env, size, args.calls)
                entry = results.setdefault(name, {"body_mb": round(size / 1e6, 2), "peak_rss_mb": []})
                entry["peak_rss_mb"].append(m["peak_rss_mb"])  # type: ignore[union-attr]
                entry["rss_before_mb"] = m["rss_before_mb"]
                entry["statuses"] = m["statuses"]
                print(
                    f"round {r + 1} {name:38s} {args.calls} x {size / 1e6:.2f} MB: "
                    f"RSS {m['rss_before_mb']} MB -> peak {m['peak_rss_mb']} MB; {m['statuses']}",
                    flush=True,
                )
    for name, entry in results.items():
        peaks = entry["peak_rss_mb"]
        print(f"{name:38s} peak RSS over {args.rounds} rounds: max {max(peaks)} MB, all {peaks}")  # type: ignore[arg-type]
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
