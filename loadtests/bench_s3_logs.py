"""How DuckDB should read ``s3://`` logs here (no httpfs extension): mirror to local disk, or
scan pyarrow datasets over S3 registered in DuckDB. Against moto's server in this process.

    DS_PROJECT=examples/synthetic .venv/bin/python -m loadtests.bench_s3_logs --decisions 4000

Prints seconds for: writing the logs through the service's writer to s3; a training set from
s3 with a cold mirror (list + download + build), with a warm mirror (list + build); the same
from a local copy of the log; and one scan of the decision log's columns the training set
reads, as a pyarrow dataset over S3FileSystem registered in DuckDB (what every query of the
job would pay again, since DuckDB reads the listed files several times per build).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.dataset as ds

from decision_service.decision_log import outcome_log, recommendation_log
from decision_service.decision_log.outcome_log import OutcomeLogRecord
from decision_service.decision_log.recommendation_log import RecommendationLogRecord
from decision_service.decision_log.writer import LogWriterConfig, ParquetLogWriter
from decision_service.devtools.local_s3 import LocalS3
from decision_service.domain.outcomes import DecisionRef, Outcome
from decision_service.domain.recommendation import RequestContext
from decision_service.features.definitions import ITEM, USER, USER_ITEM
from decision_service.storage import filesystem, list_files
from decision_service.use_cases import OUTCOME_TYPES

T0 = 1_780_000_000_000


def records(n: int, items: int) -> tuple[list[RecommendationLogRecord], list[OutcomeLogRecord]]:
    rng = np.random.default_rng(0)
    decisions, outcomes = [], []
    for i in range(n):
        at = T0 + i * 1_000
        ranks = np.zeros(items, np.int16)
        ranks[:10] = np.arange(1, 11)
        ids = np.asarray([f"i{j}" for j in rng.integers(0, 5_000, items)], dtype=object)
        decisions.append(
            RecommendationLogRecord(
                decision_id=f"d{i}",
                request_id="r",
                decided_at_ms=at,
                user_id=f"u{i % 500}",
                context=RequestContext(),
                model_version="v0001",
                degraded=(),
                item_ids=ids,
                sources=np.ones(items, np.uint8),
                retrieval_scores=np.zeros(items, np.float32),
                scores=rng.random(items).astype(np.float32),
                ranks=ranks,
                propensities=np.where(ranks > 0, 1.0, 0.0).astype(np.float32),
                user_features=rng.random(USER.width).astype(np.float32),
                user_status=0,
                item_features=rng.random((items, ITEM.width)).astype(np.float32),
                item_status=np.zeros(items, np.uint8),
                cross_features=rng.random((items, len(USER_ITEM.columns))).astype(np.float32),
            )
        )
        if i % 3 == 0:
            outcomes.append(
                OutcomeLogRecord(
                    Outcome(f"d{i}", OUTCOME_TYPES["click"], at + 60_000, str(ids[0])),
                    at + 60_000,
                    DecisionRef(f"d{i}", "recommendation", f"u{i % 500}", at),
                )
            )
    return decisions, outcomes


def write(root: str | Path, decisions: list, outcomes: list, rows_per_file: int) -> None:
    config = LogWriterConfig(max_rows_per_file=rows_per_file, flush_interval_s=600)
    for name, module, rows in (
        ("decisions", recommendation_log, decisions),
        ("outcomes", outcome_log, outcomes),
    ):
        w = ParquetLogWriter(root, name, module.SCHEMA, module.to_batch, module.partition_of, config).start()
        for r in rows:
            w.submit(r)
        w.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decisions", type=int, default=4_000)
    ap.add_argument("--items", type=int, default=100, help="candidates per decision")
    ap.add_argument("--rows-per-file", type=int, default=250)
    args = ap.parse_args()
    from offline.loop.training_set import build_training_set

    decisions, outcomes = records(args.decisions, args.items)
    as_of = T0 + 10 * 86_400_000
    with LocalS3() as s3, tempfile.TemporaryDirectory() as tmp:
        os.environ.update(s3.env)
        os.environ["DS_STORAGE_CACHE_DIR"] = str(Path(tmp) / "cache")
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        s3.client().create_bucket(Bucket=bucket)
        remote, local = f"s3://{bucket}/logs", Path(tmp) / "logs"
        t = time.perf_counter()
        write(remote, decisions, outcomes, args.rows_per_file)
        print(f"write to s3 through the log writer: {time.perf_counter() - t:.2f} s")
        write(local, decisions, outcomes, args.rows_per_file)
        files = list_files(remote, "decisions/use_case=recommendation/date=*/hour=*/*.parquet")
        mb = sum(f.size for f in files) / 1e6
        print(
            f"decision log: {len(files)} files, {mb:.1f} MB; {args.decisions} decisions x {args.items} items"
        )
        for label, root in (("s3, cold mirror", remote), ("s3, warm mirror", remote), ("local disk", local)):
            t = time.perf_counter()
            table, _ = build_training_set(root, None, as_of_ms=as_of)
            print(f"training set from {label}: {time.perf_counter() - t:.2f} s ({table.num_rows} rows)")
        fs, _ = filesystem(remote)
        t = time.perf_counter()
        dataset = ds.dataset([f.key for f in files], filesystem=fs, format="parquet")
        con = duckdb.connect()
        con.register("d", dataset)
        n = con.execute("select count(distinct decision_id), sum(len(item_features)) from d").fetchone()
        print(
            f"one scan of the log as a pyarrow S3 dataset in DuckDB: {time.perf_counter() - t:.2f} s",
            n,
        )


if __name__ == "__main__":
    main()
