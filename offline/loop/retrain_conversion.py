"""Conversion: the training set from the logs, a candidate, the publish gate (AUC and log-loss).

``python -m offline.loop.retrain_conversion --logs data/logs --registry data/registry``

The training set is built by the shared builder (training_set.build_labelled_rows): one row
per logged score with its exact served row, labelled 1 when a ``converted`` outcome occurred
within the label window (7 days by default), 0 once the window closed without one, left out
while immature. Rows served from fallbacks during an outage (OUTAGE_REASONS) are left out of
training (they are not what a healthy model sees); rows flagged by how the traffic is (an
unknown user: the profile's defaults) stay. The candidate and CURRENT are scored on the same
latest held-out rows; the candidate is published when its AUC is not lower and its log-loss
not higher (tolerances configurable).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from decision_service.features.conversion import FEATURES
from decision_service.models.conversion_artifacts import ConversionArtifacts
from decision_service.models.registry import ModelRegistry, ModelVersion, RegistryError
from offline.engines import ENGINES, Engine, parse_conf
from offline.loop.publish_gate import GateMetric, binary_rows, compare, labels_of, table_time_split
from offline.loop.training_set import LabelWindow, TrainingSetReport, build_labelled_rows
from offline.training.train_conversion import (
    USE_CASE,
    ConversionTrainConfig,
    evaluate,
    fit_conversion,
    predict_calibrated,
    publish_conversion,
)

CONVERSION_LABEL = LabelWindow("converted", ("converted",), 7 * 86_400.0)
"""Default: converted = a ``converted`` outcome within 7 days of the score."""
KEEP = {
    "user_id": "user_id",
    "logged_probability": "probability",
    "action": "action",
    "scored": "scored",
    "flags": "list_transform(degraded, lambda x: x.stage || ':' || x.reason)",
}
OUTAGE_REASONS = ("store_unavailable", "store_timeout", "deadline_exceeded", "model_error", "build_failed")
"""Flags of a row served from fallbacks because something was down: left out of training.
Other flags (``user_context:unknown_user``, ``features:user_stale``) are how real traffic
looks (new visitors get the profile defaults): the model must learn them."""


@dataclass(frozen=True)
class ConversionRetrainConfig:
    train: ConversionTrainConfig = field(default_factory=ConversionTrainConfig)
    holdout_share: float = 0.25  # the latest decisions, by decision time
    exclude_outages: bool = True  # leave out rows flagged with an OUTAGE_REASONS flag
    auc_tolerance: float = 0.0  # publish if AUC >= current - tolerance ...
    log_loss_tolerance: float = 0.0  # ... and log-loss <= current + tolerance
    make_current: bool = True  # False: published as a candidate for a shadow / canary, not CURRENT


@dataclass
class ConversionRetrainResult:
    published: bool
    reason: str
    version: str | None
    current_version: str | None
    candidate: dict[str, float]
    current: dict[str, float]
    training: dict[str, Any]

    def summary(self) -> str:
        fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        c, o = self.candidate, self.current
        return (
            f"conversion candidate AUC {fmt(c.get('auc'))} log-loss {fmt(c.get('log_loss'))} vs current "
            f"{self.current_version} AUC {fmt(o.get('auc'))} log-loss {fmt(o.get('log_loss'))} "
            f"-> {'published ' + str(self.version) if self.published else 'NOT published'} ({self.reason})"
        )


def build_conversion_training_set(
    log_root: str | Path,
    out: str | Path | None = None,
    label: LabelWindow = CONVERSION_LABEL,
    as_of_ms: int | None = None,
    engine: str | Engine | None = None,
    engine_conf: Mapping[str, str] | None = None,
) -> tuple[pa.Table, TrainingSetReport]:
    """The conversion training set (see the module doc); writes ``out`` atomically if given.
    ``engine``: "duckdb" (default) or "spark" (``engine_conf``: Spark settings), same rows."""
    return build_labelled_rows(
        log_root,
        USE_CASE,
        label,
        out,
        as_of_ms,
        verdicts={},
        keep=KEEP,
        features=FEATURES,
        empty_columns=ConversionTrainConfig().columns,
        engine=engine,
        engine_conf=engine_conf,
    )


def retrain_conversion(
    training_set: pa.Table,
    registry_root: str | Path,
    cfg: ConversionRetrainConfig = ConversionRetrainConfig(),
    force: bool = False,
) -> ConversionRetrainResult:
    """Trains on the earlier rows, compares with CURRENT on the latest ones, publishes if the
    gate passes. On failure: ValueError when there is nothing to learn from (no labelled
    healthy rows, or one class only); the registry is untouched unless a version is published."""
    table = binary_rows(training_set, cfg.train.target, exclude_degraded=False)
    if cfg.exclude_outages and "flags" in table.column_names:
        outage = [
            any(f.split(":", 1)[-1] in OUTAGE_REASONS for f in flags or ())
            for flags in table.column("flags").to_pylist()
        ]
        table = table.filter(pa.array([not o for o in outage], pa.bool_()))
    if table.num_rows == 0:
        raise ValueError("the conversion training set has no labelled, healthy rows yet")
    held = table_time_split(table, cfg.holdout_share)
    train, holdout = table.filter(pa.array(~held)), table.filter(pa.array(held))
    fitted = fit_conversion(train, cfg.train)
    y = labels_of(holdout, cfg.train.target)
    candidate = evaluate(predict_calibrated(fitted.model, fitted.calibration, holdout, cfg.train.threads), y)
    training = dict(fitted.info, rows=table.num_rows, holdout_rows=holdout.num_rows)

    registry = ModelRegistry(registry_root)
    base: ModelVersion | None = None
    with contextlib.suppress(RegistryError):
        base = registry.current(USE_CASE)
    current: dict[str, float] = {}
    ok, reason = True, "no current model"
    if base is not None:
        try:
            a = ConversionArtifacts.load(base, verify=False)
            current = evaluate(predict_calibrated(a.model, a.calibration, holdout, cfg.train.threads), y)
        except (RegistryError, ValueError) as exc:
            ok, reason = False, f"current model cannot be evaluated: {exc}"
        if current:
            ok, reason = compare(
                candidate,
                current,
                (
                    GateMetric("auc", True, cfg.auc_tolerance),
                    GateMetric("log_loss", False, cfg.log_loss_tolerance),
                ),
            )
    if force and not ok:
        ok, reason = True, f"forced ({reason})"
    name = base.name if base else None
    if not ok:
        return ConversionRetrainResult(False, reason, None, name, candidate, current, training)
    manifest = {
        "metrics": {"candidate": candidate, "current": current},
        "training": {**training, "config": asdict(cfg)},
        "parent_version": name,
    }
    version = publish_conversion(registry, fitted, manifest, make_current=cfg.make_current)
    return ConversionRetrainResult(True, reason, version.name, name, candidate, current, training)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m offline.loop.retrain_conversion", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--logs", default="data/logs", help="log root (decisions/ and outcomes/ below it)")
    ap.add_argument("--registry", default="data/registry")
    ap.add_argument("--out", default="data/training/conversion.parquet")
    ap.add_argument("--window", default="7d", help="label window, e.g. 7d, 36h")
    ap.add_argument("--tolerance", type=float, default=0.0, help="AUC / log-loss slack of the gate")
    ap.add_argument("--force", action="store_true", help="publish even if not better than CURRENT")
    ap.add_argument("--engine", choices=ENGINES, default="duckdb", help="offline engine for the training set")
    ap.add_argument(
        "--conf", action="append", default=[], metavar="KEY=VALUE", help="a Spark setting; repeatable"
    )
    args = ap.parse_args(argv)
    from offline.loop.training_set import parse_duration_s

    label = LabelWindow("converted", ("converted",), parse_duration_s(args.window))
    table, report = build_conversion_training_set(
        args.logs, args.out, label, engine=args.engine, engine_conf=parse_conf(args.conf)
    )
    print(report.summary())
    cfg = ConversionRetrainConfig(auc_tolerance=args.tolerance, log_loss_tolerance=args.tolerance)
    try:
        result = retrain_conversion(table, args.registry, cfg, args.force)
    except ValueError as exc:
        print(f"nothing to learn yet: {exc}")
        return 3
    print(result.summary())
    return 0 if result.published else 3


if __name__ == "__main__":
    raise SystemExit(main())
