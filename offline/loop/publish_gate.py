"""The publish gate every use case shares, and the building blocks of binary retrains.

Gate. A candidate is published only if it is not worse than CURRENT on the same held-out
rows, metric by metric: ``compare(candidate, current, [GateMetric(...), ...])`` is True
when every metric passes (higher-is-better: ``candidate >= current - tolerance``;
lower-is-better: ``candidate <= current + tolerance``). A NaN on either side (nothing to
measure, e.g. no positive held out) fails the metric: nothing shown, nothing published.
Recommendation gates on NDCG@k, fraud on ROC AUC and recall at a review rate, conversion on
ROC AUC and log-loss.

Binary building blocks (fraud, conversion): ``binary_rows`` (the labelled, observable rows),
``time_split`` (whole decisions, by decision time), ``train_binary`` (LightGBM binary with
early stopping on the latest training decisions), ``platt_calibration`` (p = sigmoid(a *
margin + b), fit on the validation rows), and the metrics ``roc_auc``, ``log_loss`` and
``recall_at_rate``. Nothing here reads a simulated world: only training tables.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.stats import rankdata

from decision_service.features.definitions import REGISTRY
from offline.training.lightgbm_params import LightGbmSettings

# ---------------------------------------------------------------------------------------------
# The gate


@dataclass(frozen=True)
class GateMetric:
    """One metric of the gate: its key in the metric dicts, its direction, its slack."""

    name: str
    higher_is_better: bool = True
    tolerance: float = 0.0


def compare(
    candidate: Mapping[str, float], current: Mapping[str, float], metrics: Sequence[GateMetric]
) -> tuple[bool, str]:
    """(publish?, reason): True when the candidate passes every metric against CURRENT.

    The reason lists each check, e.g. ``"auc 0.9000 >= 0.8000 - 0.0; recall 0.5000 < 0.6000 - 0.0"``.
    NaN on either side fails that metric. On failure: ValueError for no metrics, KeyError
    for a metric missing from either dict.
    """
    if not metrics:
        raise ValueError("the publish gate needs at least one metric")
    ok, parts = True, []
    for m in metrics:
        for side, values in (("candidate", candidate), ("current", current)):
            if m.name not in values:
                raise KeyError(f"{side} metrics lack {m.name!r} (have {sorted(values)})")
        c, o = float(candidate[m.name]), float(current[m.name])
        if m.higher_is_better:
            passed = c >= o - m.tolerance
            parts.append(f"{m.name} {c:.4f} {'>=' if passed else '<'} {o:.4f} - {m.tolerance}")
        else:
            passed = c <= o + m.tolerance
            parts.append(f"{m.name} {c:.4f} {'<=' if passed else '>'} {o:.4f} + {m.tolerance}")
        ok = ok and passed
    return ok, "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# Metrics


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC via the rank-sum statistic (ties averaged); NaN without both classes."""
    labels = np.asarray(labels, bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def log_loss(labels: np.ndarray, probabilities: np.ndarray, eps: float = 1e-15) -> float:
    """Mean binary cross-entropy (natural log) of ``probabilities`` (clipped to [eps, 1 - eps])
    against ``labels`` (bool or 0/1, same length); NaN when empty."""
    y = np.asarray(labels, np.float64).ravel()
    p = np.clip(np.asarray(probabilities, np.float64).ravel(), eps, 1.0 - eps)
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} labels but {len(p)} probabilities")
    if len(y) == 0:
        return float("nan")
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def flag_count(rate: float, total: float | np.ndarray) -> float | np.ndarray:
    """How many of ``total`` rows (or total weight; an array: elementwise) a flag ``rate``
    flags: ``ceil(rate * total)``, with ``rate * total`` first rounded to 9 decimals so a
    product that is an integer up to float error (0.07 * 100 = 7.000000000000001) flags that
    integer. The one definition ``recall_at_rate`` and the online watch
    (offline/watch/online.py ``weighted_recall_at_rate``) share."""
    return np.ceil(np.round(rate * np.asarray(total, np.float64), 9))


