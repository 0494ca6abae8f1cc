"""Times the recommendation training set on DuckDB and on Spark over the same generated logs.

    DS_PROJECT=examples/synthetic python -m loadtests.bench_offline_engines \\
        [--sizes 2000,20000] [--candidates 200] [--shown 20] [--runs 3] [--dir /tmp/bench_engines]

For each size: writes decision logs (``--candidates`` scored items per decision, the first
``--shown`` shown; 1,000 decisions per file, a new hour partition per file) and outcome logs
(~15% of shown items clicked, ~3% purchased), then builds the training set ``--runs`` times
per engine (``build_training_set``, default labels) and prints the median and every run as
a Markdown table. The two engines' tables are checked equal (values and schema) before any
time is reported. The Spark session's start-up and each engine's first (cold: JVM class
loading and code generation) run on the smallest size are timed once and reported apart,
not in the per-run times (Spark settings: SPARK_MASTER / spark-defaults; default local[2]).
Needs the scale extra and Java 17 for the Spark column.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

T0 = 1_780_000_000_000
MIN = 60_000


def write_logs(root: Path, n: int, candidates: int, shown: int, seed: int = 0) -> int:
    """Decision and outcome logs of ``n`` decisions (one every 2 s from T0) under ``root``;
    returns the benchmark's as_of (ms): 24 h after the 95th-percentile decision, so every
    click window has closed and the last ~5% of purchase windows are still open."""
    from decision_service.decision_log import outcome_log, recommendation_log
    from decision_service.decision_log.outcome_log import OutcomeLogRecord
    from decision_service.decision_log.recommendation_log import RecommendationLogRecord
    from decision_service.domain.outcomes import DecisionRef, Outcome
    from decision_service.domain.recommendation import RequestContext
    from decision_service.features.definitions import ITEM, USER, USER_ITEM
    from decision_service.use_cases import OUTCOME_TYPES

    rng = np.random.default_rng(seed)
    step_ms = 2_000  # one decision every 2 s (as_of_for)
    per_file = 1_000
    ranks = np.zeros(candidates, np.int16)
    ranks[:shown] = np.arange(1, shown + 1)
    for f, start in enumerate(range(0, n, per_file)):
        records, outcomes = [], []
        for k in range(start, min(n, start + per_file)):
            at = T0 + k * step_ms
            d_id = f"d{k:07d}"
            items = np.asarray([f"i{x}" for x in rng.integers(0, 50_000, candidates)], dtype=object)
            records.append(
                RecommendationLogRecord(
                    decision_id=d_id,
                    request_id=d_id,
                    decided_at_ms=at,
                    user_id=f"u{int(rng.integers(0, 5_000))}",
                    context=RequestContext(),
                    model_version="v0001",
                    degraded=(),
                    item_ids=items,
                    sources=np.ones(candidates, np.uint8),
                    retrieval_scores=rng.random(candidates, np.float32),
                    scores=np.sort(rng.random(candidates, np.float32))[::-1].copy(),
                    ranks=ranks,
                    propensities=np.where(ranks > 0, 1.0, 0.0).astype(np.float32),
                    user_features=rng.random(USER.width, np.float32),
                    user_status=0,
                    item_features=rng.random((candidates, ITEM.width), np.float32),
                    item_status=np.zeros(candidates, np.uint8),
                    cross_features=rng.random((candidates, len(USER_ITEM.columns)), np.float32),
                )
            )
            ref = DecisionRef(d_id, "recommendation", "u", at)
            for j in np.flatnonzero(rng.random(shown) < 0.15):
                click = at + int(rng.integers(0, 45 * MIN))
                outcomes.append(
                    OutcomeLogRecord(Outcome(d_id, OUTCOME_TYPES["click"], click, items[j]), click, ref)
                )
                if rng.random() < 0.2:
                    buy = click + int(rng.integers(0, 60 * MIN))
                    outcomes.append(
                        OutcomeLogRecord(Outcome(d_id, OUTCOME_TYPES["purchase"], buy, items[j]), buy, ref)
                    )
        part = f"date=2026-05-28/hour={f:02d}"
        d = root / "decisions/use_case=recommendation" / part
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_batches([recommendation_log.to_batch(records)]), d / "part-0.parquet")
        o = root / "outcomes/use_case=recommendation" / part
        o.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_batches([outcome_log.to_batch(outcomes)]), o / "part-0.parquet")
    return as_of_for(n)


def as_of_for(n: int) -> int:
    """24 h after the 95th-percentile decision of ``n`` (one every 2 s from T0), in ms."""
    return T0 + int(n * 0.95) * 2_000 + 24 * 3600 * 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m loadtests.bench_offline_engines", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--sizes", default="2000,20000", help="decisions per log set, comma-separated")
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--shown", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/bench_offline_engines"))
    ap.add_argument("--engines", default="duckdb,spark")
    args = ap.parse_args(argv)
    from offline.engines import open_engine
    from offline.loop.training_set import build_training_set

    engines = args.engines.split(",")
    print("load average at start: " + " / ".join(f"{x:.2f}" for x in os.getloadavg()))
    spark = None
    if "spark" in engines:
        t0 = time.perf_counter()
        spark = open_engine("spark")
        print(
            f"spark session ({spark.spark.sparkContext.master}) started in {time.perf_counter() - t0:.1f} s"
        )
    rows = []
    cold: dict[str, float] = {}
    for n in (int(x) for x in args.sizes.split(",")):
        root = args.dir / f"n{n}"
        if not (root / "decisions").exists():
            t0 = time.perf_counter()
            write_logs(root, n, args.candidates, args.shown)
            print(f"wrote {n:,} decisions x {args.candidates} candidates in {time.perf_counter() - t0:.1f} s")
        as_of = as_of_for(n)
        size_mb = sum(p.stat().st_size for p in root.rglob("*.parquet")) / 1e6
        results = {}
        for name in engines:
            if name not in cold:  # the first build on this engine: warm-up, reported apart
                t0 = time.perf_counter()
                build_training_set(root, None, as_of_ms=as_of, engine=spark if name == "spark" else name)
                cold[name] = time.perf_counter() - t0
                print(f"{name}: first (cold) build on {n:,} decisions {cold[name]:.2f} s")
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                table, report = build_training_set(
                    root, None, as_of_ms=as_of, engine=spark if name == "spark" else name
                )
                times.append(time.perf_counter() - t0)
            results[name] = (table, report, times)
            print(f"{n:,} decisions, {name}: {' / '.join(f'{t:.2f}' for t in times)} s; {report.summary()}")
        if len(results) == 2:
            (a, ra, _), (b, rb, _) = results.values()
            same = a.equals(b, check_metadata=False) and ra.rows == rb.rows and ra.positives == rb.positives
            if not same:
                print("ENGINES DISAGREE: no time reported for this size")
                return 1
        for name, (_table, report, times) in results.items():
            rows.append((n, n * args.candidates, size_mb, name, report.rows, times))
    print()
    print("| decisions | candidates | logs (MB) | engine | training rows | median (s) | runs (s) |")
    print("|---|---|---|---|---|---|---|")
    for n, c, mb, name, out_rows, times in rows:
        runs = " / ".join(f"{t:.2f}" for t in times)
        print(
            f"| {n:,} | {c:,} | {mb:.0f} | {name} | {out_rows:,} | {statistics.median(times):.2f} | {runs} |"
        )
    print("cold first builds: " + ", ".join(f"{k} {v:.2f} s" for k, v in cold.items()))
    print("load average at end: " + " / ".join(f"{x:.2f}" for x in os.getloadavg()))
    if spark is not None:
        spark.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
