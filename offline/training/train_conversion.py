"""Trains, calibrates, evaluates and publishes a conversion model (LightGBM binary + Platt).

The input is a table with one float32 column per model column (features.conversion.FEATURES),
a boolean label, ``decided_at`` and ``decision_id`` (the split is by time): the training set
built from the logs (offline/loop/retrain_conversion.py) or simulated history (bootstrap).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa

from decision_service.features.conversion import FEATURES, PROFILE_COLUMNS, REQUEST_COLUMNS
from decision_service.models.conversion_artifacts import ConversionArtifacts, save_conversion_artifacts
from decision_service.models.registry import ModelRegistry, ModelVersion
from offline.loop.publish_gate import (
    feature_matrix,
    labels_of,
    log_loss,
    platt_calibration,
    platt_probability,
    roc_auc,
    train_binary,
)
from offline.training.lightgbm_params import LightGbmSettings

USE_CASE = "conversion"
CONVERSION_LGBM = LightGbmSettings(
    learning_rate=0.05, num_leaves=15, min_data_in_leaf=20, num_boost_round=300, early_stopping_rounds=30
)
ALL_COLUMNS: tuple[str, ...] = PROFILE_COLUMNS + REQUEST_COLUMNS
CATEGORICAL: tuple[str, ...] = tuple(c for c in ALL_COLUMNS if FEATURES[c].categorical)


@dataclass(frozen=True)
class ConversionTrainConfig:
    columns: tuple[str, ...] = ALL_COLUMNS
    target: str = "converted"
    valid_share: float = 0.25  # the latest of the training rows: early stopping + calibration
    lgbm: LightGbmSettings = field(default_factory=lambda: CONVERSION_LGBM)
    threads: int = 2
    seed: int = 11


@dataclass(frozen=True)
class FittedConversion:
    model: lgb.Booster
    calibration: tuple[float, float]  # (a, b): p = sigmoid(a * margin + b)
    base_rate: float
    medians: dict[str, float]
    info: dict[str, Any]


def fit_conversion(train: pa.Table, cfg: ConversionTrainConfig = ConversionTrainConfig()) -> FittedConversion:
    """LightGBM on the earlier rows, early-stopped and Platt-calibrated on the latest
    ``valid_share`` (all rows when they hold one class only). On failure: ValueError for one
    class only or a column the table lacks."""
    y = labels_of(train, cfg.target)
    if y.all() or not y.any():
        raise ValueError(f"the conversion rows hold one class only ({int(y.sum())} of {len(y)} positive)")
    unknown = [c for c in cfg.columns if c not in FEATURES]
    if unknown:
        raise ValueError("not conversion inputs: " + ", ".join(unknown))
    categorical = [c for c in cfg.columns if c in CATEGORICAL]
    model, info, valid = train_binary(
        train, y, cfg.columns, cfg.lgbm, cfg.threads, cfg.seed, cfg.valid_share, categorical=categorical
    )
    x = feature_matrix(train, cfg.columns)
    rows = valid if valid.any() else np.ones(len(y), bool)
    margins = np.asarray(model.predict(x[rows], raw_score=True, num_threads=cfg.threads), np.float64)
    calibration = platt_calibration(margins, y[rows])
    medians = {c: float(v) for c, v in zip(cfg.columns, np.median(x, axis=0), strict=True)}
    info.update(calibration_rows=int(rows.sum()), calibration={"a": calibration[0], "b": calibration[1]})
    return FittedConversion(model, calibration, float(y.mean()), medians, info)


def predict_calibrated(
    model: lgb.Booster, calibration: tuple[float, float], table: pa.Table, threads: int = 2
) -> np.ndarray:
    """float64 [rows]: the calibrated probability the service would answer for each row."""
    x = feature_matrix(table, model.feature_name())
    margins = np.asarray(model.predict(x, raw_score=True, num_threads=threads), np.float64)
    return platt_probability(margins, *calibration)


def evaluate(probability: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """ROC AUC, log-loss, and calibration in the large (mean predicted vs observed rate)."""
    labels = np.asarray(labels, bool)
    if len(labels) == 0:
        return {"auc": float("nan"), "log_loss": float("nan"), "rows": 0, "positives": 0}
    return {
        "auc": round(roc_auc(labels, probability), 4),
        "log_loss": round(log_loss(labels, probability), 4),
        "mean_probability": round(float(np.mean(probability)), 4),
        "positive_rate": round(float(labels.mean()), 4),
        "rows": int(len(labels)),
        "positives": int(labels.sum()),
    }


def publish_conversion(
    registry: ModelRegistry, fitted: FittedConversion, manifest: dict[str, Any]
) -> ModelVersion:
    """A new conversion version, checked loadable by the service's own loader, then CURRENT
    moves (atomically). On failure: the staging directory is removed, the error propagates."""
    staging = registry.staging_dir(USE_CASE)
    try:
        full = {
            **save_conversion_artifacts(
                staging, fitted.model, fitted.calibration, fitted.base_rate, fitted.medians
            ),
            **manifest,
        }
        full = json.loads(json.dumps(full, default=str))
        ConversionArtifacts.load(ModelVersion(USE_CASE, staging.name, staging, full), verify=False)
        return registry.publish(USE_CASE, staging, full)
    except BaseException:
        registry.discard(staging)
        raise