def recall_at_rate(labels: np.ndarray, scores: np.ndarray, rate: float, seed: int = 0) -> float:
    """Share of the positives among the top ``flag_count(rate, n)`` scores (ties broken at
    random, seeded): the fraud caught when that share of payments is flagged."""
    labels = np.asarray(labels, bool)
    if not labels.any():
        return float("nan")
    n_flag = int(flag_count(rate, len(labels)))
    tie = np.random.default_rng(seed).random(len(labels))
    top = np.lexsort((tie, -np.asarray(scores, np.float64)))[:n_flag]
    return float(labels[top].sum() / labels.sum())


# ---------------------------------------------------------------------------------------------
# Rows, split, training, calibration


def time_split(decided_ms: np.ndarray, decision_ids: np.ndarray, share: float) -> np.ndarray:
    """True for rows of the latest ``share`` of decisions by decision time (whole decisions)."""
    ids, first = np.unique(decision_ids, return_index=True)
    order = np.argsort(decided_ms[first], kind="stable")
    n_hold = int(round(len(ids) * share))
    held = ids[order[len(ids) - n_hold :]] if n_hold else ids[:0]
    return np.isin(decision_ids, held)


def table_time_split(table: pa.Table, share: float) -> np.ndarray:
    """``time_split`` over a training table's ``decided_at`` and ``decision_id`` columns."""
    decided = table.column("decided_at").cast(pa.int64()).to_numpy()
    return time_split(decided, table.column("decision_id").to_numpy(zero_copy_only=False), share)


def feature_matrix(table: pa.Table, columns: Sequence[str]) -> np.ndarray:
    """float32 [rows, len(columns)]. On failure: ValueError naming the missing columns."""
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError("training set lacks columns " + ", ".join(missing) + " (rebuild it with them)")
    return (
        np.column_stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float32) for c in columns])
        if columns
        else np.zeros((table.num_rows, 0), np.float32)
    )


def labels_of(table: pa.Table, target: str) -> np.ndarray:
    """The boolean label column (NULL = False) as bool [rows]."""
    return pc.fill_null(table.column(target), False).to_numpy(zero_copy_only=False).astype(bool)


def binary_rows(
    table: pa.Table,
    target: str,
    exclude_actions: Sequence[str] = (),
    exclude_degraded: bool = True,
) -> pa.Table:
    """Labelled rows whose outcome could be observed: ``target`` not NULL, ``action`` (when the
    table has one) not in ``exclude_actions``, and not ``degraded`` (when excluded and present)."""
    keep = pc.is_valid(table.column(target))
    if exclude_actions and "action" in table.column_names:
        keep = pc.and_(keep, pc.invert(pc.is_in(table.column("action"), pa.array(list(exclude_actions)))))
    if exclude_degraded and "degraded" in table.column_names:
        keep = pc.and_(keep, pc.invert(pc.fill_null(table.column("degraded"), False)))
    return table.filter(keep)


