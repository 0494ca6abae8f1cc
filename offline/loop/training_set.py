"""Training sets from logs: decisions joined with outcomes under per-label windows.

One row per item a decision *showed* (rank > 0): the only items whose outcome was
observed. Its features are the exact vectors the service served and logged (no
recomputation, so no training/serving skew), expanded into one column per registry
column using the names in the log file's metadata.

Labels. Each label (``LabelWindow``) is a set of outcome types and a window: the label is
1 when such an outcome for (decision_id, item_id) *occurred* within ``window`` of the
decision, 0 when none did, and NULL while the window is still open at ``as_of`` (the
decision is *immature* for that label). An outcome that occurred after its window is a
late outcome and does not count; an outcome *received* after ``as_of`` is ignored, so a
training set built "as of" a time is reproducible. A decision is *labelled* (kept) when
the window of its primary label (the first) has closed; otherwise it waits for a later run.

Backfill. A model column that the log does not hold (a feature declared after the
decisions were served) is filled from the feature history (offline/features/feature_history.py)
with a point-in-time as-of join on (entity, decided_at): the value as it was when the
decision was made, never a later one. Rows with no earlier value get the declared default.

Binary use cases (``build_labelled_rows``, shared by fraud and conversion): one row per
logged decision with its logged model row (``feature_names`` + ``features``), one label
window; the label is 1 when a positive outcome occurred within the window, 0 once it closed
without one; verdict outcome types (e.g. an analyst's) are final labels whenever they
arrive; immature decisions wait. Fraud (``build_fraud_training_set``) is it with label
``fraud`` = a chargeback or confirmed_fraud within 60 days and the analyst verdicts
confirmed_fraud / confirmed_legit.

CLI: ``python -m offline.loop.training_set --logs data/logs --out train.parquet
--label click=30m --label purchase=24h [--as-of ...] [--feature-history DIR]``;
``--use-case fraud [--label fraud:chargeback,confirmed_fraud=60d]`` for fraud;
``--engine spark [--conf spark.master=...]`` runs the same queries on Spark (offline/engines/).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from decision_service.features.definitions import REGISTRY
from decision_service.features.registry import Feature
from decision_service.storage import is_remote, list_files, mirror_files
from offline.engines import ENGINES, Engine, open_engine, parse_conf
from offline.features import feature_history

USE_CASE = "recommendation"


@dataclass(frozen=True)
class LabelWindow:
    """Label ``name`` = an outcome of one of ``outcome_types`` within ``window_s`` of the decision."""

    name: str
    outcome_types: tuple[str, ...]
    window_s: float

    @property
    def window_ms(self) -> int:
        return int(round(self.window_s * 1000))


RECOMMENDATION_LABELS: tuple[LabelWindow, ...] = (
    LabelWindow("click", ("click",), 30 * 60.0),
    LabelWindow("purchase", ("purchase",), 24 * 3600.0),
)
"""The default outcome types' windows: a click counts within 30 min of the decision, a
purchase within 24 h (recommendation_labels() gives the active project's)."""


def recommendation_labels() -> tuple[LabelWindow, ...]:
    """One label per recommendation outcome type with a label window, in declared order: the
    project's RECOMMENDATION_OUTCOMES (decision_service/features/interactions.py), else the
    defaults (= RECOMMENDATION_LABELS)."""
    from decision_service.use_cases.recommendation import USE_CASE as RECOMMENDATION

    return tuple(
        LabelWindow(t.name, (t.name,), float(t.label_window_s))
        for t in RECOMMENDATION.outcome_types
        if t.label_window_s
    )


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


OUTCOME_CLOCK_SKEW_MS = 300_000
"""An outcome may say it occurred at most this much before its decision (client clocks; the
server's DS_OUTCOME_MAX_FUTURE_SKEW_S default). Earlier ones never label: they could not have
been caused by it. RecordOutcome accepts them (a client clock stamped in 1970 still marks
the item seen online, anchored on the server's clock); only labelling ignores them."""
_CAUSAL = f"coalesce(epoch_ms(occurred_at) >= epoch_ms(decided_at) - {OUTCOME_CLOCK_SKEW_MS}, true)"


def _causal(o_files: Sequence[Path]) -> str:
    """The causality filter over outcome rows; "true" when no file logs ``decided_at``
    (outcome logs written before it was logged)."""
    if any("decided_at" in pq.read_schema(f).names for f in o_files):
        return _CAUSAL
    return "true"


def parse_duration_s(text: str) -> float:
    """'30m' -> 1800.0; units ms, s, m, h, d; a bare number is seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?\s*", text)
    if not m:
        raise ValueError(f"not a duration: {text!r} (e.g. 30m, 24h, 60d, 5s)")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def parse_label(text: str) -> LabelWindow:
    """'click=30m' or 'buy:purchase,add_to_cart=24h' (name:types=window)."""
    if "=" not in text:
        raise ValueError(f"label must look like click=30m, got {text!r}")
    head, window = text.rsplit("=", 1)
    name, _, types = head.partition(":")
    return LabelWindow(name, tuple((types or name).split(",")), parse_duration_s(window))


@dataclass
class TrainingSetReport:
    """What a run read and produced (printed by the CLI, returned by the function)."""

    decisions_read: int = 0
    decisions_labelled: int = 0
    decisions_immature: int = 0
    rows: int = 0
    positives: dict[str, int] = field(default_factory=dict)
    immature_labels: dict[str, int] = field(default_factory=dict)  # rows whose label is still NULL
    late_outcomes: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)  # fraud: analyst verdicts applied
    skipped: dict[str, int] = field(default_factory=dict)  # decisions left out, by reason
    backfilled: dict[str, int] = field(default_factory=dict)  # column -> rows filled from history
    backfill_defaults: dict[str, int] = field(default_factory=dict)  # no earlier value: default
    layouts: int = 0
    as_of_ms: int = 0
    seconds: float = 0.0
    path: str = ""

    def summary(self) -> str:
        pos = ", ".join(f"{k} {v:,}" for k, v in self.positives.items())
        line = (
            f"decisions read {self.decisions_read:,}, labelled {self.decisions_labelled:,}, "
            f"still immature {self.decisions_immature:,}; rows {self.rows:,}; positives: {pos}; "
            f"late outcomes excluded {self.late_outcomes:,}"
        )
        if self.verdicts:
            line += f"; analyst verdicts {self.verdicts}"
        if self.skipped:
            line += f"; skipped {self.skipped}"
        if self.backfilled or self.backfill_defaults:
            line += f"; backfilled {self.backfilled} (defaults {self.backfill_defaults})"
        return line


def decision_files(log_root: str | Path, use_case: str = USE_CASE) -> list[Path]:
    """The decision log's Parquet files of ``use_case``, sorted: local paths, also for an
    object-store root (see ``_log_files``). On failure: StorageError naming the file."""
    return _log_files(log_root, "decisions", use_case)


def outcome_files(log_root: str | Path, use_case: str = USE_CASE) -> list[Path]:
    """The outcome log's Parquet files of ``use_case``, sorted, like ``decision_files``."""
    return _log_files(log_root, "outcomes", use_case)


def _log_files(log_root: str | Path, log: str, use_case: str) -> list[Path]:
    """``<log_root>/<log>/use_case=<use_case>/date=*/hour=*/*.parquet``. An object-store root
    (``s3://bucket/prefix``) is listed through pyarrow and its files mirrored once to local
    disk ($DS_STORAGE_CACHE_DIR; a copy is reused while its size matches): DuckDB then reads
    local files (it has no S3 reader here), each once per query instead of over the network."""
    if not is_remote(log_root):
        return sorted((Path(log_root) / log / f"use_case={use_case}").glob("date=*/hour=*/*.parquet"))
    entries = list_files(log_root, f"{log}/use_case={use_case}/date=*/hour=*/*.parquet")
    return mirror_files(log_root, entries)


def _layout(path: Path) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    meta = pq.read_schema(path).metadata or {}
    return tuple(
        tuple(json.loads(meta[key.encode()])) for key in ("user_features", "item_features", "cross_features")
    )  # type: ignore[return-value]


def build_training_set(
    log_root: str | Path,
    out: str | Path | None = None,
    labels: Sequence[LabelWindow] | None = None,
    as_of_ms: int | None = None,
    columns: Sequence[str] | None = None,
    history_root: str | Path | None = None,
    engine: str | Engine | None = None,
    engine_conf: Mapping[str, str] | None = None,
) -> tuple[pa.Table, TrainingSetReport]:
    """Joins the recommendation decision log with the outcome log; writes ``out`` if given.

    ``labels``: default recommendation_labels(). ``columns``: feature columns to emit
    (default: every logged user, item and cross column). A column missing from a file's
    logged layout is backfilled from ``history_root`` (as-of join); without a history it gets
    the declared default.
    ``engine``: "duckdb" (default), "spark" (``engine_conf``: Spark settings) or an open
    Engine (left open); every engine gives the same rows in the same declared schema
    (``_empty``: decided_at timestamp[us, UTC], rank int16, one float32 per column, ...).
    On failure: ValueError for an unknown column or a label without outcome types;
    EngineUnavailable when Spark is asked for and cannot start (no PySpark or Java).
    """
    with _opened(engine, engine_conf) as eng:
        return _build_training_set(eng, log_root, out, labels, as_of_ms, columns, history_root)


@contextlib.contextmanager
def _opened(engine: str | Engine | None, conf: Mapping[str, str] | None) -> Iterator[Engine]:
    """The engine to run on: a given Engine (left open), else one opened here and closed after."""
    if isinstance(engine, Engine):
        with engine.scope():  # what the job registers goes when it ends; the engine stays open
            yield engine
        return
    eng = open_engine(engine, conf)
    try:
        yield eng
    finally:
        eng.close()


def _build_training_set(
    eng: Engine,
    log_root: str | Path,
    out: str | Path | None,
    labels: Sequence[LabelWindow] | None,
    as_of_ms: int | None,
    columns: Sequence[str] | None,
    history_root: str | Path | None,
) -> tuple[pa.Table, TrainingSetReport]:
    t0 = time.perf_counter()
    labels = recommendation_labels() if labels is None else labels
    if not labels:
        raise ValueError("at least one label window is needed")
    as_of_ms = int(time.time() * 1000) if as_of_ms is None else int(as_of_ms)
    report = TrainingSetReport(as_of_ms=as_of_ms)
    files = decision_files(log_root)
    by_layout: dict[tuple, list[Path]] = defaultdict(list)
    for f in files:
        by_layout[_layout(f)].append(f)
    report.layouts = len(by_layout)
    if columns is None:
        seen: dict[str, None] = {}
        for layout in by_layout:
            for c in (*layout[0], *layout[1], *layout[2]):
                seen.setdefault(c, None)
        columns = list(seen) or list(REGISTRY.servable_columns)
    unknown = [c for c in columns if c not in REGISTRY.servable_columns]
    if unknown:
        raise ValueError("columns not declared in the feature registry: " + ", ".join(unknown))

    o_files = outcome_files(log_root)
    causal = _causal(o_files)
    label_aggs = ",\n".join(
        f"min(occurred_at) filter (where type in ({', '.join(repr(t) for t in lw.outcome_types)}) "
        f"and {causal}) "
        f'as "{lw.name}_at"'
        for lw in labels
    )
    if o_files:
        o = eng.materialize(
            "o",
            f"""select decision_id, item_id, {label_aggs}
            from {eng.register_parquet("outcomes", o_files)}
            where epoch_ms(received_at) <= {as_of_ms}
            group by decision_id, item_id""",
        )
    else:
        nulls = ", ".join(f'null::timestamptz as "{lw.name}_at"' for lw in labels)
        o = eng.materialize(
            "o", f"select null::varchar as decision_id, null::varchar as item_id, {nulls} limit 0"
        )

    primary = labels[0]
    parts: list[pa.Table] = []
    for (user_cols, item_cols, cross_cols), paths in by_layout.items():
        src = eng.register_parquet("decisions", paths)
        counts = eng.sql(
            f"""select count(distinct decision_id) as n_read, count(distinct decision_id) filter (
                    where epoch_ms(decided_at) + {primary.window_ms} <= {as_of_ms}) as n_mature
                from {src}"""
        ).to_pylist()[0]
        n_read, n_mature = counts["n_read"], counts["n_mature"]
        report.decisions_read += int(n_read)
        report.decisions_labelled += int(n_mature)
        label_sql = ",\n".join(
            f"""case when epoch_ms(s.decided_at) + {lw.window_ms} <= {as_of_ms}
                     then coalesce(epoch_ms(o."{lw.name}_at") <= epoch_ms(s.decided_at) + {lw.window_ms},
                                   false)
                     end::boolean as "{lw.name}",
                coalesce(epoch_ms(o."{lw.name}_at") > epoch_ms(s.decided_at) + {lw.window_ms}, false)
                    as "_late_{lw.name}" """
            for lw in labels
        )
        table = eng.sql(
            f"""
            with d as (
                select decision_id, decided_at, user_id, model_version, user_features, user_feature_status,
                       unnest(item_ids) as item_id, unnest(ranks) as rank, unnest(propensities) as propensity,
                       unnest(scores) as logged_score, unnest(sources) as source,
                       unnest(item_features) as item_vec, unnest(item_feature_status) as item_feature_status,
                       unnest(cross_features) as cross_vec
                from {src}
                where epoch_ms(decided_at) + {primary.window_ms} <= {as_of_ms}
            ), s as (select * from d where rank > 0)
            select s.decision_id, s.decided_at, s.user_id, s.item_id, s.model_version,
                   s.rank::smallint as rank,
                   s.propensity, s.logged_score, s.source, s.user_feature_status, s.item_feature_status,
                   {label_sql},
                   s.user_features, s.item_vec, s.cross_vec
            from s left join {o} o on o.decision_id = s.decision_id and o.item_id = s.item_id
            order by s.decided_at, s.decision_id, s.rank
            """
        )
        parts.append(_expand(table, columns, user_cols, item_cols, cross_cols, history_root, report, eng))
    report.decisions_immature = report.decisions_read - report.decisions_labelled

    schema_table = parts[0] if parts else None
    if schema_table is None:
        result = _empty(columns, labels)
    else:
        result = pa.concat_tables(parts, promote_options="default") if len(parts) > 1 else parts[0]
        if len(parts) > 1:
            result = result.sort_by(
                [("decided_at", "ascending"), ("decision_id", "ascending"), ("rank", "ascending")]
            )
    for lw in labels:
        late = result.column(f"_late_{lw.name}")
        labelled = result.column(lw.name)
        report.late_outcomes += int(
            pc.sum(pc.and_(late, pc.invert(pc.fill_null(labelled, True)))).as_py() or 0
        )
        report.positives[lw.name] = int(pc.sum(pc.fill_null(labelled, False)).as_py() or 0)
        report.immature_labels[lw.name] = int(labelled.null_count)
        result = result.drop_columns([f"_late_{lw.name}"])
    declared = _empty(columns, labels).schema
    result = result.cast(pa.schema([f for f in declared if not f.name.startswith("_late_")]))
    report.rows = result.num_rows
    result = result.replace_schema_metadata(
        {
            "registry_version": REGISTRY.version,
            "feature_columns": json.dumps(list(columns)),
            "labels": json.dumps([asdict(lw) for lw in labels]),
            "as_of_ms": str(as_of_ms),
        }
    )
    if out is not None:
        report.path = _write_atomic(result, out)
    report.seconds = round(time.perf_counter() - t0, 2)
    return result, report


def _write_atomic(table: pa.Table, out: str | Path) -> str:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, out)
    except BaseException:  # disk full, interrupted: leave no partial temp behind
        tmp.unlink(missing_ok=True)
        raise
    return str(out)


