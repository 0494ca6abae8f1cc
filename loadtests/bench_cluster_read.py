"""Client CPU per 251-key feature read: standalone mux vs the cluster client (features/redis_cluster.py).

    python -m loadtests.bench_cluster_read [--reads 2000]

Starts a private redis-server and a private 3-primary cluster (devtools/local_redis.py), writes
251 keys three ways and times ``process_time`` (this process's CPU: the client's cost, the
servers run in their own processes) per read, sequentially:
  standalone   one MGET on one Redis (today's online store)
  cluster      the same keys on the cluster: the client splits the MGET per slot (~250 parts)
  bucketed     keys carrying one of B = 8 x primaries hash tags {bNN}: B MGETs, one pipeline
               per primary (the layout issue "Beyond one machine" asks for)
Median of 5 rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from decision_service.devtools.local_redis import LocalRedis, LocalRedisCluster
from decision_service.features.redis_cluster import ClusterMultiplexedRedis
from decision_service.features.redis_mux import MultiplexedRedis

N_KEYS = 251


async def _cpu_per_read(client, keys: list[str], reads: int) -> float:  # type: ignore[no-untyped-def]
    await client.pipeline([("SET", k, "x" * 200) for k in keys])
    await client.execute("MGET", *keys)  # warm: connections, slot table
    start = time.process_time()
    for _ in range(reads):
        await client.execute("MGET", *keys)
    return (time.process_time() - start) / reads * 1000.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reads", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    plain = [f"fv:item:abc:i{n}" for n in range(N_KEYS)]
    buckets = 8 * 3
    tagged = [f"fv:item:abc:{{b{n % buckets:02d}}}:i{n}" for n in range(N_KEYS)]
    results: dict[str, list[float]] = {"standalone": [], "cluster": [], "bucketed": []}
    with LocalRedis() as single, LocalRedisCluster(3) as cluster:

        async def run() -> None:
            mux = MultiplexedRedis(single.url, timeout_s=1.0)
            many = ClusterMultiplexedRedis(cluster.urls, timeout_s=1.0)
            for _ in range(args.rounds):
                results["standalone"].append(await _cpu_per_read(mux, plain, args.reads))
                results["cluster"].append(await _cpu_per_read(many, plain, max(args.reads // 10, 50)))
                results["bucketed"].append(await _cpu_per_read(many, tagged, args.reads))
            await mux.aclose()
            await many.aclose()

        asyncio.run(run())
    base = statistics.median(results["standalone"])
    for name, values in results.items():
        med = statistics.median(values)
        runs = " / ".join(f"{v:.3f}" for v in values)
        print(
            f"{name:<11} client CPU per {N_KEYS}-key read: median {med:.3f} ms ({med / base:.1f}x) [{runs}]"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
