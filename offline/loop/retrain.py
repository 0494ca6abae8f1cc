"""Retrain the ranker from a logged training set, evaluate it against the serving model,
publish it only if it is not worse.

* Split by time: the latest ``holdout_share`` of decisions (by decision time) is held out;
  the candidate trains on the earlier ones (the last ``valid_share`` of those for early
  stopping). No decision is split across the boundary.
* Model: LightGBM, binary click objective on the items that were shown, each row
  weighted by 1 / propensity (clipped at ``ips_clip``): feedback on items the serving
  policy rarely shows (exploration slots) counts for the items like it that it never did.
* Evaluation on the held-out decisions, the same rows for the candidate and the current
  model: NDCG@k (gain 2^relevance - 1, relevance = click + purchase) and recall@k of the
  positives, both inverse-propensity weighted (IPS), averaged over decisions with a positive.
* Publish (atomic CURRENT switch) when candidate NDCG@k >= current NDCG@k - tolerance,
  or when forced. The new version carries its metrics, the current model's, the feature
  schema and registry version. The FAISS index is rebuilt from the latest serving state
  (snapshot + embeddings bootstrap saved; not the simulated world) when its directory is
  given (else copied), and features are re-materialized into Redis (and the feature
  history) when a Redis URL is given. The gate is publish_gate.compare, as for every use case.

Fraud (``retrain_fraud``, ``--use-case fraud``): the same time split over logged verdicts
(declined and degraded ones left out: their outcome was not observed / not a healthy row);
LightGBM binary on the logged model rows; candidate and CURRENT compared on the same
held-out payments by ROC AUC and recall at a fixed review rate (default 5% of payments
flagged, or the share the logged actions flagged); published only if not worse on both
(or forced), with a neighbour index of the base version's labelled payments plus the newly
labelled ones, through the same registry and atomic CURRENT switch.

CLI: ``python -m offline.loop.retrain --training-set train.parquet --registry data/registry
[--world data/world --redis-url ...] [--force]``;
``--use-case fraud [--review-rate 0.05|logged]`` for fraud.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from decision_service.features.definitions import REGISTRY
from decision_service.features.payments import project_left_out
from decision_service.models.recommendation_artifacts import (
    EMBEDDINGS_FILE,
    INDEX_FILE,
    ITEMS_FILE,
    MODEL_FILE,
    RecommendationArtifacts,
)
from decision_service.models.registry import ModelRegistry, ModelVersion, RegistryError
from offline.loop.publish_gate import (
    GateMetric,
    binary_rows,
    compare,
    feature_matrix,
    labels_of,
    recall_at_rate,
    roc_auc,
    time_split,
    train_binary,
)
from offline.training.lightgbm_params import LightGbmSettings, categorical_columns
from offline.watch import profile as feature_profile

USE_CASE = "recommendation"


RETRAIN_LGBM = LightGbmSettings(
    learning_rate=0.05, num_leaves=15, min_data_in_leaf=40, num_boost_round=300, early_stopping_rounds=30
)


def _recommendation_model_features() -> tuple[str, ...]:
    """The project's ranking feature order (imported on use: a fraud-only project lacks it)."""
    from decision_service.features.definitions import RECOMMENDATION_MODEL_FEATURES

    return RECOMMENDATION_MODEL_FEATURES


@dataclass(frozen=True)
class RetrainConfig:
    columns: tuple[str, ...] = field(default_factory=_recommendation_model_features)
    target: str = "click"  # binary training label
    gain_labels: tuple[str, ...] = ("click", "purchase")  # relevance = sum (evaluation)
    min_positives: int = 5
    """Positive ``target`` labels needed on each side of the split (training, held out): with
    fewer, the model and the gate's comparison are noise, so nothing is trained (not even with
    ``force``)."""
    holdout_share: float = 0.25
    valid_share: float = 0.15
    k: int = 5
    ips_clip: float = 10.0
    tolerance: float = 0.0  # publish if candidate >= current - tolerance (NDCG@k)
    lgbm: LightGbmSettings = field(default_factory=lambda: RETRAIN_LGBM)
    threads: int = 2
    seed: int = 7
    make_current: bool = True  # False: published as a candidate for a shadow / canary, not CURRENT


