"""The shared publish gate and binary building blocks, and the generic labelled-rows builder
on a use case the repo does not know (its features are not in the registry)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from decision_service.features.definitions import REGISTRY
from decision_service.features.registry import Feature
from offline.loop import publish_gate, retrain
from offline.loop.publish_gate import (
    GateMetric,
    binary_rows,
    compare,
    log_loss,
    platt_calibration,
    platt_probability,
    train_binary,
)
from offline.loop.training_set import LabelWindow, build_labelled_rows
from offline.training.lightgbm_params import LightGbmSettings

# --- the gate ---------------------------------------------------------------------------------

AUC_RECALL = (GateMetric("auc", True, 0.0), GateMetric("recall", True, 0.0))


def test_compare_every_metric_must_pass_and_says_why():
    ok, reason = compare({"auc": 0.9, "recall": 0.7}, {"auc": 0.8, "recall": 0.6}, AUC_RECALL)
    assert ok and reason == "auc 0.9000 >= 0.8000 - 0.0; recall 0.7000 >= 0.6000 - 0.0"
    ok, reason = compare({"auc": 0.9, "recall": 0.5}, {"auc": 0.8, "recall": 0.6}, AUC_RECALL)
    assert not ok and reason == "auc 0.9000 >= 0.8000 - 0.0; recall 0.5000 < 0.6000 - 0.0"
    # tolerance: a little worse is still published
    assert compare({"auc": 0.79}, {"auc": 0.8}, [GateMetric("auc", True, 0.02)])[0]
    assert not compare({"auc": 0.77}, {"auc": 0.8}, [GateMetric("auc", True, 0.02)])[0]


def test_compare_lower_is_better():
    gate = [GateMetric("log_loss", higher_is_better=False, tolerance=0.01)]
    ok, reason = compare({"log_loss": 0.305}, {"log_loss": 0.30}, gate)
    assert ok and reason == "log_loss 0.3050 <= 0.3000 + 0.01"
    ok, reason = compare({"log_loss": 0.32}, {"log_loss": 0.30}, gate)
    assert not ok and reason == "log_loss 0.3200 > 0.3000 + 0.01"


def test_compare_nan_is_not_published():
    nan = float("nan")
    assert compare({"auc": nan}, {"auc": 0.5}, AUC_RECALL[:1])[0] is False
    assert compare({"auc": 0.9}, {"auc": nan}, AUC_RECALL[:1])[0] is False
    assert compare({"ll": nan}, {"ll": 0.3}, [GateMetric("ll", False)])[0] is False
    ok, reason = compare({"auc": 0.9, "recall": nan}, {"auc": 0.8, "recall": 0.6}, AUC_RECALL)
    assert not ok and "recall nan < 0.6000" in reason


def test_compare_refuses_a_gate_it_cannot_evaluate():
    with pytest.raises(ValueError, match="at least one metric"):
        compare({"auc": 1.0}, {"auc": 0.5}, [])
    with pytest.raises(KeyError, match="current metrics lack 'recall'"):
        compare({"auc": 1.0, "recall": 1.0}, {"auc": 0.5}, AUC_RECALL)


def test_moved_helpers_are_re_exported():
    from offline.training.train_fraud import roc_auc

    assert roc_auc is publish_gate.roc_auc
    assert retrain.recall_at_rate is publish_gate.recall_at_rate
    assert retrain.time_split is publish_gate.time_split
    assert roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)


# --- metrics ----------------------------------------------------------------------------------


def test_log_loss():
    assert log_loss(np.array([1, 0]), np.array([0.8, 0.4])) == pytest.approx(
        -(math.log(0.8) + math.log(0.6)) / 2
    )
    assert log_loss(np.array([True]), np.array([0.0])) == pytest.approx(-math.log(1e-15))  # clipped
    assert log_loss(np.array([0, 1]), np.array([0.0, 1.0])) == pytest.approx(-math.log(1 - 1e-15), abs=1e-12)
    assert math.isnan(log_loss(np.array([]), np.array([])))
    with pytest.raises(ValueError, match="2 labels but 3"):
        log_loss(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))


# --- calibration ------------------------------------------------------------------------------


def test_platt_recovers_known_parameters():
    rng = np.random.default_rng(3)
    margins = rng.normal(0.0, 2.0, 60_000)
    labels = rng.random(len(margins)) < 1.0 / (1.0 + np.exp(-(1.5 * margins - 0.7)))
    a, b = platt_calibration(margins, labels)
    assert a == pytest.approx(1.5, abs=0.05) and b == pytest.approx(-0.7, abs=0.05)
    # an overconfident model (margins 3x too large) is shrunk back
    a3, b3 = platt_calibration(3.0 * margins, labels)
    assert a3 == pytest.approx(0.5, abs=0.02) and b3 == pytest.approx(-0.7, abs=0.05)
    assert log_loss(labels, platt_probability(3.0 * margins, a3, b3)) < log_loss(
        labels, 1.0 / (1.0 + np.exp(-3.0 * margins))
    )


def test_platt_is_robust_when_a_class_is_tiny_or_absent():
    rng = np.random.default_rng(0)
    margins = rng.normal(-3.0, 1.0, 2000)
    one = np.zeros(2000, bool)
    one[np.argmax(margins)] = True  # a single, perfectly separated positive
    a, b = platt_calibration(margins, one)
    p = platt_probability(margins, a, b)
    assert np.isfinite([a, b]).all() and p.min() > 0.0 and p.max() < 1.0
    a0, b0 = platt_calibration(margins, np.zeros(2000, bool))  # no positive at all
    assert np.isfinite([a0, b0]).all()
    assert platt_probability(margins, a0, b0).mean() == pytest.approx(1 / 2002, rel=0.05)
    ac, bc = platt_calibration(np.full(50, 2.0), np.arange(50) < 10)  # constant margins
    # the mean smoothed target: 10 positives at 11/12, 40 negatives at 1/42
    assert platt_probability(np.array([2.0]), ac, bc)[0] == pytest.approx(
        (10 * 11 / 12 + 40 / 42) / 50, rel=1e-6
    )
    with pytest.raises(ValueError, match="3 margins but 2 labels"):
        platt_calibration(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="no rows"):
        platt_calibration(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="non-finite"):
        platt_calibration(np.array([0.0, np.nan]), np.array([0, 1]))


# --- rows and training ------------------------------------------------------------------------


def binary_table(n: int, seed: int = 0) -> tuple[pa.Table, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, 2)).astype(np.float32)
    y = rng.random(n) < 0.1 + 0.6 * x[:, 0]
    return pa.table(
        {
            "decision_id": [f"d{i:05d}" for i in range(n)],
            "decided_at": pa.array((1_780_000_000_000 + np.arange(n) * 1000).astype("datetime64[ms]")),
            "z_signal": x[:, 0],
            "z_noise": x[:, 1],
            "label": y,
        }
    ), y


def test_train_binary_returns_the_early_stopping_rows():
    table, y = binary_table(2000)
    lgbm = LightGbmSettings(num_boost_round=40, early_stopping_rounds=5, min_data_in_leaf=20)
    model, info, valid = train_binary(table, y, ("z_signal", "z_noise"), lgbm, 1, 7, 0.2)
    assert valid.dtype == bool and valid.sum() == 400 and valid[-400:].all()  # the latest decisions
    assert info["train_rows"] == 1600 and info["valid_rows"] == 400 and info["positives"] == int(y.sum())
    assert model.feature_name() == ["z_signal", "z_noise"] and info["top_features_by_gain"][0] == "z_signal"
    margins = model.predict(np.column_stack([table["z_signal"], table["z_noise"]])[valid], raw_score=True)
    a, b = platt_calibration(margins, y[valid])
    assert np.isfinite([a, b]).all()
    # one class on a side: nothing held out, fixed rounds
    _, info, valid = train_binary(table, np.r_[y[:1600], np.zeros(400, bool)], ("z_signal",), lgbm, 1, 7, 0.2)
    assert not valid.any() and info["valid_rows"] == 0


def test_binary_rows_keeps_labelled_observable_rows():
    table = pa.table(
        {
            "y": pa.array([True, None, False, True, False]),
            "action": ["APPROVE", "APPROVE", "DECLINE", "REVIEW", "APPROVE"],
            "degraded": pa.array([False, False, False, None, True]),
        }
    )
    assert binary_rows(table, "y", ("DECLINE",)).column("y").to_pylist() == [True, True]
    assert binary_rows(table, "y", exclude_degraded=False).num_rows == 4
    assert binary_rows(table.drop_columns(["action", "degraded"]), "y", ("DECLINE",)).num_rows == 4


# --- the generic labelled-rows builder ----------------------------------------------------------

T0 = 1_780_000_000_000
DAY = 86_400_000
USE_CASE = "signup"
LABEL = LabelWindow("signed_up", ("signed_up",), 7 * 86400.0)
FEATURES = {
    "s_visits": Feature("s_visits", "visits in 30 days", default=-1.0),
    "s_cart": Feature("s_cart", "items in the cart", default=2.5),
    "s_new": Feature("s_new", "a new column of a later model", default=7.0),
}
KEEP = {"logged_probability": "probability", "user": "user_id"}
_NAMES = pa.list_(pa.dictionary(pa.int16(), pa.string()))
_DEGRADED = pa.list_(pa.struct([("stage", pa.string()), ("reason", pa.string())]))


def decision(did: str, at_ms: int, names=("s_visits", "s_cart"), values=(1.0, 0.0), degraded=()) -> dict:
    return {
        "decision_id": did,
        "decided_at": at_ms,
        "user_id": f"u-{did}",
        "model_version": "v0001",
        "degraded": [{"stage": s, "reason": r} for s, r in degraded],
        "probability": 0.25,
        "feature_names": None if values is None else list(names),
        "features": None if values is None else list(values),
    }


def write_decisions(root: Path, rows: list[dict], hour: int = 0, drop: tuple[str, ...] = ()) -> Path:
    d = root / f"decisions/use_case={USE_CASE}/date=2026-05-28/hour={hour:02d}"
    d.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "decision_id": pa.array([r["decision_id"] for r in rows]),
            "decided_at": pa.array([r["decided_at"] for r in rows], pa.int64()).cast(
                pa.timestamp("ms", tz="UTC")
            ),
            "user_id": pa.array([r["user_id"] for r in rows]),
            "model_version": pa.array([r["model_version"] for r in rows]),
            "degraded": pa.array([r["degraded"] for r in rows], _DEGRADED),
            "probability": pa.array([r["probability"] for r in rows], pa.float32()),
            "feature_names": pa.array([r["feature_names"] for r in rows], _NAMES),
            "features": pa.array([r["features"] for r in rows], pa.list_(pa.float32())),
        }
    ).drop_columns(list(drop))
    path = d / "part-0.parquet"
    pq.write_table(table, path)
    return path


def write_outcomes(root: Path, rows: list[tuple[str, str, int, int]]) -> None:
    d = root / f"outcomes/use_case={USE_CASE}/date=2026-05-28/hour=00"
    d.mkdir(parents=True)
    ts = lambda i: pa.array([r[i] for r in rows], pa.int64()).cast(pa.timestamp("ms", tz="UTC"))  # noqa: E731
    pq.write_table(
        pa.table(
            {
                "decision_id": [r[0] for r in rows],
                "item_id": pa.array([None] * len(rows), pa.string()),
                "type": [r[1] for r in rows],
                "occurred_at": ts(2),
                "received_at": ts(3),
                "use_case": [USE_CASE] * len(rows),
            }
        ),
        d / "part-0.parquet",
    )


def test_labelled_rows_of_a_use_case_outside_the_registry(tmp_path: Path):
    assert not set(FEATURES) & set(REGISTRY.features_by_column)
    as_of = T0 + 28 * DAY
    write_decisions(
        tmp_path,
        [
            decision("a-pos", T0, values=(3.0, 1.0)),
            decision("b-neg", T0 + DAY),
            decision("c-late", T0 + 2 * DAY),
            decision("d-young", T0 + 25 * DAY),
            decision("e-norow", T0 + 3 * DAY, values=None),
        ],
    )
    write_decisions(
        tmp_path,
        [
            decision("a-pos", T0 + 1, values=(0.0, 0.0)),  # logged twice: the earliest counts
            decision("f-other", T0 + 4 * DAY, names=("s_new", "s_visits"), values=(9.0, 4.0)),
            decision("g-future", T0 + 5 * DAY),
            decision("h-degraded", T0 + 6 * DAY, degraded=[("hydrate", "timeout")]),
        ],
        hour=1,
    )
    write_outcomes(
        tmp_path,
        [
            ("a-pos", "signed_up", T0 + 2 * DAY, T0 + 2 * DAY),
            ("a-pos", "visited", T0 + DAY, T0 + DAY),  # not a label type
            ("c-late", "signed_up", T0 + 10 * DAY, T0 + 10 * DAY),  # after its window
            ("g-future", "signed_up", T0 + 6 * DAY, as_of + 1),  # received after as_of
            (
                "d-young",
                "signed_up",
                T0 + 26 * DAY,
                T0 + 26 * DAY,
            ),  # a positive, but the window is open: waits
        ],
    )
    out = tmp_path / "train" / "signup.parquet"
    table, report = build_labelled_rows(
        tmp_path, USE_CASE, LABEL, out, as_of, keep=KEEP, features=FEATURES, empty_columns=("s_visits",)
    )

    assert table.column_names == [
        "decision_id", "decided_at", "model_version", "degraded", "signed_up", "verdict",
        "logged_probability", "user", "s_visits", "s_cart", "s_new",
    ]  # fmt: skip
    rows = {r["decision_id"]: r for r in table.to_pylist()}
    assert {d: r["signed_up"] for d, r in rows.items()} == {
        "a-pos": True, "b-neg": False, "c-late": False, "f-other": False, "g-future": False, "h-degraded": False,
    }  # fmt: skip
    assert (report.decisions_read, report.decisions_labelled, report.decisions_immature) == (8, 6, 1)
    assert report.positives == {"signed_up": 1} and report.late_outcomes == 1
    assert report.skipped == {"no_model_row": 1} and report.verdicts == {} and report.layouts == 2
    assert (rows["a-pos"]["s_visits"], rows["a-pos"]["s_cart"], rows["a-pos"]["s_new"]) == (3.0, 1.0, 7.0)
    assert (rows["f-other"]["s_visits"], rows["f-other"]["s_cart"], rows["f-other"]["s_new"]) == (
        4.0,
        2.5,
        9.0,
    )
    assert report.backfill_defaults == {"s_new": 5, "s_cart": 1}
    assert rows["h-degraded"]["degraded"] and not rows["b-neg"]["degraded"]
    assert rows["a-pos"]["user"] == "u-a-pos" and rows["a-pos"]["logged_probability"] == 0.25
    assert rows["a-pos"]["verdict"] is None
    assert table.schema.field("s_new").type == pa.float32()
    meta = table.schema.metadata
    assert meta[b"use_case"] == b"signup" and meta[b"feature_columns"] == b'["s_visits", "s_cart", "s_new"]'
    assert pq.read_table(out).equals(table) and report.path == str(out)
    assert [p.name for p in out.parent.iterdir()] == ["signup.parquet"]  # no temp left

    # A verdict is final at once, even inside the window; the latest received wins.
    table, report = build_labelled_rows(
        tmp_path, USE_CASE, LABEL, None, as_of, verdicts={"approved": True, "rejected": False},
        features=FEATURES,
    )  # fmt: skip
    assert "d-young" not in table.column("decision_id").to_pylist()  # no verdict: waits
    (tmp_path / "outcomes").rename(tmp_path / "outcomes-old")
    write_outcomes(
        tmp_path,
        [
            ("d-young", "rejected", T0 + 25 * DAY + 5, T0 + 26 * DAY),
            ("d-young", "approved", T0 + 25 * DAY + 1, T0 + 27 * DAY),  # received last: wins
            ("a-pos", "signed_up", T0 + 2 * DAY, T0 + 2 * DAY),
            ("a-pos", "rejected", T0 + DAY, T0 + DAY),  # beats the positive in the window
        ],
    )
    table, report = build_labelled_rows(
        tmp_path, USE_CASE, LABEL, None, as_of, verdicts={"approved": True, "rejected": False},
        features=FEATURES,
    )  # fmt: skip
    rows = {r["decision_id"]: r for r in table.to_pylist()}
    assert (rows["d-young"]["signed_up"], rows["d-young"]["verdict"]) == (True, "approved")
    assert (rows["a-pos"]["signed_up"], rows["a-pos"]["verdict"]) == (False, "rejected")
    assert report.verdicts == {"approved": 1, "rejected": 1} and report.decisions_immature == 0


def test_labelled_rows_without_logs_is_an_empty_typed_table(tmp_path: Path):
    table, report = build_labelled_rows(
        tmp_path,
        USE_CASE,
        LABEL,
        None,
        T0,
        keep=KEEP,
        features=FEATURES,
        empty_columns=("s_visits", "s_cart"),
    )
    assert table.num_rows == 0 and report.positives == {"signed_up": 0}
    assert (
        table.column_names[-2:] == ["s_visits", "s_cart"]
        and table.schema.field("signed_up").type == pa.bool_()
    )
    assert "logged_probability" in table.column_names


def test_labelled_rows_errors_name_the_problem(tmp_path: Path):
    with pytest.raises(ValueError, match="needs at least one outcome type"):
        build_labelled_rows(tmp_path, USE_CASE, LabelWindow("signed_up", (), 1.0))
    with pytest.raises(ValueError, match="clash"):
        build_labelled_rows(tmp_path, USE_CASE, LABEL, keep={"verdict": "user_id"})

    unknown = tmp_path / "unknown"
    write_decisions(unknown, [decision("a", T0, names=("s_visits", "s_mystery"))])
    with pytest.raises(ValueError, match="not declared in the given features: s_mystery"):
        build_labelled_rows(unknown, USE_CASE, LABEL, None, T0 + 30 * DAY, features=FEATURES)
    with pytest.raises(ValueError, match="not declared in the feature registry: s_visits"):
        build_labelled_rows(unknown, USE_CASE, LABEL, None, T0 + 30 * DAY)

    ragged = tmp_path / "ragged"
    path = write_decisions(ragged, [decision("ok", T0), decision("bad", T0, values=(1.0, 2.0, 3.0))])
    with pytest.raises(ValueError, match=re.escape(f"{path}: decision 'bad' logged 3 feature values for 2")):
        build_labelled_rows(ragged, USE_CASE, LABEL, None, T0 + 30 * DAY, features=FEATURES)

    lacking = tmp_path / "lacking"
    path = write_decisions(lacking, [decision("a", T0)], drop=("feature_names",))
    with pytest.raises(
        ValueError, match=re.escape(f"{path}: the signup decision log lacks column(s) feature_names")
    ):
        build_labelled_rows(lacking, USE_CASE, LABEL, None, T0 + 30 * DAY, features=FEATURES)

    good = tmp_path / "good"
    write_decisions(good, [decision("a", T0)])
    with pytest.raises(ValueError, match="keep column 'p'.*'no_such_column'"):
        build_labelled_rows(good, USE_CASE, LABEL, None, T0, keep={"p": "no_such_column"}, features=FEATURES)


def test_kind_an_outcome_before_its_decision_never_labels_it(tmp_path: Path):
    """An outcome stamped before its decision (a broken client clock, a replay) could not have
    been caused by it: it used to label the decision positive (no lower bound on the window)."""
    as_of = T0 + 28 * DAY
    write_decisions(tmp_path, [decision("x-before", T0 + DAY), decision("y-both", T0 + DAY)])
    d = tmp_path / f"outcomes/use_case={USE_CASE}/date=2026-05-28/hour=00"
    d.mkdir(parents=True)
    rows = [  # (decision, occurred, decided)
        ("x-before", T0, T0 + DAY),
        ("y-both", T0, T0 + DAY),
        ("y-both", T0 + 2 * DAY, T0 + DAY),
    ]
    ts = lambda v: pa.array(v, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))  # noqa: E731
    pq.write_table(
        pa.table({
            "decision_id": [r[0] for r in rows],
            "item_id": pa.array([None] * 3, pa.string()),
            "type": ["signed_up"] * 3,
            "occurred_at": ts([r[1] for r in rows]),
            "received_at": ts([T0 + 3 * DAY] * 3),
            "use_case": [USE_CASE] * 3,
            "decided_at": ts([r[2] for r in rows]),
        }),
        d / "part-0.parquet",
    )
    table, _ = build_labelled_rows(tmp_path, USE_CASE, LABEL, None, as_of, keep=KEEP, features=FEATURES)
    labels = {r["decision_id"]: r["signed_up"] for r in table.to_pylist()}
    assert labels == {"x-before": False, "y-both": True}