def _vectors(col: pa.ChunkedArray, width: int) -> np.ndarray:
    arr = col.combine_chunks()
    if len(arr) == 0:
        return np.zeros((0, width), np.float32)
    flat = pc.list_flatten(arr).to_numpy(zero_copy_only=False)
    return flat.astype(np.float32, copy=False).reshape(len(arr), width)


def _expand(
    table: pa.Table,
    columns: Sequence[str],
    user_cols: Sequence[str],
    item_cols: Sequence[str],
    cross_cols: Sequence[str],
    history_root: str | Path | None,
    report: TrainingSetReport,
    eng: Engine,
) -> pa.Table:
    """Replaces the logged vectors by one float32 column per wanted registry column."""
    blocks = {
        "user": (_vectors(table.column("user_features"), len(user_cols)), list(user_cols)),
        "item": (_vectors(table.column("item_vec"), len(item_cols)), list(item_cols)),
        "cross": (_vectors(table.column("cross_vec"), len(cross_cols)), list(cross_cols)),
    }
    where: dict[str, tuple[np.ndarray, int]] = {}
    for block, names in blocks.values():
        for j, name in enumerate(names):
            where.setdefault(name, (block, j))
    out = table.drop_columns(["user_features", "item_vec", "cross_vec"])
    n = out.num_rows
    missing = [c for c in columns if c not in where]
    filled = _backfill(table, missing, history_root, report, eng) if missing else {}
    for name in columns:
        if name in where:
            block, j = where[name]
            values = block[:, j]
        else:
            values = filled[name]
        out = out.append_column(
            name, pa.array(np.ascontiguousarray(values, np.float32) if n else np.zeros(0, np.float32))
        )
    return out