@dataclass
class RetrainResult:
    published: bool
    reason: str
    version: str | None  # the published version, or None
    current_version: str | None
    candidate: dict[str, float] = field(default_factory=dict)
    current: dict[str, float] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        k = self.training.get("k", 5)
        c, o = self.candidate.get(f"ndcg@{k}"), self.current.get(f"ndcg@{k}")
        fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        return (
            f"candidate NDCG@{k} {fmt(c)} recall@{k} {fmt(self.candidate.get(f'recall@{k}'))} vs current "
            f"{self.current_version} NDCG@{k} {fmt(o)} recall@{k} {fmt(self.current.get(f'recall@{k}'))} "
            f"-> {'published ' + str(self.version) if self.published else 'NOT published'} ({self.reason})"
        )


def relevance(table: pa.Table, labels: tuple[str, ...]) -> np.ndarray:
    rel = np.zeros(table.num_rows, np.float64)
    for name in labels:
        if name in table.column_names:
            rel += pc.fill_null(table.column(name), False).to_numpy(zero_copy_only=False).astype(np.float64)
    return rel


def ips_ranking_metrics(
    scores: np.ndarray, rel: np.ndarray, weights: np.ndarray, groups: np.ndarray, k: int, seed: int = 0
) -> dict[str, float]:
    """Mean IPS-weighted NDCG@k and recall@k over groups (decisions) with a positive.

    ``groups`` are integer group ids. Gains are ``weight * (2^rel - 1)``; ties in ``scores``
    are broken at random (seeded).
    """
    n = len(scores)
    if n == 0:
        return {f"ndcg@{k}": float("nan"), f"recall@{k}": float("nan"), "decisions": 0}
    tie = np.random.default_rng(seed).random(n)
    order = np.lexsort((tie, -scores, groups))
    g = groups[order]
    start = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    first = np.zeros(n, np.int64)
    first[start] = start
    first = np.maximum.accumulate(first)
    rank = np.arange(n) - first
    gain = weights * (2.0**rel - 1.0)
    top = rank < k
    n_groups = int(groups.max()) + 1
    dcg = np.bincount(g[top], weights=(gain[order] / np.log2(rank + 2.0))[top], minlength=n_groups)
    iorder = np.lexsort((-gain, groups))
    ig = groups[iorder]
    istart = np.r_[0, np.flatnonzero(ig[1:] != ig[:-1]) + 1]
    ifirst = np.zeros(n, np.int64)
    ifirst[istart] = istart
    irank = np.arange(n) - np.maximum.accumulate(ifirst)
    itop = irank < k
    idcg = np.bincount(ig[itop], weights=(gain[iorder] / np.log2(irank + 2.0))[itop], minlength=n_groups)
    pos_w = weights * (rel > 0)
    total = np.bincount(groups, weights=pos_w, minlength=n_groups)
    hits = np.bincount(g[top], weights=pos_w[order][top], minlength=n_groups)
    ok = total > 0
    return {
        f"ndcg@{k}": round(float(np.mean(dcg[ok] / idcg[ok])), 4) if ok.any() else float("nan"),
        f"recall@{k}": round(float(np.mean(hits[ok] / total[ok])), 4) if ok.any() else float("nan"),
        "decisions": int(ok.sum()),
    }


_matrix = feature_matrix


