"""Hand-made decision, outcome and shadow logs for the watch tests (offline/watch/)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from decision_service.decision_log import outcome_log, recommendation_log, shadow_log
from decision_service.decision_log.recommendation_log import RecommendationLogRecord
from decision_service.domain.recommendation import RequestContext
from decision_service.features.definitions import ITEM, USER, USER_ITEM

T0 = 1_780_000_000_000  # ms
_FILES = itertools.count()


def write(root: Path, log: str, use_case: str, table: pa.Table) -> Path:
    """``table`` as one Parquet file under ``<root>/<log>/use_case=<use_case>/date=/hour=/``."""
    d = root / log / f"use_case={use_case}" / "date=2026-05-28" / "hour=00"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"part-{next(_FILES)}.parquet"
    pq.write_table(table, path)
    return path


def table_of(schema: pa.Schema, n: int, columns: Mapping[str, Sequence[Any]]) -> pa.Table:
    """A table of ``schema`` with the given columns (length ``n``), NULL elsewhere; timestamp
    columns take ms since the epoch."""
    arrays = []
    for f in schema:
        if f.name in columns:
            values = list(columns[f.name])
            if pa.types.is_timestamp(f.type):
                arrays.append(pa.array(values, pa.int64()).cast(f.type))
            else:
                arrays.append(pa.array(values, f.type))
        else:
            arrays.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def recommendation_decisions(rows: Sequence[Mapping[str, Any]], drop_arm: bool = False) -> pa.Table:
    """Recommendation decision log rows. Each row: decision_id, user_id, at_ms, version, arm,
    item_ids, scores, shown (the first ``shown`` candidates get ranks 1..shown), propensity."""
    records = []
    for r in rows:
        items = list(r["item_ids"])
        n = len(items)
        ranks = np.zeros(n, np.int16)
        shown = int(r.get("shown", n))
        ranks[:shown] = np.arange(1, shown + 1)
        records.append(
            RecommendationLogRecord(
                decision_id=r["decision_id"],
                request_id="r",
                decided_at_ms=int(r["at_ms"]),
                user_id=r["user_id"],
                context=RequestContext(),
                model_version=r.get("version", "v0001"),
                degraded=(),
                item_ids=np.asarray(items, dtype=object),
                sources=np.ones(n, np.uint8),
                retrieval_scores=np.zeros(n, np.float32),
                scores=np.asarray(r.get("scores", np.linspace(1, 0, n)), np.float32),
                ranks=ranks,
                propensities=np.where(ranks > 0, r.get("propensity", 1.0), 0.0).astype(np.float32),
                user_features=np.zeros(USER.width, np.float32),
                user_status=0,
                item_features=np.zeros((n, ITEM.width), np.float32),
                item_status=np.zeros(n, np.uint8),
                cross_features=np.zeros((n, len(USER_ITEM.columns)), np.float32),
                arm=r.get("arm", "live"),
            )
        )
    table = pa.Table.from_batches([recommendation_log.to_batch(records)])
    if drop_arm:  # a file written before arms existed
        table = table.drop_columns(["arm", "stage_ms"])
    return table


def outcomes(rows: Sequence[tuple[str, str | None, str, int, int | None]], use_case: str) -> pa.Table:
    """Outcome log rows: (decision_id, item_id, type, occurred_ms, received_ms or None = occurred)."""
    return table_of(
        outcome_log.SCHEMA,
        len(rows),
        {
            "decision_id": [r[0] for r in rows],
            "item_id": [r[1] for r in rows],
            "type": [r[2] for r in rows],
            "occurred_at": [r[3] for r in rows],
            "received_at": [r[4] if r[4] is not None else r[3] for r in rows],
            "use_case": [use_case] * len(rows),
        },
    )


def shadow(rows: Sequence[Mapping[str, Any]], use_case: str) -> pa.Table:
    """Shadow log rows: decision_id, at_ms, version, shadow_version, scores, arm."""
    return pa.Table.from_batches(
        [
            shadow_log.to_batch(
                [
                    shadow_log.ShadowLogRecord(
                        decision_id=r["decision_id"],
                        decided_at_ms=int(r["at_ms"]),
                        use_case=use_case,
                        model_version=r.get("version", "v0001"),
                        arm=r.get("arm", "live"),
                        shadow_model_version=r["shadow_version"],
                        shadow_scores=np.asarray(r["scores"], np.float32),
                        shadow_ms=1.0,
                    )
                    for r in rows
                ]
            )
        ]
    )