def _backfill(
    table: pa.Table,
    missing: Sequence[str],
    history_root: str | Path | None,
    report: TrainingSetReport,
    eng: Engine,
) -> dict[str, np.ndarray]:
    """Point-in-time values of columns the log lacks, from the feature history."""
    n = table.num_rows
    decided = table.column("decided_at").cast(pa.int64()).to_numpy()  # timestamp(us|ms) -> int
    unit = table.schema.field("decided_at").type.unit
    at_ms = decided // {"s": 1 / 1000, "ms": 1, "us": 1000, "ns": 1_000_000}[unit]
    out: dict[str, np.ndarray] = {}
    by_group: dict[str, list[str]] = defaultdict(list)
    for col in missing:
        by_group[REGISTRY.servable_columns[col]].append(col)
    for group_name, cols in by_group.items():
        defaults = np.array([REGISTRY.features_by_column[c].default for c in cols], np.float32)
        try:
            group = REGISTRY.group(group_name)
        except KeyError:
            raise ValueError(
                f"cannot backfill on-demand columns {cols} of {group_name!r}: they were not logged "
                "and are computed at request time (recompute them from backfilled inputs)"
            ) from None
        entity_col = {"user_id": "user_id", "item_id": "item_id"}.get(group.entity)
        if entity_col is None:
            raise ValueError(f"cannot backfill {cols}: decisions do not carry entity {group.entity!r}")
        values = np.tile(defaults, (n, 1))
        found = np.zeros((n, len(cols)), bool)
        if history_root is not None and n:
            ids = table.column(entity_col).to_pylist()
            hist, found = feature_history.asof_values(history_root, group_name, ids, at_ms, cols, engine=eng)
            values = np.where(found, hist, values)
        for j, c in enumerate(cols):
            out[c] = values[:, j]
            report.backfilled[c] = report.backfilled.get(c, 0) + int(found[:, j].sum())
            report.backfill_defaults[c] = report.backfill_defaults.get(c, 0) + int((~found[:, j]).sum())
    return out