def train_candidate(table: pa.Table, cfg: RetrainConfig) -> tuple[lgb.Booster, dict[str, Any]]:
    """Fits the binary click model on ``table`` (already the training side of the split)."""
    decided = table.column("decided_at").cast(pa.int64()).to_numpy()
    ids = table.column("decision_id").to_numpy(zero_copy_only=False)
    valid = time_split(decided, ids, cfg.valid_share)
    x = _matrix(table, cfg.columns)
    y = pc.fill_null(table.column(cfg.target), False).to_numpy(zero_copy_only=False).astype(np.float32)
    w = 1.0 / np.maximum(table.column("propensity").to_numpy(zero_copy_only=False), 1.0 / cfg.ips_clip)
    names = list(cfg.columns)
    categorical = categorical_columns(names)
    params = cfg.lgbm.params("binary", threads=cfg.threads, seed=cfg.seed, metric="binary_logloss")
    dtrain = lgb.Dataset(
        x[~valid],
        y[~valid],
        weight=w[~valid],
        feature_name=names,
        categorical_feature=categorical,
        free_raw_data=True,
    )
    dvalid = lgb.Dataset(x[valid], y[valid], weight=w[valid], reference=dtrain)
    t0 = time.perf_counter()
    model = lgb.train(
        params,
        dtrain,
        num_boost_round=cfg.lgbm.num_boost_round,
        valid_sets=[dvalid],
        callbacks=[lgb.early_stopping(cfg.lgbm.early_stopping_rounds, verbose=False)],
    )
    gain = model.feature_importance("gain")
    return model, {
        "train_rows": int((~valid).sum()),
        "valid_rows": int(valid.sum()),
        "positives": int(y.sum()),
        "best_iteration": int(model.best_iteration),
        "top_features_by_gain": [names[j] for j in np.argsort(-gain)[:8]],
        "seconds": round(time.perf_counter() - t0, 2),
        "params": {k: v for k, v in params.items() if k != "verbosity"},
    }


def evaluate(
    model: lgb.Booster, columns: list[str], holdout: pa.Table, cfg: RetrainConfig
) -> dict[str, float]:
    """IPS-weighted NDCG@k / recall@k of ``model`` re-ranking each held-out decision's items."""
    if holdout.num_rows == 0:
        return {f"ndcg@{cfg.k}": float("nan"), f"recall@{cfg.k}": float("nan"), "decisions": 0}
    x = _matrix(holdout, columns)
    scores = np.asarray(model.predict(x, num_threads=cfg.threads), np.float64)
    _, groups = np.unique(holdout.column("decision_id").to_numpy(zero_copy_only=False), return_inverse=True)
    w = 1.0 / np.maximum(holdout.column("propensity").to_numpy(zero_copy_only=False), 1.0 / cfg.ips_clip)
    return ips_ranking_metrics(scores, relevance(holdout, cfg.gain_labels), w, groups, cfg.k, cfg.seed)


