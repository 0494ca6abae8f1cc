"""Bootstraps the fraud use case from a payments world: train, evaluate, publish, materialize.

Steps: (1) point-in-time features and a time-split LightGBM model with its neighbour index
(offline/training/train_fraud.py); (2) artifacts into a staging dir, published as the "fraud" use case
of the same ModelRegistry (CURRENT moves); (3) optionally the serving state into Redis:
profiles of every user, merchant and device as of the world's end, the last 24 h of payments
into the velocity sets and every (user, device) pair, with the world's clock shifted so that
its end is "now" (the velocity windows of live requests then see the recent history).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from decision_service.domain.decision import now_ms
from decision_service.features.definitions import DEVICE, FRAUD_MODEL_FEATURES, FRAUD_USER, MERCHANT, REGISTRY
from decision_service.features.payments import project_left_out
from decision_service.features.redis_store import MAX_WINDOW_MS, RedisBulkWrites, connect
from decision_service.models.fraud_artifacts import FRAUD, save_fraud_artifacts
from decision_service.models.registry import ModelRegistry, ModelVersion
from offline.features.fraud_features import FraudHistory
from offline.simulation.fraud_world import FraudWorld
from offline.training.train_fraud import (
    FraudTrainConfig,
    build_neighbour_index,
    fraud_split,
    train_fraud,
    with_neighbours,
)
from offline.watch import profile as feature_profile


def bootstrap_fraud(
    world_dir: str | Path | FraudWorld,
    registry_root: str | Path,
    redis_url: str | None = None,
    config: FraudTrainConfig | None = None,
    verbose: bool = False,
) -> ModelVersion:
    """Trains, publishes (as CURRENT) and optionally materializes; returns the new version.

    ``world_dir``: a generated world's folder, or a loaded FraudWorld (a project's payments:
    offline/features/payments.py). Contract: the version loads with ``FraudArtifacts.load``;
    its manifest has feature_registry_version, model_features, left_out (feature -> why the
    project's payments cannot feed it), metrics (model vs rules AUC), training, neighbours,
    feature_medians, world and timings.
    """
    t_all = time.perf_counter()
    config = config or FraudTrainConfig()
    faiss.omp_set_num_threads(config.threads)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    world = world_dir if isinstance(world_dir, FraudWorld) else FraudWorld.load(world_dir)
    history = FraudHistory(world)
    timings["load_and_history"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    trained = train_fraud(world, config, FRAUD_MODEL_FEATURES, history)
    timings["train_and_eval"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    profile = training_profile(history, config, trained.model)
    timings["feature_profile"] = round(time.perf_counter() - t0, 2)

    registry = ModelRegistry(registry_root)
    staging = registry.staging_dir(FRAUD)
    try:
        feature_profile.save(staging, profile)
        neighbours = save_fraud_artifacts(staging, trained.model, trained.neighbours)
        manifest: dict[str, Any] = {
            "feature_registry_version": REGISTRY.version,
            "model_features": list(FRAUD_MODEL_FEATURES),
            "left_out": project_left_out(),
            "metrics": trained.metrics,
            "training": trained.training,
            "neighbours": neighbours,
            "feature_medians": trained.feature_medians,
            "feature_minima": trained.feature_minima,
            "world": {
                "dir": str(Path(world.directory or world_dir).resolve()),  # type: ignore[arg-type]
                "preset": world.config.preset,
                "seed": world.config.seed,
                "transactions": world.n,
                "fraud": int(world.is_fraud.sum()),
                "start_ms": world.start_ms,
                "now_ms": world.now_ms,
            },
        }
        timings["total_before_publish"] = round(time.perf_counter() - t_all, 2)
        manifest["timings_s"] = dict(timings)
        version = registry.publish(FRAUD, staging, manifest)
    except BaseException:
        registry.discard(staging)
        raise
    if redis_url:
        t0 = time.perf_counter()
        stats = materialize_fraud(history, redis_url)
        timings["materialize"] = round(time.perf_counter() - t0, 2)
        if verbose:
            print(f"  materialized: {stats}")
    timings["total"] = round(time.perf_counter() - t_all, 2)
    if verbose:
        print(summary(version, timings))
    return version


PROFILE_ROWS = 20_000
"""Training payments profiled at bootstrap: each needs a neighbour query, as in training."""


def training_profile(
    history: FraudHistory, cfg: FraudTrainConfig, model: Any, max_rows: int = PROFILE_ROWS
) -> feature_profile.FeatureProfile:
    """The feature profile of the model's training payments (offline/watch/profile.py): a
    seeded sample of ``train_fraud``'s training rows, their model rows built as it builds them
    (neighbour features from the index as of the training start) and the model's scores."""
    split = fraud_split(history.world, cfg)
    columns = tuple(model.feature_name())
    rows = split.train_rows[feature_profile.sample_rows(len(split.train_rows), max_rows, cfg.seed)]
    index = build_neighbour_index(history, split.start, cfg, columns)
    x = with_neighbours(history.model_matrix(rows, columns), index, columns)
    return feature_profile.build_profile(
        x,
        columns,
        np.asarray(model.predict(x, num_threads=cfg.threads), np.float64),
        max_rows=max_rows,
        source_rows=len(split.train_rows),
        extra={"rows": "a sample of the training payments (train + validation)"},
    )


def materialize_fraud(history: FraudHistory, redis_url: str) -> dict[str, int]:
    """Writes the serving state of the fraud use case into Redis (see the module docstring)."""
    w = history.world
    wall_now = now_ms()
    shift = wall_now - w.now_ms
    at = np.full(1, w.now_ms, np.int64)
    client = connect(redis_url)
    bulk = RedisBulkWrites(client)
    try:
        users = np.arange(len(w.user_ids))
        merchants = np.arange(len(w.merchant_ids))
        seen_devices = np.unique(w.device[w.device >= 0])  # -1: a payment without a device
        stats = {
            "fraud_user": bulk.write_group(
                FRAUD_USER,
                list(w.user_ids),
                history.fraud_user(users, np.repeat(at, len(users))),
                wall_now,
            ),
            "merchant": bulk.write_group(
                MERCHANT,
                list(w.merchant_ids),
                history.merchant(merchants, np.repeat(at, len(merchants))),
                wall_now,
            ),
        }
        if DEVICE is not None:
            stats["device"] = bulk.write_group(
                DEVICE,
                list(w.device_ids[seen_devices]),
                history.device(seen_devices, np.repeat(at, len(seen_devices))),
                wall_now,
            )
        recent = np.flatnonzero(w.occurred_ms >= w.now_ms - MAX_WINDOW_MS)
        ts = w.occurred_ms[recent] + shift
        txns = list(w.txn_ids[recent])
        stats["velocity_user"] = bulk.write_velocity_events(
            "user", list(w.user_ids[w.user[recent]]), txns, history.eur[recent], ts
        )
        if not w.has_devices:
            return stats
        on_device = w.device[recent] >= 0
        stats["velocity_device"] = bulk.write_velocity_events(
            "device",
            list(w.device_ids[w.device[recent][on_device]]),
            [x for x, keep in zip(txns, on_device.tolist(), strict=True) if keep],
            history.eur[recent][on_device],
            ts[on_device],
        )
        with_device = np.flatnonzero(w.device >= 0)
        pair = w.user[with_device].astype(np.int64) * len(w.device_ids) + w.device[with_device]
        last = with_device[
            len(pair) - 1 - np.unique(pair[::-1], return_index=True)[1]
        ]  # last use of each pair
        stats["user_devices"] = bulk.write_user_devices(
            list(w.user_ids[w.user[last]]),
            list(w.device_ids[w.device[last]]),
            w.occurred_ms[last] + shift,
        )
        return stats
    finally:
        client.close()


def summary(version: ModelVersion, timings: dict[str, float]) -> str:
    m, tr, nn = (version.manifest[k] for k in ("metrics", "training", "neighbours"))
    return "\n".join(
        [
            f"published {version.use_case}/{version.name} -> {version.path}",
            f"  training: {tr['rows']:,} rows ({tr['positives']:,} chargebacks known by day "
            f"{tr['labels_as_of_day']}), days {tr['window_days']}, best iteration {tr['best_iteration']}",
            f"  neighbours: {nn['rows']:,} labelled payments ({nn['positives']:,} fraud), k={nn['k']}",
            f"  held-out days {m['eval_window_days']}: {m['eval_rows']:,} payments, "
            f"{m['eval_positives']:,} chargebacks",
            f"    ROC AUC  model {m['model_auc']:.4f}  vs rules-only {m['rules_auc']:.4f}",
            f"    avg prec model {m['model_average_precision']:.4f}  "
            f"vs rules-only {m['rules_average_precision']:.4f}",
            "  timings (s): " + ", ".join(f"{k}={v}" for k, v in timings.items()),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m offline.runs.bootstrap_fraud", description=__doc__.splitlines()[0]
    )
    ap.add_argument(
        "--world", default="data/fraud_world", help="world dir (python -m offline.simulation.fraud_world)"
    )
    ap.add_argument("--registry", default="data/registry", help="model registry root")
    ap.add_argument("--redis-url", default=None, help="also materialize features into this Redis")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    bootstrap_fraud(
        args.world, args.registry, args.redis_url, FraudTrainConfig(threads=args.threads), verbose=True
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