def _empty(columns: Sequence[str], labels: Sequence[LabelWindow]) -> pa.Table:
    fields = [
        ("decision_id", pa.string()),
        ("decided_at", pa.timestamp("us", tz="UTC")),
        ("user_id", pa.string()),
        ("item_id", pa.string()),
        ("model_version", pa.string()),
        ("rank", pa.int16()),
        ("propensity", pa.float32()),
        ("logged_score", pa.float32()),
        ("source", pa.uint8()),
        ("user_feature_status", pa.uint8()),
        ("item_feature_status", pa.uint8()),
    ]
    for lw in labels:
        fields += [(lw.name, pa.bool_()), (f"_late_{lw.name}", pa.bool_())]
    fields += [(c, pa.float32()) for c in columns]
    return pa.schema(fields).empty_table()


# ---------------------------------------------------------------------------------------------
# Fraud: one row per fraud verdict, labelled by chargebacks and analyst verdicts.

FRAUD_USE_CASE = "fraud"
FRAUD_LABEL = LabelWindow("fraud", ("chargeback", "confirmed_fraud"), 60 * 86400.0)
"""Default: fraud = a chargeback (or a confirmed_fraud verdict) within 60 days of the decision."""
FRAUD_VERDICTS: dict[str, bool] = {"confirmed_fraud": True, "confirmed_legit": False}
"""Analyst verdicts: final labels, whenever they arrive (the latest received wins)."""
_LAYOUT_SEP = "\x1f"