def retrain(
    training_set: str | Path | pa.Table,
    registry_root: str | Path,
    cfg: RetrainConfig | None = None,
    force: bool = False,
    world_dir: str | Path | None = None,
    redis_url: str | None = None,
) -> RetrainResult:
    """Trains, evaluates against CURRENT on the same held-out slice, publishes if not worse.

    ``world_dir``: where bootstrap saved the serving state (``<world_dir>/serving``); when
    given, the published index is rebuilt from it and, with ``redis_url``, the features are
    re-materialized into Redis. Only that state is read, not the simulated world.
    On failure: ValueError when the training set is empty, lacks the model's columns or has
    fewer than ``cfg.min_positives`` positive labels on either side of the split;
    the registry is untouched unless a version is published.
    """
    cfg = cfg or RetrainConfig()
    table = training_set if isinstance(training_set, pa.Table) else pq.read_table(training_set)
    table = table.filter(pc.is_valid(table.column(cfg.target)))
    if table.num_rows == 0:
        raise ValueError("the training set has no labelled rows yet")
    decided = table.column("decided_at").cast(pa.int64()).to_numpy()
    ids = table.column("decision_id").to_numpy(zero_copy_only=False)
    held = time_split(decided, ids, cfg.holdout_share)
    train, holdout = table.filter(pa.array(~held)), table.filter(pa.array(held))
    for side, rows in (("training", train), ("held-out", holdout)):
        positives = int(pc.sum(pc.fill_null(rows.column(cfg.target), False).cast(pa.int64())).as_py() or 0)
        if positives < cfg.min_positives:
            raise ValueError(
                f"only {positives} positive {cfg.target!r} labels in the {side} decisions (at least "
                f"{cfg.min_positives} are needed to train and judge a model): record more outcomes first"
            )
    model, training = train_candidate(train, cfg)
    training.update(k=cfg.k, holdout_rows=holdout.num_rows, rows=table.num_rows, ips_clip=cfg.ips_clip)
    candidate = evaluate(model, list(cfg.columns), holdout, cfg)

    registry = ModelRegistry(registry_root)
    current_version: ModelVersion | None = None
    current: dict[str, float] = {}
    with contextlib.suppress(RegistryError):
        current_version = registry.current(USE_CASE)
    reason = "no current model"
    ok = True
    if current_version is not None:
        try:
            serving = RecommendationArtifacts.load(current_version, verify=False)
            current = evaluate(serving.model, serving.assembler.columns, holdout, cfg)
        except (RegistryError, ValueError) as exc:
            current, reason = {}, f"current model cannot be evaluated: {exc}"
            ok = False
        if current:
            ok, reason = compare(candidate, current, [GateMetric(f"ndcg@{cfg.k}", True, cfg.tolerance)])
    if force and not ok:
        reason, ok = f"forced ({reason})", True
    name = current_version.name if current_version else None
    if not ok:
        return RetrainResult(False, reason, None, name, candidate, current, training)
    profile = feature_profile.profile_table(
        train,
        cfg.columns,
        lambda x: model.predict(x, num_threads=cfg.threads),
        extra={"rows": "the shown items of the training decisions (train + validation)"},
    )
    version = publish(
        registry, model, cfg, candidate, current, training, current_version, world_dir, profile=profile
    )
    if world_dir is not None and redis_url is not None:
        from offline.features.materialize import materialize

        training["materialized"] = materialize(world_dir, redis_url, write_seen_items=False)
    return RetrainResult(True, reason, version.name, name, candidate, current, training)


def publish(
    registry: ModelRegistry,
    model: lgb.Booster,
    cfg: RetrainConfig,
    candidate: dict[str, float],
    current: dict[str, float],
    training: dict[str, Any],
    base: ModelVersion | None,
    world_dir: str | Path | None = None,
    profile: feature_profile.FeatureProfile | None = None,
) -> ModelVersion:
    """A new version: the model, a FAISS index (rebuilt from the serving state saved under
    ``world_dir``, else ``base``'s), the catalog and ``profile`` (the training distribution,
    offline/watch/profile.py; none when None); checked loadable, then CURRENT moves."""
    staging = registry.staging_dir(USE_CASE)
    try:
        if profile is not None:
            feature_profile.save(staging, profile)
        index_info: dict[str, Any] = {}
        if world_dir is not None:
            index_info = rebuild_index(staging, world_dir, model, cfg.threads, base)
        elif base is not None:
            for f in (INDEX_FILE, EMBEDDINGS_FILE, ITEMS_FILE):
                shutil.copy2(base.file(f), staging / f)
            index_info = dict(base.manifest.get("index", {}), rebuilt=False)
            model.save_model(str(staging / MODEL_FILE))
        else:
            raise ValueError("no base version to take the index from and no world to build it")
        # Refuse to publish what the service would refuse to load.
        RecommendationArtifacts.load(ModelVersion(USE_CASE, staging.name, staging, {}), verify=False)
        manifest = {
            "feature_registry_version": REGISTRY.version,
            "model_features": list(cfg.columns),
            "metrics": {"candidate": candidate, "current": current},
            "parent_version": base.name if base else None,
            "training": {**training, "config": {k: v for k, v in asdict(cfg).items() if k != "columns"}},
            "index": index_info,
        }
        return registry.publish(
            USE_CASE, staging, json.loads(json.dumps(manifest, default=str)), make_current=cfg.make_current
        )
    except BaseException:
        registry.discard(staging)
        raise


