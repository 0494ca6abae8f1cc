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
    table_time_split,
    train_binary,
)
from offline.training.lightgbm_params import LightGbmSettings
from offline.watch import profile as feature_profile

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
    calibration_share: float = 0.2  # the latest training rows: Platt calibration only (never fitted on)
    valid_share: float = 0.25  # the latest of the rest: early stopping
    lgbm: LightGbmSettings = field(default_factory=lambda: CONVERSION_LGBM)
    threads: int = 2
    seed: int = 11


@dataclass(frozen=True)
class FittedConversion:
    model: lgb.Booster
    calibration: tuple[float, float]  # (a, b): p = sigmoid(a * margin + b)
    base_rate: float
    medians: dict[str, float]
    minima: dict[str, float]
    info: dict[str, Any]
    profile: feature_profile.FeatureProfile | None = None  # the training distribution (published with it)


def fit_conversion(train: pa.Table, cfg: ConversionTrainConfig = ConversionTrainConfig()) -> FittedConversion:
    """LightGBM on the earlier rows (early-stopped on the latest ``valid_share`` of them), then
    Platt scaling fitted on the latest ``calibration_share`` of all rows, which neither the
    trees nor early stopping saw (calibrating in-sample would make a confident model look
    calibrated). On failure: ValueError for one class only, a calibration slice of one class,
    or a column the table lacks. The fit carries the feature profile of ``train`` (a sample of
    at most 100k rows) with the calibrated probability as its score, as the service logs it."""
    y = labels_of(train, cfg.target)
    if y.all() or not y.any():
        raise ValueError(f"the conversion rows hold one class only ({int(y.sum())} of {len(y)} positive)")
    unknown = [c for c in cfg.columns if c not in FEATURES]
    if unknown:
        raise ValueError("not conversion inputs: " + ", ".join(unknown))
    cal = table_time_split(train, cfg.calibration_share)
    if y[cal].all() or not y[cal].any() or y[~cal].all() or not y[~cal].any():
        raise ValueError(
            f"not enough rows to fit and calibrate: {int(y[~cal].sum())} of {int((~cal).sum())} fitting "
            f"rows and {int(y[cal].sum())} of {int(cal.sum())} calibration rows positive (each needs both)"
        )
    fit = train.filter(pa.array(~cal))
    categorical = [c for c in cfg.columns if c in CATEGORICAL]
    model, info, _ = train_binary(
        fit, y[~cal], cfg.columns, cfg.lgbm, cfg.threads, cfg.seed, cfg.valid_share, categorical=categorical
    )
    x = feature_matrix(train, cfg.columns)
    margins = np.asarray(model.predict(x[cal], raw_score=True, num_threads=cfg.threads), np.float64)
    calibration = platt_calibration(margins, y[cal])
    medians = {c: float(v) for c, v in zip(cfg.columns, np.median(x, axis=0), strict=True)}
    minima = {c: float(v) for c, v in zip(cfg.columns, np.min(x, axis=0), strict=True)}
    info.update(calibration_rows=int(cal.sum()), calibration={"a": calibration[0], "b": calibration[1]})
    rows = feature_profile.sample_rows(len(x))
    sample = x[rows]
    sample_margins = np.asarray(model.predict(sample, raw_score=True, num_threads=cfg.threads), np.float64)
    profile = feature_profile.build_profile(
        sample,
        cfg.columns,
        platt_probability(sample_margins, *calibration),
        defaults={c: float(FEATURES[c].default) for c in cfg.columns},
        source_rows=len(x),
        extra={"rows": "every training row (fit, early stopping and calibration)"},
    )
    return FittedConversion(model, calibration, float(y.mean()), medians, minima, info, profile)


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
    registry: ModelRegistry, fitted: FittedConversion, manifest: dict[str, Any], make_current: bool = True
) -> ModelVersion:
    """A new conversion version (with ``fitted.profile`` when it has one), checked loadable by
    the service's own loader, then CURRENT moves (atomically). On failure: the staging
    directory is removed, the error propagates."""
    staging = registry.staging_dir(USE_CASE)
    try:
        if fitted.profile is not None:
            feature_profile.save(staging, fitted.profile)
        full = {
            **save_conversion_artifacts(
                staging, fitted.model, fitted.calibration, fitted.base_rate, fitted.medians, fitted.minima
            ),
            **manifest,
        }
        full = json.loads(json.dumps(full, default=str))
        ConversionArtifacts.load(ModelVersion(USE_CASE, staging.name, staging, full), verify=False)
        return registry.publish(USE_CASE, staging, full, make_current=make_current)
    except BaseException:
        registry.discard(staging)
        raise
