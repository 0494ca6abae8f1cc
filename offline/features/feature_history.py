"""Feature history: every materialized snapshot of a feature group, appended to Parquet.

The online store keeps only the latest value of each feature; training on past decisions
needs the value *as it was at decision time*. Each materialization therefore also appends
what it wrote to Redis, stamped with the time it became servable (``event_time``, the
same event time the Redis value carries):

    <root>/group=<group name>/date=<YYYY-MM-DD>/part-<event ms>-<random>.parquet
    columns: entity_id (string), event_time (timestamp ms UTC), one float32 column per
             registry column of the group (u_events_7d, u_category_share_00, ...)
    metadata: group, fingerprint, columns

Columns are named, not packed: a feature added to a group later simply appears as a new
column in newer files, and readers union files by name (older files give NULL). Files are
written under a hidden name and renamed, so readers never see a partial file.

``asof_values`` reads it back point-in-time correctly: for each (entity, time) it returns
the latest value with ``event_time <= time`` (DuckDB ASOF JOIN, or a forward-fill on Spark:
offline/engines/), never a later one.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from decision_service.features.registry import FeatureGroup
from offline.engines.base import Engine
from offline.engines.duckdb_engine import DuckDBEngine

HISTORY_DIR = "feature_history"


def group_dir(root: str | Path, group_name: str) -> Path:
    return Path(root) / f"group={group_name}"


def append_snapshot(
    root: str | Path,
    group: FeatureGroup,
    entity_ids: Sequence[str],
    values: np.ndarray,
    event_ms: int,
    columns: Sequence[str] | None = None,
) -> Path:
    """Appends one snapshot of ``group`` (rows aligned with ``entity_ids``); returns the file.

    ``columns`` names the columns of ``values`` (default: the group's declared columns).
    """
    columns = list(columns or group.columns)
    values = np.asarray(values, dtype=np.float32)
    if values.shape != (len(entity_ids), len(columns)):
        raise ValueError(f"{group.name}: values {values.shape} for {len(entity_ids)} ids x {len(columns)}")
    day = time.strftime("%Y-%m-%d", time.gmtime(event_ms / 1000.0))
    out_dir = group_dir(root, group.name) / f"date={day}"
    out_dir.mkdir(parents=True, exist_ok=True)
    arrays = [
        pa.array([str(e) for e in entity_ids], pa.string()),
        pa.array(np.full(len(entity_ids), event_ms, "datetime64[ms]"), pa.timestamp("ms", tz="UTC")),
    ] + [pa.array(values[:, j]) for j in range(len(columns))]
    table = pa.Table.from_arrays(arrays, names=["entity_id", "event_time", *columns]).replace_schema_metadata(
        {"group": group.name, "fingerprint": group.fingerprint, "columns": ",".join(columns)}
    )
    name = f"part-{event_ms:013d}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = out_dir / f".{name}.tmp"
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, out_dir / name)
    except BaseException:  # disk full, interrupted: leave no partial temp behind
        tmp.unlink(missing_ok=True)
        raise
    return out_dir / name


def history_files(root: str | Path, group_name: str) -> list[str]:
    return sorted(str(p) for p in group_dir(root, group_name).glob("date=*/*.parquet"))


def asof_values(
    root: str | Path,
    group_name: str,
    entity_ids: Sequence[str],
    at_ms: np.ndarray,
    columns: Sequence[str],
    con: duckdb.DuckDBPyConnection | None = None,
    engine: Engine | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Point-in-time lookup: per (entity, time), each column's latest value at or before it.

    Returns (float32 [n, len(columns)] with NaN where no value existed yet,
    bool [n, len(columns)] found). Each column is joined on its own, so a snapshot that
    predates a column (NULL there) never hides an older snapshot that has it. Snapshots of
    one entity stamped with the same ``event_time`` (two writers in the same millisecond)
    resolve to the greatest value, so every engine and every run gives the same answer.
    ``engine``: the offline engine to run on (offline/engines/: DuckDB's ASOF JOIN or Spark's
    sort + forward-fill); default a DuckDB engine on ``con`` (or on a new connection).
    """
    n = len(entity_ids)
    out = np.full((n, len(columns)), np.nan, dtype=np.float32)
    found = np.zeros((n, len(columns)), dtype=bool)
    files = history_files(root, group_name)
    if not files or n == 0:
        return out, found
    own = engine is None
    eng: Engine = DuckDBEngine(con) if engine is None else engine
    keys = pa.table(
        {
            "row_id": pa.array(np.arange(n, dtype=np.int64)),
            "entity_id": pa.array([str(e) for e in entity_ids], pa.string()),
            "at": pa.array(np.asarray(at_ms, "datetime64[ms]"), pa.timestamp("ms", tz="UTC")),
        }
    )
    try:
        with eng.scope():  # the keys and history views go when the lookup ends
            keys_view = eng.register_arrow("asof_keys", keys)
            history = eng.register_parquet("feature_history", files)
            available = set(eng.columns(history))
            for j, col in enumerate(columns):
                if col not in available:
                    continue
                snapshots = f"""(
                    select entity_id, event_time, max("{col}") as value
                    from {history}
                    where "{col}" is not null
                    group by entity_id, event_time
                )"""
                rows = eng.sql(eng.point_in_time(keys_view, snapshots))
                if rows.num_rows:
                    idx = rows.column("row_id").to_numpy()
                    out[idx, j] = rows.column("value").to_numpy(zero_copy_only=False).astype(np.float32)
                    found[idx, j] = True
    finally:
        if own:
            eng.close()
    return out, found