def rebuild_index(
    staging: Path,
    world_dir: str | Path,
    model: lgb.Booster,
    threads: int,
    base: ModelVersion | None = None,
) -> dict[str, Any]:
    """Writes ``model`` with a FAISS index, embeddings and catalog built from the latest
    serving state bootstrap saved under ``<world_dir>/serving`` into ``staging``.

    Only the serving state is read (offline/features/materialize.py ``load_serving_state``),
    never the simulated world: item ids are the snapshot's rows (= FAISS ids), categories its
    ``i_category`` column, popularity its ``i_events_30d``. Should the snapshot's categories
    not be a valid taxonomy index, ``base``'s catalog supplies them (same item ids only).
    On failure: FileNotFoundError without a serving state; ValueError when the categories
    cannot be had.
    """
    import faiss

    from decision_service.features.definitions import ITEM
    from decision_service.models.recommendation_artifacts import save_recommendation_artifacts
    from offline.features.build_index import IndexConfig, build_index, sample_queries
    from offline.features.materialize import load_serving_state

    snap, emb = load_serving_state(world_dir)
    item_ids = [str(i) for i in snap.item_ids]
    categories = serving_categories(snap.items[:, ITEM.slot("i_category")], item_ids, base)
    faiss.omp_set_num_threads(threads)
    config = IndexConfig(threads=threads)
    index, info = build_index(emb.items, sample_queries(emb.users, config.sample_queries), config)
    popularity = snap.items[:, ITEM.slot("i_events_30d")].astype(np.float32)
    save_recommendation_artifacts(staging, model, index, emb.items, item_ids, categories, popularity)
    return dict(info.as_dict(), rebuilt=True)


def serving_categories(values: np.ndarray, item_ids: list[str], base: ModelVersion | None) -> np.ndarray:
    """int16 [n_items] category indexes: the snapshot's ``i_category`` values when they are
    whole numbers inside the taxonomy (-1: uncategorised), else ``base``'s catalog for the same item ids."""
    from decision_service.features.definitions import CATEGORIES

    values = np.asarray(values, np.float64)
    whole = np.isfinite(values) & (values == np.round(values)) & (values >= -1) & (values < len(CATEGORIES))
    if whole.all():
        return values.astype(np.int16)
    bad = int(np.flatnonzero(~whole)[0])
    problem = f"serving snapshot item {item_ids[bad]!r} has category {values[bad]!r} outside the taxonomy"
    if base is None:
        raise ValueError(problem + " and there is no base version to take categories from")
    items = pq.read_table(base.file(ITEMS_FILE), columns=["item_id", "category"])
    if items.column("item_id").to_pylist() != item_ids:
        raise ValueError(problem + f"; base {base.name}'s catalog lists other items")
    return items.column("category").to_numpy().astype(np.int16)


# ---------------------------------------------------------------------------------------------
# Fraud: retrain from the logged verdicts, compare on the same held-out payments, publish.


FRAUD_RETRAIN_LGBM = LightGbmSettings(
    learning_rate=0.05, num_leaves=15, min_data_in_leaf=20, num_boost_round=300, early_stopping_rounds=30
)


def _fraud_model_features() -> tuple[str, ...]:
    """The project's fraud feature order (imported on use: a project without fraud lacks it)."""
    from decision_service.features.definitions import FRAUD_MODEL_FEATURES

    return FRAUD_MODEL_FEATURES


@dataclass(frozen=True)
class FraudRetrainConfig:
    columns: tuple[str, ...] = field(default_factory=lambda: _fraud_model_features())
    target: str = "fraud"
    holdout_share: float = 0.25  # the latest decisions, by decision time
    valid_share: float = 0.2  # the latest of the training side, for early stopping
    review_rate: float | None = 0.05
    """Share of payments flagged (review or decline) at which recall is measured; None = the
    share the logged actions of the held-out payments actually flagged."""
    exclude_actions: tuple[str, ...] = ("DECLINE",)  # never settled: the label is unobserved
    exclude_degraded: bool = True  # rows built from fallbacks are not what a healthy model sees
    auc_tolerance: float = 0.0  # publish if candidate AUC >= current AUC - tolerance ...
    recall_tolerance: float = 0.0  # ... and recall >= current recall - tolerance
    k_neighbours: int = 50
    max_index_rows: int = 50_000
    min_positives: int = 10
    """Fraud labels the training verdicts need (and 1 among the held-out ones); fewer: ValueError."""
    lgbm: LightGbmSettings = field(default_factory=lambda: FRAUD_RETRAIN_LGBM)
    threads: int = 2
    seed: int = 7
    make_current: bool = True  # False: published as a candidate for a shadow / canary, not CURRENT