_FRAUD_KEEP: dict[str, str] = {
    "transaction_id": "transaction_id",
    "user_id": "user_id",
    "merchant_id": "merchant_id",
    "device_id": "device_id",
    "payment_instrument_id": "payment_instrument_id",
    "amount_eur": "amount_eur",
    "action": "action",
    "risk_score": "risk_score",
    "logged_probability": "fraud_probability",
}
"""Fraud log fields carried into each training row (``action``: retrain leaves declines out)."""
_FRAUD_ORDER = (
    "decision_id", "decided_at", "transaction_id", "user_id", "merchant_id", "device_id",
    "payment_instrument_id", "amount_eur", "model_version", "action", "risk_score",
    "logged_probability", "degraded",
)  # fmt: skip


def build_fraud_training_set(
    log_root: str | Path,
    out: str | Path | None = None,
    label: LabelWindow = FRAUD_LABEL,
    as_of_ms: int | None = None,
    verdicts: dict[str, bool] | None = None,
    engine: str | Engine | None = None,
    engine_conf: Mapping[str, str] | None = None,
) -> tuple[pa.Table, TrainingSetReport]:
    """Joins the fraud decision log with the fraud outcome log; writes ``out`` if given.

    ``build_labelled_rows`` over ``use_case=fraud``: one row per logged verdict whose model
    row was built, expanded into one float32 column per logged feature name. ``fraud`` (the
    label) is the latest analyst verdict received by ``as_of`` (``verdicts``, default
    ``FRAUD_VERDICTS``: final at once, even inside the window), else 1 when a chargeback (an
    outcome of ``label.outcome_types``) occurred within the window, 0 once the window has
    closed without one; immature decisions wait. ``action`` is kept: a declined payment never
    settles, so its 0 means "unobserved", not "legitimate" (retrain leaves those out).
    ``engine`` / ``engine_conf``: as build_labelled_rows ("duckdb" default, "spark").
    On failure: ValueError for a label without outcome types.
    """
    from decision_service.features.definitions import FRAUD_MODEL_FEATURES as _fraud_columns

    t0 = time.perf_counter()
    verdicts = FRAUD_VERDICTS if verdicts is None else verdicts
    result, report = build_labelled_rows(
        log_root,
        FRAUD_USE_CASE,
        label,
        None,
        as_of_ms,
        verdicts=verdicts,
        keep=_FRAUD_KEEP,
        empty_columns=_fraud_columns,
        engine=engine,
        engine_conf=engine_conf,
    )
    meta = result.schema.metadata
    features = json.loads(meta[b"feature_columns"])
    if not decision_files(log_root, FRAUD_USE_CASE):  # no logs: the typed empty table
        result = _fraud_empty(features, label)
    else:
        result = result.select([*_FRAUD_ORDER, label.name, "verdict", *features])
    result = result.replace_schema_metadata(meta)
    if out is not None:
        report.path = _write_atomic(result, out)
    report.seconds = round(time.perf_counter() - t0, 2)
    return result, report


# ---------------------------------------------------------------------------------------------
# Any binary use case: one row per logged decision with its model row, one label window.

