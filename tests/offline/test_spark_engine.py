"""Differential tests: the training sets on Spark equal those on DuckDB, row for row.

Generated logs cover window edges, late outcomes, outcomes received after as-of, immature
decisions, two log layouts (one backfilled from the feature history), entities without
history, ties in event time and decided_at == event_time. Both engines must give equal
tables (same declared schema, same values, same order) and equal report counters.

``pytest -m spark`` with DS_SCALE=1 (``make test-scale``); skipped with the reason when
PySpark or Java is missing. One local Spark session serves the whole test session.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from decision_service.decision_log import fraud_log, outcome_log, recommendation_log
from decision_service.decision_log.outcome_log import OutcomeLogRecord
from decision_service.decision_log.recommendation_log import RecommendationLogRecord
from decision_service.domain.outcomes import DecisionRef, Outcome
from decision_service.features.conversion import FEATURES as CONVERSION_FEATURES
from decision_service.features.definitions import FRAUD_MODEL_FEATURES, ITEM
from decision_service.use_cases import OUTCOME_TYPES
from offline.engines import Engine
from offline.features import feature_history
from offline.loop.retrain_conversion import KEEP as CONVERSION_KEEP
from offline.loop.training_set import (
    LabelWindow,
    TrainingSetReport,
    build_fraud_training_set,
    build_labelled_rows,
    build_training_set,
)
from tests.offline.test_fraud_training_set import verdict
from tests.offline.test_training_set import decision

pytestmark = pytest.mark.spark

T0 = 1_780_000_000_000  # ms
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
LABELS = (LabelWindow("click", ("click",), 30 * 60.0), LabelWindow("purchase", ("purchase",), 24 * 3600.0))


@pytest.fixture(scope="session")
def spark() -> Iterator[Engine]:
    """One local Spark engine (local[2] unless SPARK_MASTER says otherwise) for the session."""
    from offline.engines.spark_engine import SparkEngine, spark_missing_reason, spark_session

    if reason := spark_missing_reason():
        pytest.skip(reason)
    session = spark_session()
    yield SparkEngine(session)
    session.stop()


def counters(report: TrainingSetReport) -> dict:
    """The report without what may differ between runs (time taken, output path)."""
    return {k: v for k, v in asdict(report).items() if k not in ("seconds", "path")}


def assert_same(duck: pa.Table, spark: pa.Table) -> None:
    assert spark.schema.equals(duck.schema, check_metadata=True), (spark.schema, duck.schema)
    assert spark.num_rows == duck.num_rows
    for name in duck.column_names:
        assert spark.column(name).to_pylist() == duck.column(name).to_pylist(), name


# --- recommendation ------------------------------------------------------------------------------


def rec_outcome(d_id: str, item: str, kind: str, occurred: int, decided: int, received: int | None = None):
    return OutcomeLogRecord(
        Outcome(d_id, OUTCOME_TYPES[kind], occurred, item),
        occurred if received is None else received,
        DecisionRef(d_id, "recommendation", "u", decided),
    )


def write_rec(
    root: Path, hour: int, records: list[RecommendationLogRecord], drop_item_col: str | None
) -> None:
    """One decision log file; ``drop_item_col``: an older layout without that item column."""
    table = pa.Table.from_batches([recommendation_log.to_batch(records)])
    if drop_item_col is not None:
        kept = [c for c in ITEM.columns if c != drop_item_col]
        slots = [ITEM.slot(c) for c in kept]
        offsets = np.concatenate([[0], np.cumsum([len(r.item_ids) for r in records])]).astype(np.int32)
        flat = pa.array(np.concatenate([r.item_features[:, slots].reshape(-1) for r in records]))
        col = pa.ListArray.from_arrays(pa.array(offsets), pa.FixedSizeListArray.from_arrays(flat, len(kept)))
        i = table.schema.get_field_index("item_features")
        table = table.set_column(i, pa.field("item_features", col.type), col)
        meta = dict(table.schema.metadata)
        meta[b"item_features"] = json.dumps(kept).encode()
        table = table.replace_schema_metadata(meta)
    d = root / f"decisions/use_case=recommendation/date=2026-05-28/hour={hour:02d}"
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, d / "part-0.parquet")


def recommendation_logs(root: Path, seed: int = 7) -> tuple[Path, Path, int]:
    """(log root, feature history root, as_of_ms) of generated recommendation logs."""
    rng = np.random.default_rng(seed)
    logs, history = root / "logs", root / "history"
    as_of = T0 + 2 * HOUR
    items = [f"i{k:02d}" for k in range(12)]  # i10, i11: never in the history
    new: list[RecommendationLogRecord] = []
    old: list[RecommendationLogRecord] = []
    outcomes: list[OutcomeLogRecord] = []

    def add(target: list, d_id: str, at: int, its: list[str], shown: int, user: str = "u1") -> None:
        target.append(decision(d_id, at, its, shown, user=user))

    # Edges of the primary (30 min) window at as_of: mature at exactly as_of - 30 min.
    add(new, "edge-mature", as_of - 30 * MIN, ["i01", "i02"], 2)
    add(new, "edge-immature", as_of - 30 * MIN + 1, ["i01", "i02"], 2)
    # Outcome window edges: a click at exactly +30 min counts, 1 ms later it is late.
    add(new, "win", T0, ["i01", "i02", "i03", "i04", "i05"], 4)
    outcomes += [
        rec_outcome("win", "i01", "click", T0 + 30 * MIN, T0),
        rec_outcome("win", "i02", "click", T0 + 30 * MIN + 1, T0),
        rec_outcome("win", "i03", "click", T0 + 5 * MIN, T0, received=as_of),  # received at as_of: counts
        rec_outcome("win", "i04", "click", T0 + 6 * MIN, T0, received=as_of + 1),  # after as_of: ignored
        rec_outcome("win", "i05", "click", T0 + 1 * MIN, T0),  # scored, not shown: no row
        rec_outcome("win", "i01", "purchase", T0 + 20 * MIN, T0),  # purchase window still open
        rec_outcome("win", "i03", "click", T0 - 10 * MIN, T0),  # before the decision beyond skew
        rec_outcome("win", "i04", "click", T0 + 7 * MIN, T0),  # twice at the same instant
        rec_outcome("win", "i04", "click", T0 + 7 * MIN, T0),
    ]
    # Ties in decision time: two decisions at the same instant (ordered by decision id).
    add(new, "tie-b", T0 + 10 * MIN, ["i06", "i07"], 2, user="u2")
    add(new, "tie-a", T0 + 10 * MIN, ["i07", "i06"], 2, user="u3")
    # The old layout (no i_trend): backfilled as of each decision from the history.
    add(old, "old-exact", T0 + 40 * MIN, ["i01", "i02"], 2)  # a snapshot at exactly this time
    add(old, "old-tie", T0 + 50 * MIN, ["i03"], 1)  # two snapshots at the same event time
    add(old, "old-nohistory", T0 + 50 * MIN, ["i10", "i11"], 2)  # entities without history
    add(old, "old-early", T0 - 90 * MIN, ["i01"], 1)  # before any snapshot: default
    # Bulk: random decisions in both layouts, random outcomes (some late, some after as_of).
    for k in range(40):
        at = int(T0 - HOUR + rng.integers(0, 3 * HOUR))
        its = list(rng.choice(items, size=int(rng.integers(2, 6)), replace=False))
        target = new if k % 3 else old
        add(target, f"r{k:03d}", at, its, int(rng.integers(1, len(its) + 1)), user=f"u{k % 5}")
        for item in its:
            if rng.random() < 0.5:
                kind = "click" if rng.random() < 0.7 else "purchase"
                occurred = at + int(rng.integers(-2 * MIN, 50 * MIN))
                received = occurred + int(rng.choice([0, 1000, 3 * HOUR]))
                outcomes.append(rec_outcome(f"r{k:03d}", str(item), kind, occurred, at, received))
    write_rec(logs, 1, new, None)
    write_rec(logs, 0, old, "i_trend")
    o = logs / "outcomes/use_case=recommendation/date=2026-05-28/hour=00"
    o.mkdir(parents=True)
    pq.write_table(pa.Table.from_batches([outcome_log.to_batch(outcomes)]), o / "part-0.parquet")

    snapshots = [  # (event ms, {item: i_trend})
        (T0 - HOUR, {f"i{k:02d}": float(k) for k in range(10)}),
        (T0 + 20 * MIN, {"i01": 21.0, "i03": 23.0}),
        (T0 + 40 * MIN, {"i01": 41.0}),  # == old-exact's decision time: servable then
        (T0 + 45 * MIN, {"i03": 5.0}),  # two writers, same instant, for i03
        (T0 + 45 * MIN, {"i03": 6.0}),
        (T0 + 60 * MIN, {"i01": 61.0, "i02": 62.0}),
    ]
    for at, values in snapshots:
        ids = list(values)
        block = np.zeros((len(ids), ITEM.width), np.float32)
        block[:, ITEM.slot("i_trend")] = [values[i] for i in ids]
        feature_history.append_snapshot(history, ITEM, ids, block, at)
    return logs, history, as_of


def test_recommendation_training_set_is_the_same_on_spark(tmp_path: Path, spark: Engine):
    logs, history, as_of = recommendation_logs(tmp_path)
    duck, duck_report = build_training_set(logs, None, LABELS, as_of, history_root=history)
    views = {t.name for t in spark.spark.catalog.listTables()}  # type: ignore[attr-defined]
    sp, sp_report = build_training_set(logs, None, LABELS, as_of, history_root=history, engine=spark)
    assert {t.name for t in spark.spark.catalog.listTables()} == views  # type: ignore[attr-defined]

    assert_same(duck, sp)
    assert counters(sp_report) == counters(duck_report)
    # The cases were generated (a test of equal empties would prove nothing).
    r = duck_report
    assert r.layouts == 2 and r.decisions_immature > 0 and r.late_outcomes > 0
    assert r.backfilled["i_trend"] > 0 and r.backfill_defaults["i_trend"] > 0
    rows = {(x["decision_id"], x["item_id"]): x for x in sp.to_pylist()}
    assert rows[("win", "i01")]["click"] is True  # exactly at the window's end
    assert rows[("win", "i02")]["click"] is False  # 1 ms late
    assert rows[("win", "i03")]["click"] is True  # received exactly at as_of
    assert rows[("win", "i04")]["click"] is True  # the in-window duplicate clicks
    assert rows[("win", "i01")]["purchase"] is None  # 24 h window still open
    assert ("edge-mature", "i01") in rows and not any(d == "edge-immature" for d, _ in rows)
    assert rows[("old-exact", "i01")]["i_trend"] == 41.0  # decided_at == event_time
    assert rows[("old-tie", "i03")]["i_trend"] == 6.0  # same-instant snapshots: the greater
    assert rows[("old-nohistory", "i10")]["i_trend"] == ITEM.feature("i_trend").default
    assert rows[("old-early", "i01")]["i_trend"] == ITEM.feature("i_trend").default
    order = [x["decision_id"] for x in sp.to_pylist() if x["decision_id"].startswith("tie-")]
    assert order == ["tie-a", "tie-a", "tie-b", "tie-b"]


def test_empty_and_outcome_less_logs_are_the_same_on_spark(tmp_path: Path, spark: Engine):
    duck, duck_report = build_training_set(tmp_path, None, LABELS, T0)
    sp, sp_report = build_training_set(tmp_path, None, LABELS, T0, engine=spark)
    assert_same(duck, sp) and counters(sp_report) == counters(duck_report)
    write_rec(tmp_path, 0, [decision("d", T0, ["a", "b"], 1)], None)  # no outcome log at all
    duck, duck_report = build_training_set(tmp_path, None, LABELS, T0 + DAY)
    sp, sp_report = build_training_set(tmp_path, None, LABELS, T0 + DAY, engine=spark)
    assert duck.num_rows == 1
    assert_same(duck, sp)
    assert counters(sp_report) == counters(duck_report)


# --- fraud and conversion (the shared labelled-rows builder) -------------------------------------


def fraud_outcome(d_id: str, kind: str, occurred: int, decided: int, received: int | None = None):
    return OutcomeLogRecord(
        Outcome(d_id, OUTCOME_TYPES[kind], occurred),
        occurred if received is None else received,
        DecisionRef(d_id, "fraud", "u1", decided),
    )


def fraud_logs(root: Path, seed: int = 11) -> int:
    rng = np.random.default_rng(seed)
    as_of = T0 + 70 * DAY
    small = ("r_amount_log", "r_new_device") + tuple(c for c in FRAUD_MODEL_FEATURES if c.startswith("nn_"))
    records, outcomes = [], []
    records += [
        verdict("edge-in", T0),  # chargeback exactly at +60 d: positive
        verdict("edge-late", T0 + 1),  # chargeback 1 ms after its window: late
        verdict("edge-mature", as_of - 60 * DAY),  # window closes exactly at as_of
        verdict("edge-immature", as_of - 60 * DAY + 1),
        verdict("norow", T0 + DAY, built=False),
        verdict("dup", T0 + 2 * DAY),
        verdict("dup", T0 + 2 * DAY + 5),  # logged twice: the earliest counts
        verdict("small", T0 + 3 * DAY, names=small, row=np.array([4.0, 1.0, 0.5, 2.0], np.float32)),
        verdict("tie", T0 + 4 * DAY),  # two analyst verdicts received in the same millisecond
    ]
    outcomes += [
        fraud_outcome("edge-in", "chargeback", T0 + 60 * DAY, T0),
        fraud_outcome("edge-late", "chargeback", T0 + 1 + 60 * DAY + 1, T0 + 1),
        fraud_outcome("edge-immature", "confirmed_fraud", as_of - DAY, as_of - 60 * DAY + 1),
        fraud_outcome("dup", "chargeback", T0 + 9 * DAY, T0 + 2 * DAY, received=as_of + 1),
        fraud_outcome("tie", "confirmed_legit", T0 + 5 * DAY, T0 + 4 * DAY, received=T0 + 6 * DAY),
        fraud_outcome("tie", "confirmed_fraud", T0 + 5 * DAY, T0 + 4 * DAY, received=T0 + 6 * DAY),
    ]
    for k in range(30):
        at = int(T0 + rng.integers(0, 30 * DAY))
        d_id = f"f{k:03d}"
        records.append(verdict(d_id, at, names=small if k % 4 == 0 else FRAUD_MODEL_FEATURES))
        for kind in ("chargeback", "confirmed_fraud", "confirmed_legit", "refund"):
            if rng.random() < 0.3:
                occurred = at + int(rng.integers(0, 80 * DAY))
                outcomes.append(fraud_outcome(d_id, kind, occurred, at, occurred + int(rng.integers(0, DAY))))
    for i, batch in enumerate((records[: len(records) // 2], records[len(records) // 2 :])):
        d = root / f"decisions/use_case=fraud/date=2026-05-28/hour=0{i}"
        d.mkdir(parents=True)
        pq.write_table(pa.Table.from_batches([fraud_log.to_batch(batch)]), d / "part-0.parquet")
    o = root / "outcomes/use_case=fraud/date=2026-05-28/hour=00"
    o.mkdir(parents=True)
    pq.write_table(pa.Table.from_batches([outcome_log.to_batch(outcomes)]), o / "part-0.parquet")
    return as_of


def test_fraud_training_set_is_the_same_on_spark(tmp_path: Path, spark: Engine):
    as_of = fraud_logs(tmp_path)
    duck, duck_report = build_fraud_training_set(tmp_path, None, as_of_ms=as_of)
    sp, sp_report = build_fraud_training_set(tmp_path, None, as_of_ms=as_of, engine=spark)
    assert_same(duck, sp)
    assert counters(sp_report) == counters(duck_report)
    r = duck_report
    assert r.layouts == 2 and r.late_outcomes > 0 and r.decisions_immature > 0 and r.verdicts
    assert r.skipped == {"no_model_row": 1} and r.backfill_defaults
    labels = dict(zip(sp.column("decision_id").to_pylist(), sp.column("fraud").to_pylist(), strict=True))
    assert labels["edge-in"] is True and labels["edge-late"] is False and labels["dup"] is False
    assert "edge-mature" in labels and labels["edge-immature"] is True  # a verdict is final at once
    assert labels["tie"] is False  # same-millisecond verdicts: the type sorting last (legit)


def test_conversion_training_set_is_the_same_on_spark(tmp_path: Path, spark: Engine):
    """The conversion builder's ``keep`` has a DuckDB lambda (list_transform) over structs."""
    rng = np.random.default_rng(3)
    names = list(CONVERSION_FEATURES)
    as_of = T0 + 20 * DAY
    n = 40
    decided = T0 + rng.integers(0, 15 * DAY, n)
    decided[:2] = [as_of - 7 * DAY, as_of - 7 * DAY + 1]  # the window's edge at as_of
    degraded = pa.list_(pa.struct([("stage", pa.string()), ("reason", pa.string())]))
    table = pa.table(
        {
            "decision_id": [f"c{k:03d}" for k in range(n)],
            "decided_at": pa.array(decided, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "user_id": [f"u{k % 7}" for k in range(n)],
            "model_version": ["v1"] * n,
            "degraded": pa.array(
                [[{"stage": "features", "reason": "user_stale"}] if k % 5 == 0 else [] for k in range(n)],
                degraded,
            ),
            "probability": pa.array(rng.random(n), pa.float32()),
            "action": ["SHOW" if k % 2 else "HOLD" for k in range(n)],
            "scored": [bool(k % 3) for k in range(n)],
            "feature_names": pa.array(
                [names if k % 4 else names[:3] for k in range(n)], pa.list_(pa.string())
            ),
            "features": pa.array(
                [list(rng.random(len(names) if k % 4 else 3).astype(np.float32)) for k in range(n)],
                pa.list_(pa.float32()),
            ),
        }
    )
    d = tmp_path / "decisions/use_case=conversion/date=2026-05-28/hour=00"
    d.mkdir(parents=True)
    pq.write_table(table, d / "part-0.parquet")
    outcomes = [
        OutcomeLogRecord(
            Outcome(f"c{k:03d}", OUTCOME_TYPES["converted"], int(decided[k]) + int(rng.integers(0, 9 * DAY))),
            int(decided[k]) + 9 * DAY,
            DecisionRef(f"c{k:03d}", "conversion", "u", int(decided[k])),
        )
        for k in range(n)
        if rng.random() < 0.6
    ]
    o = tmp_path / "outcomes/use_case=conversion/date=2026-05-28/hour=00"
    o.mkdir(parents=True)
    pq.write_table(pa.Table.from_batches([outcome_log.to_batch(outcomes)]), o / "part-0.parquet")
    label = LabelWindow("converted", ("converted",), 7 * 86_400.0)
    args = (tmp_path, "conversion", label, None, as_of)
    kw = {"verdicts": {}, "keep": CONVERSION_KEEP, "features": CONVERSION_FEATURES}
    duck, duck_report = build_labelled_rows(*args, **kw)
    sp, sp_report = build_labelled_rows(*args, **kw, engine=spark)
    assert_same(duck, sp.cast(duck.schema))  # list<string> flags: item field names differ
    assert counters(sp_report) == counters(duck_report)
    assert duck_report.late_outcomes > 0 and duck_report.decisions_immature > 0 and duck_report.layouts == 2
    flags = dict(zip(sp.column("decision_id").to_pylist(), sp.column("flags").to_pylist(), strict=True))
    assert any(flags.values()) and not all(flags.values())
    assert all(f == (["features:user_stale"] if int(d[1:]) % 5 == 0 else []) for d, f in flags.items())


def test_cli_engine_spark_writes_the_same_file(tmp_path: Path, spark: Engine):
    """`python -m offline.loop.training_set --engine spark` (the project CLI passes it through)
    runs on the session's Spark and writes what the DuckDB run writes."""
    from offline.loop.training_set import main

    as_of = fraud_logs(tmp_path / "logs")
    common = ["--use-case", "fraud", "--logs", str(tmp_path / "logs"), "--as-of-ms", str(as_of)]
    assert main([*common, "--out", str(tmp_path / "duck.parquet")]) == 0
    assert main([*common, "--out", str(tmp_path / "spark.parquet"), "--engine", "spark"]) == 0
    duck, sp = pq.read_table(tmp_path / "duck.parquet"), pq.read_table(tmp_path / "spark.parquet")
    assert duck.num_rows > 0
    assert_same(duck, sp)


def test_point_in_time_lookup_is_the_same_on_spark(tmp_path: Path, spark: Engine):
    """The backfill's lookup alone, on many snapshots: ties in event time, keys exactly at a
    snapshot's time, NULL cells (a snapshot written before a column existed), no history."""
    from offline.engines.duckdb_engine import DuckDBEngine

    rng = np.random.default_rng(17)
    ids = [f"e{k}" for k in range(12)]  # e11 never has a snapshot
    for step in range(40):
        at = T0 + int(rng.integers(0, 60)) * 1000  # few distinct instants: many ties
        who = [str(x) for x in rng.choice(ids[:11], size=4, replace=False)]
        values = rng.random((4, ITEM.width)).astype(np.float32)
        cols = list(ITEM.columns) if step % 5 else [c for c in ITEM.columns if c != "i_trend"]
        feature_history.append_snapshot(
            tmp_path, ITEM, who, values[:, [ITEM.slot(c) for c in cols]], at, cols
        )
    keys = [str(x) for x in rng.choice(ids, size=500)]
    at_ms = T0 + rng.integers(-5, 65, size=500) * 1000
    cols = ["i_trend", "i_price"]
    duck = feature_history.asof_values(tmp_path, ITEM.name, keys, at_ms, cols, engine=DuckDBEngine())
    sp = feature_history.asof_values(tmp_path, ITEM.name, keys, at_ms, cols, engine=spark)
    assert duck[1].any() and not duck[1].all()
    np.testing.assert_array_equal(duck[1], sp[1])
    np.testing.assert_array_equal(duck[0][duck[1]], sp[0][sp[1]])


def test_a_keep_expression_spark_cannot_evaluate_is_refused_the_same_way(tmp_path: Path, spark: Engine):
    as_of = fraud_logs(tmp_path)
    label = LabelWindow("fraud", ("chargeback",), 60 * 86400.0)
    for engine in ("duckdb", spark):
        with pytest.raises(ValueError, match="keep column 'p': the fraud decision log cannot evaluate"):
            build_labelled_rows(
                tmp_path, "fraud", label, None, as_of, keep={"p": "no_such_column"}, engine=engine
            )