@dataclass
class FraudRetrainResult(RetrainResult):
    def summary(self) -> str:
        fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        c, o = self.candidate, self.current
        rate = c.get("review_rate", 0.0)
        return (
            f"fraud candidate AUC {fmt(c.get('auc'))} recall@{rate:.1%} {fmt(c.get('recall'))} vs current "
            f"{self.current_version} AUC {fmt(o.get('auc'))} recall {fmt(o.get('recall'))} "
            f"-> {'published ' + str(self.version) if self.published else 'NOT published'} ({self.reason})"
        )


def evaluate_fraud(
    model: lgb.Booster, holdout: pa.Table, rate: float, cfg: FraudRetrainConfig
) -> dict[str, float]:
    """ROC AUC and recall at the review rate of ``model`` on the held-out payments."""
    y = labels_of(holdout, cfg.target)
    if holdout.num_rows == 0:
        return {"auc": float("nan"), "recall": float("nan"), "review_rate": rate, "rows": 0, "positives": 0}
    p = np.asarray(model.predict(_matrix(holdout, model.feature_name()), num_threads=cfg.threads), np.float64)
    return {
        "auc": round(roc_auc(y, p), 4),
        "recall": round(recall_at_rate(y, p, rate, cfg.seed), 4),
        "review_rate": round(rate, 4),
        "rows": int(holdout.num_rows),
        "positives": int(y.sum()),
    }


def fraud_training_rows(table: pa.Table, cfg: FraudRetrainConfig) -> pa.Table:
    """Labelled rows whose outcome could be observed (see the config's exclusions)."""
    return binary_rows(table, cfg.target, cfg.exclude_actions, cfg.exclude_degraded)