_FIXED = ("decision_id", "decided_at", "model_version", "degraded", "verdict")
_REQUIRED_LOG_COLUMNS = (
    "decision_id", "decided_at", "model_version", "degraded", "feature_names", "features",
)  # fmt: skip


def build_labelled_rows(
    log_root: str | Path,
    use_case: str,
    label: LabelWindow,
    out: str | Path | None = None,
    as_of_ms: int | None = None,
    verdicts: Mapping[str, bool] | None = None,
    keep: Mapping[str, str] | None = None,
    features: Mapping[str, Feature] | None = None,
    empty_columns: Sequence[str] = (),
    engine: str | Engine | None = None,
    engine_conf: Mapping[str, str] | None = None,
) -> tuple[pa.Table, TrainingSetReport]:
    """One labelled training row per logged decision of ``use_case`` with a model row.

    Reads ``<log_root>/decisions/use_case=<use_case>/`` (rows with decision_id, decided_at,
    model_version, degraded: list<struct<stage, reason>>, feature_names: list<string>,
    features: list<float32>, NULL when no model row was built) and the outcomes under
    ``<log_root>/outcomes/use_case=<use_case>/``. A decision id logged twice counts once
    (the earliest). Outcomes *received* after ``as_of_ms`` (default: now) are ignored.

    Label ``label.name`` (bool):
      * the latest *received* outcome whose type is in ``verdicts`` (type -> label): final
        labels whenever they arrive, even inside the window (``{}``/None: none); of two
        received in the same millisecond, the type that sorts last (deterministic on every
        engine);
      * else True when an outcome of ``label.outcome_types`` *occurred* within the window,
        False once the window has closed without one (a later one is a late outcome);
      * else the decision is immature and left out (it waits for a later run).
    A labelled decision without a model row is skipped (``report.skipped["no_model_row"]``).

    Columns: decision_id, decided_at, model_version, degraded (bool: any stage degraded),
    ``label.name``, verdict (the verdict type applied, or NULL), the ``keep`` columns (output
    name -> SQL expression over the decision log row, e.g. ``{"logged_probability":
    "fraud_probability"}``), then one float32 column per logged feature name (union over the
    logged layouts, first-seen order; ``empty_columns`` when there are no logs, whose
    ``keep`` columns are then of null type). A column one layout lacks gets the default of
    its ``features`` entry (default: the feature registry's columns), counted in
    ``report.backfill_defaults``. Schema metadata: registry_version, use_case,
    feature_columns, labels, verdicts, as_of_ms. ``out``: written atomically.

    On failure: ValueError for a label without outcome types, a log file lacking a required
    column (names the file), a ``keep`` expression the log cannot evaluate (names the
    column), a logged row whose features and names differ in length (names the decision and
    file), or a logged feature name ``features`` does not declare.

    ``engine``: "duckdb" (default), "spark" (``engine_conf``: Spark settings) or an open Engine
    (left open); the ``keep`` expressions are DuckDB SQL on every engine (offline/engines/).
    """
    with _opened(engine, engine_conf) as eng:
        return _build_labelled_rows(
            eng, log_root, use_case, label, out, as_of_ms, verdicts, keep, features, empty_columns
        )


