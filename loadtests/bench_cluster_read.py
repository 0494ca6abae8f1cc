"""Client CPU per recommendation feature read (1 user + 250 items = 251 keys): the online
store's read half on one Redis vs on a Redis Cluster (features/redis_store.py, redis_cluster.py).

    python -m loadtests.bench_cluster_read [--reads 2000] [--rounds 5] [--json out.json]

Starts a private redis-server and a private 3-primary cluster (devtools/local_redis.py),
materializes the same random USER and ITEM rows into both with RedisBulkWrites (standalone
names; the cluster's hash-tagged layout, B = 8 x primaries buckets), then times
``process_time`` (this process's CPU: the client's cost; the servers run in their own
processes) per ``RedisFeatureReads.read_groups([(USER, [u]), (ITEM, 250 ids)])``, one read at
a time, alternating the two stores each round:

  standalone   one MGET on one Redis (the multiplexed connection, features/redis_mux.py)
  cluster      one MGET per bucket (<= B), one pipeline per primary, all primaries at once
  cluster-raw  the same keys without the layout's grouping: the cluster client splits one
               MGET per slot itself (what any key layout costs through the generic path)

Median of the rounds; the ratio cluster / standalone is the issue's "<= 2.5x" target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import numpy as np

from decision_service.devtools.local_redis import LocalRedis, LocalRedisCluster
from decision_service.features import redis_store
from decision_service.features.definitions import ITEM, USER
from decision_service.features.redis_cluster import ClusterMultiplexedRedis
from decision_service.features.redis_mux import MultiplexedRedis

N_ITEMS = 250
N_KEYS = N_ITEMS + 1


def _materialize(client, users: list[str], items: list[str]) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    bulk = redis_store.RedisBulkWrites(client)
    bulk.write_group(USER, users, rng.random((len(users), USER.width), dtype=np.float32))
    bulk.write_group(ITEM, items, rng.random((len(items), ITEM.width), dtype=np.float32))


async def _cpu_per_read(read, reads: int) -> float:  # type: ignore[no-untyped-def]
    await read()  # warm: connections, slot table, memoised slots
    start = time.process_time()
    for _ in range(reads):
        await read()
    return (time.process_time() - start) / reads * 1000.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reads", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", help="also write the medians as JSON here")
    args = ap.parse_args(argv)
    users = [f"u{n:07d}" for n in range(100)]
    items = [f"i{n:07d}" for n in range(5000)]
    results: dict[str, list[float]] = {"standalone": [], "cluster": [], "cluster-raw": []}
    with LocalRedis() as single, LocalRedisCluster(3) as cluster:
        _materialize(single.client(), users, items)
        _materialize(cluster.client(), users, items)
        layout = redis_store.layout_of(cluster.client())

        async def run() -> None:
            mux = MultiplexedRedis(single.url, timeout_s=1.0)
            many = ClusterMultiplexedRedis.from_url(cluster.url, timeout_s=1.0)
            on_one = redis_store.RedisFeatureReads(mux, 200, 100, redis_store.STANDALONE)
            on_cluster = redis_store.RedisFeatureReads(many, 200, 100, layout)
            rng = np.random.default_rng(1)
            batches = [rng.choice(items, N_ITEMS, replace=False).tolist() for _ in range(64)]
            turn = {"n": 0}

            def request() -> list:  # type: ignore[type-arg]
                turn["n"] += 1
                return [(USER, [users[turn["n"] % len(users)]]), (ITEM, batches[turn["n"] % len(batches)])]

            async def raw() -> None:
                keys: list[bytes] = []
                for group, ids in request():
                    keys.extend(layout.feature_keys(group, ids))
                await many.execute("MGET", *keys)

            for _ in range(args.rounds):
                results["standalone"].append(
                    await _cpu_per_read(lambda: on_one.read_groups(request()), args.reads)
                )
                results["cluster"].append(
                    await _cpu_per_read(lambda: on_cluster.read_groups(request()), args.reads)
                )
                results["cluster-raw"].append(await _cpu_per_read(raw, args.reads))
            await mux.aclose()
            await many.aclose()

        asyncio.run(run())
    base = statistics.median(results["standalone"])
    medians = {}
    for name, values in results.items():
        med = statistics.median(values)
        medians[name] = med
        runs = " / ".join(f"{v:.3f}" for v in values)
        print(
            f"{name:<12} client CPU per {N_KEYS}-key read: median {med:.3f} ms ({med / base:.2f}x) [{runs}]"
        )
    print(f"buckets: {layout.buckets} (8 x 3 primaries)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ms": medians, "ratio": medians["cluster"] / base, "buckets": layout.buckets}, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