def retrain_fraud(
    training_set: str | Path | pa.Table,
    registry_root: str | Path,
    cfg: FraudRetrainConfig | None = None,
    force: bool = False,
) -> FraudRetrainResult:
    """Trains the fraud model on the earlier logged verdicts, scores it and CURRENT on the
    same later ones (ROC AUC, recall at the review rate), publishes it if not worse on both.

    The new version's neighbour index holds the base version's labelled payments plus the
    newly labelled ones. On failure: ValueError when there is nothing to learn from (no
    labelled rows, or one class only); the registry is untouched unless a version is published.
    """
    from decision_service.models.fraud_artifacts import FRAUD, FraudArtifacts

    cfg = cfg or FraudRetrainConfig()

    table = training_set if isinstance(training_set, pa.Table) else pq.read_table(training_set)
    table = fraud_training_rows(table, cfg)
    if table.num_rows == 0:
        raise ValueError("the fraud training set has no labelled, observable rows yet")
    decided = table.column("decided_at").cast(pa.int64()).to_numpy()
    ids = table.column("decision_id").to_numpy(zero_copy_only=False)
    held = time_split(decided, ids, cfg.holdout_share)
    train, holdout = table.filter(pa.array(~held)), table.filter(pa.array(held))
    y = pc.fill_null(train.column(cfg.target), False).to_numpy(zero_copy_only=False).astype(np.float32)
    if y.min() == y.max():
        raise ValueError(f"the fraud training rows have one class only ({int(y.sum())} positives)")
    held_positives = int(
        pc.sum(pc.fill_null(holdout.column(cfg.target), False).cast(pa.int64())).as_py() or 0
    )
    if int(y.sum()) < cfg.min_positives or held_positives < 1:
        # not even --force publishes a model that was learned or judged on (almost) nothing
        raise ValueError(
            f"only {int(y.sum())} fraud labels in the {train.num_rows} training verdicts (at least "
            f"{cfg.min_positives}) and {held_positives} in the {holdout.num_rows} held-out ones "
            "(at least 1): wait for more outcomes"
        )
    rate = cfg.review_rate
    if rate is None:
        flagged = pc.not_equal(holdout.column("action"), "APPROVE")
        rate = float(pc.mean(flagged.cast(pa.float64())).as_py() or 0.0)
    model, training = _train_fraud_candidate(train, y, cfg)
    training.update(rows=table.num_rows, holdout_rows=holdout.num_rows, review_rate=rate)
    candidate = evaluate_fraud(model, holdout, rate, cfg)

    registry = ModelRegistry(registry_root)
    base: ModelVersion | None = None
    with contextlib.suppress(RegistryError):
        base = registry.current(FRAUD)
    current: dict[str, float] = {}
    base_artifacts: FraudArtifacts | None = None
    ok, reason = True, "no current model"
    if base is not None:
        try:
            base_artifacts = FraudArtifacts.load(base, verify=False)
            current = evaluate_fraud(base_artifacts.model, holdout, rate, cfg)
        except (RegistryError, ValueError) as exc:
            ok, reason = False, f"current model cannot be evaluated: {exc}"
        if current:
            # NaN (no positive held out) compares False: nothing to show, nothing published
            ok, reason = compare(candidate, current, fraud_gate(cfg))
    if force and not ok:
        ok, reason = True, f"forced ({reason})"
    name = base.name if base else None
    if not ok:
        return FraudRetrainResult(False, reason, None, name, candidate, current, training)
    neighbours = _fraud_neighbours(table, base_artifacts, cfg)
    medians = {
        c: float(v) for c, v in zip(cfg.columns, np.median(_matrix(train, cfg.columns), axis=0), strict=True)
    }
    minima = {
        c: float(v) for c, v in zip(cfg.columns, np.min(_matrix(train, cfg.columns), axis=0), strict=True)
    }
    manifest = {
        "feature_minima": minima,
        "metrics": {"candidate": candidate, "current": current},
        "training": {**training, "config": {k: v for k, v in asdict(cfg).items() if k != "columns"}},
        "parent_version": name,
        "left_out": project_left_out(),  # what the project's payments cannot feed, as at bootstrap
    }
    profile = feature_profile.profile_table(
        train,
        cfg.columns,
        lambda x: model.predict(x, num_threads=cfg.threads),
        extra={"rows": "the training verdicts (train + validation)"},
    )
    version = publish_fraud(
        registry, model, neighbours, medians, manifest, profile=profile, make_current=cfg.make_current
    )
    return FraudRetrainResult(True, reason, version.name, name, candidate, current, training)


def fraud_gate(cfg: FraudRetrainConfig) -> list[GateMetric]:
    """Not worse on ROC AUC and on recall at the review rate."""
    return [GateMetric("auc", True, cfg.auc_tolerance), GateMetric("recall", True, cfg.recall_tolerance)]


def _train_fraud_candidate(
    train: pa.Table, y: np.ndarray, cfg: FraudRetrainConfig
) -> tuple[lgb.Booster, dict[str, Any]]:
    model, info, _ = train_binary(train, y, cfg.columns, cfg.lgbm, cfg.threads, cfg.seed, cfg.valid_share)
    return model, info


def _fraud_neighbours(table: pa.Table, base: Any, cfg: FraudRetrainConfig) -> Any:
    """The base version's labelled payments plus the newly labelled logged ones (newest kept),
    searched with the base version's k (else ``cfg.k_neighbours``)."""
    from decision_service.features.fraud import neighbour_space
    from decision_service.retrieval.neighbours import NeighbourIndex

    space = neighbour_space(_matrix(table, cfg.columns), cfg.columns)
    labels = pc.fill_null(table.column(cfg.target), False).to_numpy(zero_copy_only=False).astype(np.uint8)
    if base is not None:
        nn = base.neighbours
        old = nn.index.reconstruct_n(0, nn.index.ntotal) * nn.std + nn.mean
        space, labels = np.vstack([old, space]), np.r_[nn.labels, labels]
    space, labels = space[-cfg.max_index_rows :], labels[-cfg.max_index_rows :]
    # the parent's k: the logged nn_* features the candidate learned from were computed with it
    k = base.neighbours.k if base is not None else cfg.k_neighbours
    return NeighbourIndex.build(space.astype(np.float32), labels, min(k, len(space)))