def train_binary(
    train: pa.Table,
    y: np.ndarray,
    columns: Sequence[str],
    lgbm: LightGbmSettings,
    threads: int,
    seed: int,
    valid_share: float,
    *,
    categorical: Sequence[str] | None = None,
) -> tuple[lgb.Booster, dict[str, Any], np.ndarray]:
    """LightGBM binary on ``train`` (the training side of the split) with labels ``y`` [rows].

    The latest ``valid_share`` of its decisions is the early-stopping set; when either side
    would hold one class only, no rows are held out and it trains ``min(rounds, 100)`` fixed
    rounds. Returns (model, training info, valid mask bool [rows]: the early-stopping rows,
    e.g. to calibrate on). ``categorical``: default, the registry columns declared
    categorical (columns the registry does not know are numeric).
    """
    y = np.asarray(y, np.float32)
    valid = table_time_split(train, valid_share)
    if not valid.any() or valid.all() or np.ptp(y[valid]) == 0 or np.ptp(y[~valid]) == 0:
        valid = np.zeros(len(y), bool)  # too few positives to hold some out: fixed rounds
    x = feature_matrix(train, columns)
    names = list(columns)
    if categorical is None:
        by_column = REGISTRY.features_by_column
        categorical = [c for c in names if c in by_column and by_column[c].categorical]
    params = lgbm.params("binary", threads=threads, seed=seed)
    dtrain = lgb.Dataset(x[~valid], y[~valid], feature_name=names, categorical_feature=list(categorical))
    t0 = time.perf_counter()
    if valid.any():
        model = lgb.train(
            params,
            dtrain,
            num_boost_round=lgbm.num_boost_round,
            valid_sets=[lgb.Dataset(x[valid], y[valid], reference=dtrain)],
            callbacks=[lgb.early_stopping(lgbm.early_stopping_rounds, verbose=False)],
        )
    else:
        model = lgb.train(params, dtrain, num_boost_round=min(lgbm.num_boost_round, 100))
    gain = model.feature_importance("gain")
    return (
        model,
        {
            "train_rows": int((~valid).sum()),
            "valid_rows": int(valid.sum()),
            "positives": int(y.sum()),
            "best_iteration": int(model.best_iteration or model.current_iteration()),
            "top_features_by_gain": [names[j] for j in np.argsort(-gain)[:8]],
            "seconds": round(time.perf_counter() - t0, 2),
        },
        valid,
    )


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # stable for any z


def platt_calibration(
    margins: np.ndarray, labels: np.ndarray, max_iter: int = 100, tol: float = 1e-10
) -> tuple[float, float]:
    """Fits ``p = sigmoid(a * margin + b)`` to ``labels``; returns ``(a, b)``.

    ``margins``: float [n], the model's raw scores (for LightGBM binary, the log-odds:
    ``model.predict(x, raw_score=True)``); ``labels``: bool or 0/1 [n]. Newton's method with
    a backtracking line search on the cross-entropy against Platt's smoothed targets
    ((n_pos + 1) / (n_pos + 2) for positives, 1 / (n_neg + 2) for negatives), so a tiny or
    absent class gives finite, shrunk parameters instead of diverging. Apply it with
    ``platt_probability``. On failure: ValueError for empty, mismatched or non-finite input.
    """
    f = np.asarray(margins, np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if f.shape != y.shape:
        raise ValueError(f"{len(f)} margins but {len(y)} labels")
    if len(f) == 0:
        raise ValueError("cannot calibrate on no rows")
    if not np.isfinite(f).all():
        raise ValueError("margins hold non-finite values")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    t = np.where(y, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))

    def loss(a: float, b: float) -> float:  # mean of log(1 + e^z) - t z = cross-entropy vs t
        z = a * f + b
        return float(np.mean(np.logaddexp(0.0, z) - t * z))

    a, b = 0.0, math.log((n_pos + 1.0) / (n_neg + 1.0))
    current = loss(a, b)
    for _ in range(max_iter):
        p = _sigmoid(a * f + b)
        r, w = p - t, p * (1.0 - p)
        grad = np.array([np.mean(f * r), np.mean(r)])
        if np.abs(grad).max() < tol:
            break
        hess = np.array([[np.mean(f * f * w), np.mean(f * w)], [np.mean(f * w), np.mean(w)]])
        step = np.linalg.lstsq(hess, grad, rcond=None)[0]  # minimal-norm: constant margins too
        decrease = float(grad @ step)
        s = 1.0
        while s > 1e-12:
            na, nb = a - s * step[0], b - s * step[1]
            new = loss(na, nb)
            if new <= current - 1e-4 * s * decrease:
                break
            s *= 0.5
        else:
            break  # no descent left: converged as far as floats go
        a, b, improved = na, nb, current - new
        current = new
        if improved < tol * max(1.0, abs(current)):
            break
    return float(a), float(b)


def platt_probability(margins: np.ndarray, a: float, b: float) -> np.ndarray:
    """float64 [n]: ``sigmoid(a * margins + b)``."""
    return _sigmoid(a * np.asarray(margins, np.float64) + b)