def _build_labelled_rows(
    eng: Engine,
    log_root: str | Path,
    use_case: str,
    label: LabelWindow,
    out: str | Path | None,
    as_of_ms: int | None,
    verdicts: Mapping[str, bool] | None,
    keep: Mapping[str, str] | None,
    features: Mapping[str, Feature] | None,
    empty_columns: Sequence[str],
) -> tuple[pa.Table, TrainingSetReport]:
    t0 = time.perf_counter()
    if not label.outcome_types:
        raise ValueError(f"the {use_case} label {label.name!r} needs at least one outcome type")
    verdicts = dict(verdicts or {})
    keep = dict(keep or {})
    features = REGISTRY.features_by_column if features is None else features
    clash = [c for c in keep if c in (*_FIXED, label.name) or c.startswith("_")]
    if clash:
        raise ValueError(f"keep columns clash with the training row's own columns: {', '.join(clash)}")
    as_of_ms = int(time.time() * 1000) if as_of_ms is None else int(as_of_ms)
    report = TrainingSetReport(as_of_ms=as_of_ms)
    files = decision_files(log_root, use_case)
    for f in files:
        names = set(pq.read_schema(f).names)
        if lacking := [c for c in _REQUIRED_LOG_COLUMNS if c not in names]:
            raise ValueError(f"{f}: the {use_case} decision log lacks column(s) {', '.join(lacking)}")
    types = ", ".join(repr(t) for t in label.outcome_types)
    verdict_types = ", ".join(repr(t) for t in verdicts) or "null"
    positive_verdicts = ", ".join(repr(t) for t, v in verdicts.items() if v) or "null"
    o_files = outcome_files(log_root, use_case)
    if o_files:
        o = eng.materialize(
            "o",
            f"""select decision_id,
                   min(occurred_at) filter (where type in ({types}) and {_causal(o_files)}) as positive_at,
                   arg_max(type, struct_pack(r := received_at, t := type))
                       filter (where type in ({verdict_types})) as verdict
            from {eng.register_parquet("outcomes", o_files)}
            where epoch_ms(received_at) <= {as_of_ms}
            group by decision_id""",
        )
    else:
        o = eng.materialize(
            "o",
            "select null::varchar as decision_id, null::timestamptz as positive_at, "
            "null::varchar as verdict limit 0",
        )
    if not files:
        result = _labelled_empty(label, keep, empty_columns)
    else:
        src = eng.register_parquet("decisions", files, with_filename=True)
        bad = eng.sql(
            f"""select decision_id, filename, array_length(features) as n_values,
                   array_length(feature_names) as n_names from {src}
            where features is not null and array_length(features) != coalesce(array_length(feature_names), 0)
            limit 1"""
        ).to_pylist()
        if bad:
            d_id, fname, n_values, n_names = bad[0].values()
            raise ValueError(
                f"{fname}: decision {d_id!r} logged {n_values} feature values for {n_names} feature names"
            )
        for name, expr in keep.items():
            try:
                eng.sql(f"select {expr} from {src} limit 0")
            except eng.errors as exc:
                raise ValueError(
                    f"keep column {name!r}: the {use_case} decision log cannot evaluate {expr!r}: {exc}"
                ) from None
        keep_sql = "".join(f'({expr}) as "{name}",\n' for name, expr in keep.items())
        window_ms = label.window_ms
        table = eng.sql(
            f"""
            with d as (
                select * from {src}
                qualify row_number() over (partition by decision_id order by decided_at) = 1
            ), j as (
                select d.*, o.positive_at, o.verdict as _verdict,
                       epoch_ms(d.decided_at) + {window_ms} <= {as_of_ms} as _window_closed,
                       coalesce(epoch_ms(o.positive_at) <= epoch_ms(d.decided_at) + {window_ms}, false)
                           as _positive_in_window
                from d left join {o} o on o.decision_id = d.decision_id
            )
            select decision_id, decided_at, model_version,
                   coalesce(array_length(degraded), 0) > 0 as degraded,
                   case when _verdict is not null then _verdict in ({positive_verdicts})
                        when _window_closed then _positive_in_window end as "{label.name}",
                   _verdict as verdict,
                   {keep_sql}
                   _verdict is null and _window_closed and not _positive_in_window
                       and positive_at is not null as _late,
                   features is null as _no_row,
                   array_to_string(feature_names, '{_LAYOUT_SEP}') as _layout,
                   features as _features
            from j
            order by decided_at, decision_id
            """
        )
        report.decisions_read = table.num_rows
        labelled = pc.is_valid(table.column(label.name))
        report.decisions_immature = int(pc.sum(pc.invert(labelled)).as_py() or 0)
        no_row = pc.and_(labelled, table.column("_no_row"))
        if n_no_row := int(pc.sum(no_row).as_py() or 0):
            report.skipped["no_model_row"] = n_no_row
        table = table.filter(pc.and_(labelled, pc.invert(table.column("_no_row"))))
        report.decisions_labelled = table.num_rows
        report.late_outcomes = int(pc.sum(table.column("_late")).as_py() or 0)
        for name in verdicts:
            if n := int(pc.sum(pc.equal(table.column("verdict"), name)).as_py() or 0):
                report.verdicts[name] = n
        result = _expand_logged_rows(table, report, features, use_case, (*_FIXED, label.name, *keep))
    report.rows = result.num_rows
    report.positives[label.name] = int(pc.sum(pc.fill_null(result.column(label.name), False)).as_py() or 0)
    report.immature_labels[label.name] = report.decisions_immature
    fixed = {*_FIXED, label.name, *keep}
    feature_columns = [c for c in result.column_names if c not in fixed]
    result = result.replace_schema_metadata(
        {
            "registry_version": REGISTRY.version,
            "use_case": use_case,
            "feature_columns": json.dumps(feature_columns),
            "labels": json.dumps([asdict(label)]),
            "verdicts": json.dumps(verdicts),
            "as_of_ms": str(as_of_ms),
        }
    )
    if out is not None:
        report.path = _write_atomic(result, out)
    report.seconds = round(time.perf_counter() - t0, 2)
    return result, report