def publish_fraud(
    registry: ModelRegistry,
    model: lgb.Booster,
    neighbours: Any,
    medians: dict[str, float],
    manifest: dict[str, Any],
    profile: feature_profile.FeatureProfile | None = None,
    make_current: bool = True,
) -> ModelVersion:
    """A new fraud version (model + neighbour index + ``profile``, the training distribution:
    offline/watch/profile.py, none when None), checked loadable, then CURRENT moves."""
    from decision_service.models.fraud_artifacts import FRAUD, FraudArtifacts, save_fraud_artifacts

    staging = registry.staging_dir(FRAUD)
    try:
        if profile is not None:
            feature_profile.save(staging, profile)
        full = {
            "feature_registry_version": REGISTRY.version,
            "model_features": model.feature_name(),
            "neighbours": save_fraud_artifacts(staging, model, neighbours),
            "feature_medians": medians,
            **manifest,
        }
        full = json.loads(json.dumps(full, default=str))
        # Refuse to publish what the service would refuse to load.
        FraudArtifacts.load(ModelVersion(FRAUD, staging.name, staging, full), verify=False)
        return registry.publish(FRAUD, staging, full, make_current=make_current)
    except BaseException:
        registry.discard(staging)
        raise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m offline.loop.retrain", description=__doc__.splitlines()[0])
    ap.add_argument("--training-set", required=True, help="Parquet from python -m offline.loop.training_set")
    ap.add_argument("--use-case", choices=(USE_CASE, "fraud"), default=USE_CASE)
    ap.add_argument("--registry", default="data/registry")
    ap.add_argument("--world", default=None, help="rebuild the FAISS index from this world's serving state")
    ap.add_argument(
        "--redis-url", default=None, help="re-materialize features into this Redis (needs --world)"
    )
    ap.add_argument("--force", action="store_true", help="publish even if not better than CURRENT")
    ap.add_argument(
        "--target", default=None, help="recommendation: the binary training label (default: click)"
    )
    ap.add_argument(
        "--gain-labels",
        default="click,purchase",
        help="recommendation: labels summed into the evaluation's relevance",
    )
    ap.add_argument("--k", type=int, default=RetrainConfig.k)
    ap.add_argument("--tolerance", type=float, default=RetrainConfig.tolerance)
    ap.add_argument("--threads", type=int, default=RetrainConfig.threads)
    ap.add_argument(
        "--review-rate",
        default="0.05",
        help="fraud: share of payments flagged at which recall is compared, or 'logged' (the "
        "share the logged actions flagged)",
    )
    args = ap.parse_args(argv)
    if args.use_case == "fraud":
        fcfg = FraudRetrainConfig(
            review_rate=None if args.review_rate == "logged" else float(args.review_rate),
            auc_tolerance=args.tolerance,
            recall_tolerance=args.tolerance,
            threads=args.threads,
        )
        fraud = retrain_fraud(args.training_set, args.registry, fcfg, args.force)
        print(fraud.summary())
        return 0 if fraud.published else 3
    labels = dict(target=args.target, gain_labels=tuple(args.gain_labels.split(","))) if args.target else {}
    cfg = RetrainConfig(k=args.k, tolerance=args.tolerance, threads=args.threads, **labels)
    result = retrain(args.training_set, args.registry, cfg, args.force, args.world, args.redis_url)
    print(result.summary())
    return 0 if result.published else 3


if __name__ == "__main__":
    raise SystemExit(main())
