"""Training sets from logs: label windows, maturity, served features, point-in-time backfill."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from decision_service.decision_log import outcome_log, recommendation_log
from decision_service.decision_log.outcome_log import OutcomeLogRecord
from decision_service.decision_log.recommendation_log import RecommendationLogRecord
from decision_service.domain.outcomes import DecisionRef, Outcome
from decision_service.domain.recommendation import RequestContext
from decision_service.features.definitions import ITEM, USER, USER_ITEM
from decision_service.use_cases import OUTCOME_TYPES
from offline.features import feature_history
from offline.loop.training_set import LabelWindow, build_training_set, parse_label

T0 = 1_780_000_000_000  # ms
MIN = 60_000
LABELS = (LabelWindow("click", ("click",), 30 * 60.0), LabelWindow("purchase", ("purchase",), 24 * 3600.0))


def decision(
    decision_id: str, at_ms: int, items: list[str], shown: int, user: str = "u1"
) -> RecommendationLogRecord:
    n = len(items)
    rng = np.random.default_rng(abs(hash(decision_id)) % 2**32)
    ranks = np.zeros(n, np.int16)
    ranks[:shown] = np.arange(1, shown + 1)
    return RecommendationLogRecord(
        decision_id=decision_id,
        request_id="r",
        decided_at_ms=at_ms,
        user_id=user,
        context=RequestContext(),
        model_version="v0001",
        degraded=(),
        item_ids=np.asarray(items, dtype=object),
        sources=np.ones(n, np.uint8),
        retrieval_scores=np.zeros(n, np.float32),
        scores=np.linspace(1, 0, n).astype(np.float32),
        ranks=ranks,
        propensities=np.where(ranks > 0, 1.0, 0.0).astype(np.float32),
        user_features=rng.random(USER.width).astype(np.float32),
        user_status=0,
        item_features=rng.random((n, ITEM.width)).astype(np.float32),
        item_status=np.zeros(n, np.uint8),
        cross_features=rng.random((n, len(USER_ITEM.columns))).astype(np.float32),
    )


def outcome(decision_id: str, item: str, kind: str, occurred_ms: int, received_ms: int | None = None):
    return OutcomeLogRecord(
        Outcome(decision_id, OUTCOME_TYPES[kind], occurred_ms, item),
        received_ms if received_ms is not None else occurred_ms,
        DecisionRef(decision_id, "recommendation", "u1", T0),
    )


def write_logs(
    root: Path, decisions: list[RecommendationLogRecord], outcomes: list[OutcomeLogRecord]
) -> None:
    d = root / "decisions/use_case=recommendation/date=2026-05-28/hour=00"
    d.mkdir(parents=True)
    pq.write_table(pa.Table.from_batches([recommendation_log.to_batch(decisions)]), d / "part-0.parquet")
    if outcomes:
        o = root / "outcomes/use_case=recommendation/date=2026-05-28/hour=00"
        o.mkdir(parents=True)
        pq.write_table(pa.Table.from_batches([outcome_log.to_batch(outcomes)]), o / "part-0.parquet")


def test_windows_label_only_mature_decisions_and_exclude_late_outcomes(tmp_path):
    decisions = [
        decision("d-old", T0, ["a", "b", "c", "z"], shown=3),
        decision("d-new", T0 + 50 * MIN, ["a", "b"], shown=2),  # window still open at as_of
    ]
    outcomes = [
        outcome("d-old", "a", "click", T0 + 5 * MIN),  # in window
        outcome("d-old", "b", "click", T0 + 45 * MIN),  # late: after the 30 min window
        outcome("d-old", "a", "purchase", T0 + 40 * MIN),  # purchase window is 24 h: counts...
        outcome("d-old", "c", "click", T0 + 10 * MIN, received_ms=T0 + 90 * MIN),  # received after as_of
        outcome("d-old", "z", "click", T0 + 1 * MIN),  # z was scored but not shown: no row
        outcome("d-new", "a", "click", T0 + 51 * MIN),
    ]
    write_logs(tmp_path, decisions, outcomes)
    as_of = T0 + 60 * MIN
    table, report = build_training_set(tmp_path, tmp_path / "train.parquet", LABELS, as_of_ms=as_of)

    assert (report.decisions_read, report.decisions_labelled, report.decisions_immature) == (2, 1, 1)
    rows = {r["item_id"]: r for r in table.to_pylist()}
    assert set(rows) == {"a", "b", "c"}  # shown items of the mature decision only
    assert rows["a"]["click"] is True
    assert rows["b"]["click"] is False  # the late click is excluded
    assert rows["c"]["click"] is False  # not yet received at as_of
    assert rows["a"]["purchase"] is None  # ...but the 24 h purchase window is still open
    assert report.positives == {"click": 1, "purchase": 0}
    assert report.late_outcomes == 1
    # The features are the served ones, column by column, in the log's layout.
    served = decisions[0]
    assert rows["b"]["i_price"] == pytest.approx(float(served.item_features[1, ITEM.slot("i_price")]))
    assert rows["b"]["u_events_7d"] == pytest.approx(float(served.user_features[USER.slot("u_events_7d")]))
    assert rows["b"]["x_emb_dot"] == pytest.approx(float(served.cross_features[1, 0]))
    assert pq.read_table(tmp_path / "train.parquet").num_rows == 3

    # A day later every window has closed: the purchase counts, d-new is labelled.
    later, report = build_training_set(tmp_path, None, LABELS, as_of_ms=T0 + 26 * 3600 * 1000)
    assert report.decisions_immature == 0 and report.positives == {"click": 3, "purchase": 1}
    assert len(later) == 5


def test_backfill_of_an_unlogged_feature_never_uses_a_later_value(tmp_path):
    """An older log layout without i_trend: it is filled as of each decision's time."""
    old_item_cols = [c for c in ITEM.columns if c != "i_trend"]
    records = [
        decision("d1", T0 + 10 * MIN, ["a", "b"], shown=2),
        decision("d2", T0 + 30 * MIN, ["a", "b"], shown=2),
        decision("d0", T0 - 10 * MIN, ["a"], shown=1),  # before any history
    ]
    batch = recommendation_log.to_batch(records)
    keep = [ITEM.slot(c) for c in old_item_cols]
    narrow = [np.asarray(r.item_features[:, keep]) for r in records]
    offsets = pa.array(np.concatenate([[0], np.cumsum([len(r.item_ids) for r in records])]).astype(np.int32))
    flat = pa.array(np.concatenate([x.reshape(-1) for x in narrow]))
    item_col = pa.ListArray.from_arrays(offsets, pa.FixedSizeListArray.from_arrays(flat, len(old_item_cols)))
    table = pa.Table.from_batches([batch])
    i = table.schema.get_field_index("item_features")
    table = table.set_column(i, pa.field("item_features", item_col.type), item_col)
    meta = dict(table.schema.metadata)
    meta[b"item_features"] = json.dumps(old_item_cols).encode()
    table = table.replace_schema_metadata(meta)
    d = tmp_path / "logs/decisions/use_case=recommendation/date=2026-05-28/hour=00"
    d.mkdir(parents=True)
    pq.write_table(table, d / "part-0.parquet")

    history = tmp_path / "history"
    for at, value in ((T0, 1.0), (T0 + 20 * MIN, 2.0), (T0 + 40 * MIN, 3.0)):
        values = np.zeros((2, ITEM.width), np.float32)
        values[:, ITEM.slot("i_trend")] = [value, value * 10]
        feature_history.append_snapshot(history, ITEM, ["a", "b"], values, at)
    # A file written exactly at d2's decision time is already servable then (<=).
    values = np.zeros((1, ITEM.width), np.float32)
    values[:, ITEM.slot("i_trend")] = 7.0
    feature_history.append_snapshot(history, ITEM, ["b"], values, T0 + 30 * MIN)

    out, report = build_training_set(
        tmp_path / "logs",
        None,
        LABELS,
        as_of_ms=T0 + 100 * 3600 * 1000,
        columns=["i_price", "i_trend"],
        history_root=history,
    )
    got = {(r["decision_id"], r["item_id"]): r["i_trend"] for r in out.to_pylist()}
    assert got == {
        ("d1", "a"): 1.0,
        ("d1", "b"): 10.0,  # the T0 value, not the T0+20/40 min ones
        ("d2", "a"): 2.0,
        ("d2", "b"): 7.0,
        ("d0", "a"): ITEM.feature("i_trend").default,  # nothing known yet: declared default
    }
    assert report.backfilled == {"i_trend": 4} and report.backfill_defaults == {"i_trend": 1}
    logged = {(r["decision_id"], r["item_id"]): r["i_price"] for r in out.to_pylist()}
    assert logged[("d1", "b")] == pytest.approx(float(records[0].item_features[1, ITEM.slot("i_price")]))


def test_label_specs_parse():
    assert parse_label("click=30m") == LabelWindow("click", ("click",), 1800.0)
    assert parse_label("buy:purchase,add_to_cart=24h").outcome_types == ("purchase", "add_to_cart")
    with pytest.raises(ValueError):
        parse_label("click")
