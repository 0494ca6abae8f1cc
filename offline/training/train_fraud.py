"""Trains and evaluates the fraud model on a payments world with a time-based split.

Timeline (days after the world start; ``cut`` = end - ``eval_days``):
  train rows   [train_start, cut - maturity): only payments whose labels had matured by
               ``cut``; label = chargeback arrived by ``cut``. The last ``valid_share`` of them
               (by time) is the early-stopping set.
  eval rows    [cut, end): held out; label = chargeback ever (the eventual truth).
Neighbour features of a row come from an index built "as of" a time T (labelled payments
older than T - maturity, labels known at T): T = train_start for training rows, T = cut for
evaluation rows and T = end for serving, as the service would have had them.

Metrics: ROC AUC and average precision of the model against a rules-only baseline (the
points a hand-written rule set gives: new device, foreign country, amount far above usual,
bursts, risky merchant, large amount).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np

from decision_service.features.definitions import FRAUD_MODEL_FEATURES, FRAUD_NEIGHBOURS
from decision_service.features.fraud import neighbour_space
from decision_service.retrieval.neighbours import NeighbourIndex
from offline.features.fraud_features import FraudHistory
from offline.loop.publish_gate import roc_auc  # the shared metric; re-exported here
from offline.simulation.fraud_world import FraudWorld
from offline.simulation.world import DAY_MS
from offline.training.lightgbm_params import LightGbmSettings, categorical_columns

FRAUD_TRAIN_LGBM = LightGbmSettings(
    learning_rate=0.05, num_leaves=15, min_data_in_leaf=40, num_boost_round=400, early_stopping_rounds=40
)


MIN_TRAIN_POSITIVES = 10
"""Fraud labels a training window needs (arrived by the cut); fewer: ValueError, nothing published."""
MIN_EVAL_POSITIVES = 5
"""Fraud payments the held-out window needs for its metrics to mean anything."""


@dataclass(frozen=True)
class FraudTrainConfig:
    train_start_day: float = 20.0
    eval_days: float = 14.0
    maturity_days: float = 10.0
    k_neighbours: int = 50
    max_index_rows: int = 50_000
    valid_share: float = 0.2
    lgbm: LightGbmSettings = field(default_factory=lambda: FRAUD_TRAIN_LGBM)
    threads: int = 2
    seed: int = 7


@dataclass
class FraudTrainResult:
    model: lgb.Booster
    neighbours: NeighbourIndex  # serving index (as of the world's end)
    metrics: dict[str, Any]
    training: dict[str, Any]
    feature_medians: dict[str, float]
    feature_minima: dict[str, float]


def build_neighbour_index(
    history: FraudHistory, asof_ms: int, cfg: FraudTrainConfig, columns: tuple[str, ...]
) -> NeighbourIndex:
    """Index of payments older than ``asof - maturity`` with the labels known at ``asof``."""
    w = history.world
    rows = np.flatnonzero(w.occurred_ms < asof_ms - int(cfg.maturity_days * DAY_MS))
    if len(rows) > cfg.max_index_rows:
        rows = np.sort(np.random.default_rng(cfg.seed).choice(rows, cfg.max_index_rows, replace=False))
    labels = (w.chargeback_ms[rows] >= 0) & (w.chargeback_ms[rows] <= asof_ms)
    space = neighbour_space(history.model_matrix(rows, columns), columns)
    return NeighbourIndex.build(space, labels, cfg.k_neighbours)


def with_neighbours(matrix: np.ndarray, index: NeighbourIndex, columns: tuple[str, ...]) -> np.ndarray:
    """Fills the FRAUD_NEIGHBOURS columns of ``matrix`` (in place) from ``index``."""
    nn = index.query(neighbour_space(matrix, columns))
    for j, col in enumerate(FRAUD_NEIGHBOURS.columns):
        if col in columns:
            matrix[:, columns.index(col)] = nn[:, j]
    return matrix


RULES: tuple[tuple[str, str, float], ...] = (
    ("r_new_device", ">", 0.0),
    ("r_foreign_country", ">", 0.0),
    ("r_amount_z_user", ">", 2.0),
    ("v_user_count_1h", ">=", 3.0),
    ("m_chargeback_rate_90d", ">", 0.03),
    ("r_amount_log", ">", float(np.log1p(500.0))),
)
"""The rules-only baseline: one point per rule that fires (feature, comparison, threshold)."""


def rules_baseline_score(matrix: np.ndarray, columns: tuple[str, ...]) -> np.ndarray:
    """Points of a hand-written rule set (the rules-only baseline the model must beat); a
    rule whose feature the model does not have (left out by the project's payments table)
    gives no points."""
    points = np.zeros(len(matrix), np.float64)
    for name, op, threshold in RULES:
        if name in columns:
            x = matrix[:, columns.index(name)]
            points += (x > threshold) if op == ">" else (x >= threshold)
    return points


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    hits = np.asarray(labels, bool)[order]
    if not hits.any():
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits].mean())


@dataclass(frozen=True)
class FraudSplit:
    """The training and held-out payments of a world under a config (see the module docstring)."""

    start: int  # ms: the first training payment's earliest time
    cut: int  # ms: the held-out window's start; training labels are the ones arrived by then
    train_rows: np.ndarray
    y_train: np.ndarray
    eval_rows: np.ndarray
    y_eval: np.ndarray


def fraud_split(world: FraudWorld, cfg: FraudTrainConfig) -> FraudSplit:
    """The split, checked before anything is trained: ValueError (naming the settings) when
    the world is too short, when either side has too few fraud labels to learn or judge
    from, or when the neighbour index at the training start has fewer than k labelled rows."""
    start = world.day_ms(cfg.train_start_day)
    cut = world.now_ms - int(cfg.eval_days * DAY_MS)
    mature_before = cut - int(cfg.maturity_days * DAY_MS)
    if mature_before <= start:
        raise ValueError("world too short for the split: train_start + maturity + eval_days >= days")
    t = world.occurred_ms
    train_rows = np.flatnonzero((t >= start) & (t < mature_before))
    y_train = (world.chargeback_ms[train_rows] >= 0) & (world.chargeback_ms[train_rows] <= cut)
    eval_rows = np.flatnonzero(t >= cut)
    y_eval = world.chargeback_ms[eval_rows] >= 0
    # a model of (almost) one class is no model: say so instead of publishing it
    if int(y_train.sum()) < MIN_TRAIN_POSITIVES or int(y_eval.sum()) < MIN_EVAL_POSITIVES:
        raise ValueError(
            f"too few fraud labels for the split: {int(y_train.sum())} arrived by the cut among the "
            f"{len(train_rows):,} training payments (at least {MIN_TRAIN_POSITIVES}), "
            f"{int(y_eval.sum())} among the {len(eval_rows):,} held-out ones "
            f"(at least {MIN_EVAL_POSITIVES}); "
            "check the label column and label times, or move the split (settings.fraud: "
            "train_start_day, eval_days, maturity_days)"
        )
    indexed = int((t < start - int(cfg.maturity_days * DAY_MS)).sum())
    if indexed < cfg.k_neighbours:
        raise ValueError(
            f"settings.fraud k_neighbours {cfg.k_neighbours} is more than the {indexed:,} payments the "
            "neighbour index has at the training start (older than train_start_day - maturity_days): "
            "lower k_neighbours or raise train_start_day"
        )
    return FraudSplit(start, cut, train_rows, y_train, eval_rows, y_eval)


def train_fraud(
    world: FraudWorld,
    cfg: FraudTrainConfig = FraudTrainConfig(),
    columns: tuple[str, ...] = FRAUD_MODEL_FEATURES,
    history: FraudHistory | None = None,
) -> FraudTrainResult:
    t0 = time.perf_counter()
    split = fraud_split(world, cfg)
    history = history or FraudHistory(world)
    start, cut = split.start, split.cut
    mature_before = cut - int(cfg.maturity_days * DAY_MS)
    train_rows, y_train, eval_rows, y_eval = split.train_rows, split.y_train, split.eval_rows, split.y_eval
    x_train = with_neighbours(
        history.model_matrix(train_rows, columns),
        build_neighbour_index(history, start, cfg, columns),
        columns,
    )
    x_eval = with_neighbours(
        history.model_matrix(eval_rows, columns), build_neighbour_index(history, cut, cfg, columns), columns
    )

    n_valid = max(1, int(len(train_rows) * cfg.valid_share))  # rows are time-sorted: the latest
    names = list(columns)
    categorical = categorical_columns(names)
    params = cfg.lgbm.params("binary", threads=cfg.threads, seed=cfg.seed)
    dtrain = lgb.Dataset(
        x_train[:-n_valid],
        y_train[:-n_valid],
        feature_name=names,
        categorical_feature=categorical,
        free_raw_data=True,
    )
    dvalid = lgb.Dataset(x_train[-n_valid:], y_train[-n_valid:], reference=dtrain)
    model = lgb.train(
        params,
        dtrain,
        num_boost_round=cfg.lgbm.num_boost_round,
        valid_sets=[dvalid],
        callbacks=[lgb.early_stopping(cfg.lgbm.early_stopping_rounds, verbose=False)],
    )
    train_s = time.perf_counter() - t0

    p_eval = model.predict(x_eval, num_threads=cfg.threads)
    rules = rules_baseline_score(x_eval, columns)
    truth = world.is_fraud[eval_rows]
    metrics: dict[str, Any] = {
        "eval_rows": int(len(eval_rows)),
        "eval_positives": int(y_eval.sum()),
        "model_auc": round(roc_auc(y_eval, p_eval), 4),
        "rules_auc": round(roc_auc(y_eval, rules), 4),
        "model_average_precision": round(average_precision(y_eval, p_eval), 4),
        "rules_average_precision": round(average_precision(y_eval, rules), 4),
        "model_auc_vs_truth": round(roc_auc(truth, p_eval), 4),
        "eval_window_days": [round((cut - world.start_ms) / DAY_MS, 2), world.config.days],
        "eval_labels": "chargeback ever (eventual truth), not only the ones arrived by the cut",
    }
    for name, i in (("account_takeover", 1), ("card_testing", 2), ("risky_merchant", 3)):
        sel = (world.pattern[eval_rows] == i) | ~truth
        if (world.pattern[eval_rows] == i).any():  # a project's payments have no patterns
            metrics[f"model_auc_{name}"] = round(roc_auc(truth[sel], p_eval[sel]), 4)
    gain = model.feature_importance("gain")
    training = {
        "rows": int(len(train_rows)),
        "positives": int(y_train.sum()),
        "valid_rows": n_valid,
        "best_iteration": int(model.best_iteration),
        "window_days": [cfg.train_start_day, round((mature_before - world.start_ms) / DAY_MS, 2)],
        "labels_as_of_day": round((cut - world.start_ms) / DAY_MS, 2),
        "top_features_by_gain": [names[i] for i in np.argsort(-gain)[:10]],
        "config": asdict(cfg),
        "seconds": round(train_s, 2),
    }
    medians = {c: float(v) for c, v in zip(names, np.median(x_train, axis=0).tolist(), strict=True)}
    serving_index = build_neighbour_index(history, world.now_ms, cfg, columns)
    minima = {c: float(v) for c, v in zip(names, np.min(x_train, axis=0).tolist(), strict=True)}
    return FraudTrainResult(model, serving_index, metrics, training, medians, minima)