def _expand_logged_rows(
    table: pa.Table,
    report: TrainingSetReport,
    features: Mapping[str, Feature],
    use_case: str,
    reserved: Sequence[str],
) -> pa.Table:
    """The logged model rows as one column per feature name (union over the logged layouts)."""
    layouts = table.column("_layout").to_pylist()
    names_of = {lay: tuple(lay.split(_LAYOUT_SEP)) if lay else () for lay in dict.fromkeys(layouts)}
    report.layouts = len(names_of)
    columns: dict[str, None] = {}
    for names in names_of.values():
        for c in names:
            columns.setdefault(c, None)
    unknown = [c for c in columns if c not in features]
    if unknown:
        where = "the feature registry" if features is REGISTRY.features_by_column else "the given features"
        raise ValueError(f"logged {use_case} columns not declared in {where}: " + ", ".join(unknown))
    if clash := [c for c in columns if c in reserved]:
        raise ValueError(
            f"logged {use_case} feature names clash with training row columns: {', '.join(clash)}"
        )
    n = table.num_rows
    layout_arr = np.asarray(layouts, dtype=object)
    values = {c: np.full(n, features[c].default, np.float32) for c in columns}
    logged = table.column("_features").combine_chunks()
    for lay, names in names_of.items():
        rows = np.flatnonzero(layout_arr == lay)
        if not len(rows) or not names:
            continue
        block = _vectors(pa.chunked_array([logged.take(pa.array(rows))]), len(names))
        for j, c in enumerate(names):
            values[c][rows] = block[:, j]
        for c in columns:
            if c not in names:
                report.backfill_defaults[c] = report.backfill_defaults.get(c, 0) + len(rows)
    out = table.drop_columns(["_late", "_no_row", "_layout", "_features"])
    for c in columns:
        out = out.append_column(c, pa.array(values[c]))
    return out


def _labelled_empty(label: LabelWindow, keep: Mapping[str, str], columns: Sequence[str]) -> pa.Table:
    fields = [
        ("decision_id", pa.string()),
        ("decided_at", pa.timestamp("ms", tz="UTC")),
        ("model_version", pa.string()),
        ("degraded", pa.bool_()),
        (label.name, pa.bool_()),
        ("verdict", pa.string()),
    ]
    fields += [(c, pa.null()) for c in keep]
    fields += [(c, pa.float32()) for c in columns]
    return pa.schema(fields).empty_table()


def _fraud_empty(columns: Sequence[str], label: LabelWindow) -> pa.Table:
    fields = [
        ("decision_id", pa.string()),
        ("decided_at", pa.timestamp("ms", tz="UTC")),
        ("transaction_id", pa.string()),
        ("user_id", pa.string()),
        ("merchant_id", pa.string()),
        ("device_id", pa.string()),
        ("payment_instrument_id", pa.string()),
        ("amount_eur", pa.float64()),
        ("model_version", pa.string()),
        ("action", pa.string()),
        ("risk_score", pa.int16()),
        ("logged_probability", pa.float32()),
        ("degraded", pa.bool_()),
        (label.name, pa.bool_()),
        ("verdict", pa.string()),
    ]
    fields += [(c, pa.float32()) for c in columns]
    return pa.schema(fields).empty_table()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m offline.loop.training_set", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--logs", default="data/logs", help="log root (decisions/ and outcomes/ below it)")
    ap.add_argument("--use-case", choices=(USE_CASE, FRAUD_USE_CASE), default=USE_CASE)
    ap.add_argument("--out", default=None, help="default: data/training/<use case>.parquet")
    ap.add_argument(
        "--label",
        action="append",
        type=parse_label,
        help="name[:types]=window, e.g. click=30m, purchase=24h (first = primary); repeatable. "
        "Fraud: one label, default fraud:chargeback,confirmed_fraud=60d",
    )
    ap.add_argument("--as-of-ms", type=int, default=None, help="label as of this time (default: now)")
    ap.add_argument("--feature-history", default=None, help="feature history root, for backfill")
    ap.add_argument("--columns", default=None, help="comma-separated feature columns (default: logged)")
    ap.add_argument(
        "--engine",
        choices=ENGINES,
        default="duckdb",
        help="duckdb (embedded, default) or spark (local[2] unless SPARK_MASTER, spark-defaults or "
        "--conf spark.master=... name a cluster)",
    )
    ap.add_argument(
        "--conf", action="append", default=[], metavar="KEY=VALUE", help="a Spark setting; repeatable"
    )
    args = ap.parse_args(argv)
    out = args.out or f"data/training/{args.use_case}.parquet"
    engine = {"engine": args.engine, "engine_conf": parse_conf(args.conf)}
    if args.use_case == FRAUD_USE_CASE:
        if args.label and len(args.label) != 1:
            ap.error("the fraud training set takes one --label")
        _, report = build_fraud_training_set(
            args.logs, out, args.label[0] if args.label else FRAUD_LABEL, args.as_of_ms, **engine
        )
        print(report.summary())
        print(f"-> {report.path} in {report.seconds:.2f} s")
        return 0
    _, report = build_training_set(
        args.logs,
        out,
        tuple(args.label) if args.label else recommendation_labels(),
        args.as_of_ms,
        args.columns.split(",") if args.columns else None,
        args.feature_history,
        **engine,
    )
    print(report.summary())
    print(f"-> {report.path} in {report.seconds:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
