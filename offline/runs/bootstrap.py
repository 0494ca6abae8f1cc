"""Bootstraps the recommendation use case from a world: train, index, publish, materialize.

Steps: (1) snapshot + embeddings + candidate index at T1, train and evaluate the ranker;
(2) snapshot + embeddings at world now for serving, saved under ``<world>/serving``;
(3) serving index over the serving item embeddings, recall measured; (4) artifacts written
with ``save_recommendation_artifacts`` into a staging dir and published (CURRENT moves);
(5) optionally the serving state is materialized into Redis.
Catalog row = world item row = FAISS id; popularity = item events in the last 30 days.
"""

from __future__ import annotations

import argparse
import functools
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import faiss
import numpy as np
from tqdm import tqdm

from decision_service.features.definitions import CATEGORIES, ITEM, RECOMMENDATION_MODEL_FEATURES, REGISTRY
from decision_service.features.redis_store import connect
from decision_service.models.recommendation_artifacts import save_recommendation_artifacts
from decision_service.models.registry import ModelRegistry, ModelVersion
from offline.features.build_index import IndexConfig, build_index, sample_queries
from offline.features.embeddings import Embeddings, train_embeddings
from offline.features.feature_history import HISTORY_DIR
from offline.features.materialize import materialize_snapshot, save_serving_state
from offline.features.snapshot import Snapshot, compute_snapshot
from offline.simulation.world import World
from offline.training.train_ranker import (
    RankerConfig,
    assemble_features,
    build_candidates,
    positives_only,
    train_ranker,
    window_labels,
)
from offline.watch import profile as feature_profile

USE_CASE = "recommendation"
T = TypeVar("T")


def _timed(timings: dict[str, float], name: str, fn: Callable[[], T], bar: tqdm | None = None) -> T:
    """Runs one step, records its seconds in ``timings`` and moves ``bar``."""
    if bar is not None:
        bar.set_postfix_str(name)
    t0 = time.perf_counter()
    out = fn()
    timings[name] = round(time.perf_counter() - t0, 2)
    if bar is not None:
        bar.update(1)
    return out


def bootstrap(
    world_dir: str | Path,
    registry_root: str | Path,
    redis_url: str | None = None,
    ranker: RankerConfig | None = None,
    index_config: IndexConfig | None = None,
    threads: int = 2,
    verbose: bool = False,
) -> ModelVersion:
    """Trains, publishes (as CURRENT) and optionally materializes; returns the new version.

    Contract: the version loads with ``RecommendationArtifacts.load``; its manifest has
    feature_registry_version, model_features, metrics, index, world, training, timings.
    """
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    world = _timed(timings, "load_world", lambda: World.load(world_dir))
    return bootstrap_world(
        world,
        world_dir,
        registry_root,
        redis_url,
        ranker,
        index_config,
        threads,
        verbose,
        timings=timings,
        started=t_all,
    )


def bootstrap_world(
    world: World,
    state_dir: str | Path,
    registry_root: str | Path,
    redis_url: str | None = None,
    ranker: RankerConfig | None = None,
    index_config: IndexConfig | None = None,
    threads: int = 2,
    verbose: bool = False,
    *,
    timings: dict[str, float] | None = None,
    started: float | None = None,
    project: str | None = None,
) -> ModelVersion:
    """``bootstrap`` on interactions already loaded (a generated world, or a project's sources
    by offline/features/interactions.py); the serving state goes to ``<state_dir>/serving``,
    the feature history to ``<state_dir>/feature_history``."""
    t_all = time.perf_counter() if started is None else started
    timings = {} if timings is None else timings
    ranker = ranker or RankerConfig(threads=threads)
    index_config = index_config or IndexConfig(threads=threads)
    steps = 10 + (1 if redis_url else 0) + (3 if ranker.eval_as_of_t2 else 0)
    bar = tqdm(total=steps, desc="bootstrap", unit="step", disable=not (verbose and sys.stderr.isatty()))
    step = functools.partial(_timed, timings, bar=bar)
    try:
        version, stats = _train_publish_materialize(
            world,
            state_dir,
            registry_root,
            redis_url,
            ranker,
            index_config,
            threads,
            step,
            project,
            timings,
            t_all,
        )
    finally:
        bar.close()
    timings["total"] = round(time.perf_counter() - t_all, 2)
    if verbose:
        if stats is not None:
            print(f"  materialized: {stats}")
        print(summary(version, timings))
    return version


def _state_at(
    step: Callable[..., Any],
    world: World,
    t_ms: int,
    label: str,
    index_name: str,
    queries: int,
    index_config: IndexConfig,
) -> tuple[Snapshot, Embeddings, faiss.Index, Any]:
    """(snapshot, embeddings, candidate index, its info) of the world as of ``t_ms``."""
    snap = step(f"snapshot_{label}", lambda: compute_snapshot(world, t_ms))
    emb = step(f"embeddings_{label}", lambda: train_embeddings(world, t_ms))
    index, info = step(
        index_name, lambda: build_index(emb.items, sample_queries(emb.users, queries), index_config)
    )
    return snap, emb, index, info


def _train_publish_materialize(
    world: World,
    state_dir: str | Path,
    registry_root: str | Path,
    redis_url: str | None,
    ranker: RankerConfig,
    index_config: IndexConfig,
    threads: int,
    step: Callable[..., Any],
    project: str | None,
    timings: dict[str, float],
    t_all: float,
) -> tuple[ModelVersion, dict[str, float] | None]:
    world_dir = state_dir
    faiss.omp_set_num_threads(threads)
    snap_t1, emb_t1, cand_index, _ = _state_at(
        step, world, world.day_ms(ranker.t1_day), "t1", "candidate_index_t1", 100, index_config
    )
    eval_state = None
    if ranker.eval_as_of_t2:  # evaluate as served: everything as of T2
        snap_t2, emb_t2, index_t2, _ = _state_at(
            step, world, world.day_ms(ranker.t2_day), "t2", "candidate_index_t2", 100, index_config
        )
        eval_state = (snap_t2, emb_t2, index_t2)
    extra_train = []
    t1_ms, t2_ms = world.day_ms(ranker.t1_day), world.day_ms(ranker.t2_day)
    for k in range(1, ranker.extra_train_windows + 1):
        ta = t1_ms - k * (t2_ms - t1_ms) // 2
        if ta <= world.start_ms + 7 * 86_400_000:  # too little history before it
            break
        s_k, e_k, i_k, _ = _state_at(step, world, ta, f"t1-{k}", f"candidate_index_t1-{k}", 100, index_config)
        extra_train.append((s_k, e_k, i_k, (ta, ta + (t2_ms - t1_ms))))
    trained = step(
        "train_and_eval",
        lambda: train_ranker(
            world,
            snap_t1,
            emb_t1,
            cand_index,
            ranker,
            RECOMMENDATION_MODEL_FEATURES,
            eval_state,
            tuple(extra_train),
        ),
    )
    profile = step(
        "feature_profile",
        lambda: training_profile(world, snap_t1, emb_t1, cand_index, ranker, trained.model, threads),
    )
    snap, emb, index, info = _state_at(
        step, world, world.now_ms, "now", "serving_index", index_config.sample_queries, index_config
    )
    step("save_serving_state", lambda: save_serving_state(world_dir, snap, emb))

    registry = ModelRegistry(registry_root)
    staging = registry.staging_dir(USE_CASE)
    popularity = snap.items[:, ITEM.slot("i_events_30d")].astype(np.float32)
    try:
        feature_profile.save(staging, profile)
        step(
            "save_artifacts",
            lambda: save_recommendation_artifacts(
                staging,
                trained.model,
                index,
                emb.items,
                [str(i) for i in world.item_ids],
                world.item_category,
                popularity,
            ),
        )
        manifest: dict[str, Any] = {
            "feature_registry_version": REGISTRY.version,
            "model_features": list(RECOMMENDATION_MODEL_FEATURES),
            "metrics": trained.metrics,
            "index": info.as_dict(),
            "project": project,
            "vocabularies": {"category": list(CATEGORIES)},
            "world": {
                "dir": str(Path(world.directory or world_dir).resolve()),
                "preset": world.config.preset,
                "seed": world.config.seed,
                "users": world.n_users,
                "items": world.n_items,
                "events": world.n_events,
                "start_ms": world.start_ms,
                "now_ms": world.now_ms,
            },
            "training": trained.training,
            "embeddings": {
                "dim": int(emb.items.shape[1]),
                "cutoff_ms": emb.cutoff_ms,
                "method": "truncated SVD of log1p-weighted interactions",
            },
        }
        timings["total_before_publish"] = round(time.perf_counter() - t_all, 2)
        manifest["timings_s"] = dict(timings)
        manifest["peak_rss_mb"] = round(peak_rss_mb())
        version = registry.publish(USE_CASE, staging, manifest)
    except BaseException:
        registry.discard(staging)
        raise
    stats = None
    if redis_url:
        stats = step("materialize", lambda: _materialize(world, snap, emb, redis_url, world_dir))
    return version, stats


def training_profile(
    world: World,
    snapshot: Snapshot,
    emb: Embeddings,
    index: faiss.Index,
    cfg: RankerConfig,
    model: Any,
    threads: int = 2,
) -> feature_profile.FeatureProfile:
    """The feature profile of the ranker's training rows (offline/watch/profile.py): the
    candidates of the first training window [T1, T2), built as ``train_ranker`` builds them
    (state at T1), for a seeded sample of its active users (about ``profile.MAX_ROWS`` rows),
    with the model's scores on them."""
    t1, t2 = world.day_ms(cfg.t1_day), world.day_ms(cfg.t2_day)
    active = np.unique(window_labels(world, t1, t2)[0] // world.n_items)
    per_user = max(1, cfg.k_ann + cfg.k_popular + cfg.k_random)
    n_users = max(1, feature_profile.MAX_ROWS // per_user)
    if len(active) > n_users:
        active = np.sort(np.random.default_rng(cfg.seed + 1).choice(active, n_users, replace=False))
    cands = build_candidates(world, snapshot, emb, index, (t1, t2), active, cfg, not cfg.train_served_only)
    if cfg.train_positive_only:
        cands = positives_only(cands)
    columns = tuple(model.feature_name())
    x = assemble_features(cands, snapshot, emb, columns)
    return feature_profile.build_profile(
        x,
        columns,
        np.asarray(model.predict(x, num_threads=threads), np.float64),
        extra={"rows": f"training candidates of [T1, T2) of {len(active):,} sampled users"},
    )


def _materialize(
    world: World, snap: Snapshot, emb: Embeddings, redis_url: str, state_dir: str | Path
) -> dict[str, float]:
    client = connect(redis_url)
    try:
        return materialize_snapshot(client, world, snap, emb, history_root=Path(state_dir) / HISTORY_DIR)
    finally:
        client.close()


def summary(version: ModelVersion, timings: dict[str, float]) -> str:
    """A short human-readable report of a bootstrap run."""
    m, tr, ix, w = (version.manifest[k] for k in ("metrics", "training", "index", "world"))
    lines = [
        f"published {version.use_case}/{version.name} -> {version.path}",
        f"  world {w['preset']}: {w['users']:,} users, {w['items']:,} items, {w['events']:,} events",
        f"  training: {tr['rows']:,} rows, {tr['positives']:,} positives, {tr['users']:,} users, "
        f"best iteration {tr['best_iteration']}, {tr['seconds']:.1f} s",
        f"  index: {ix['type']}{' ' + str(ix['params']) if ix['params'] else ''} "
        f"recall@{ix['k']} = {ix['recall_at_k']:.4f}",
    ]
    k = next(key.split("@")[1] for key in m if key.startswith("model_ndcg@"))
    lines.append(
        f"  held-out NDCG@{k} / recall@{k} (the retrieved candidates, as served | with the missed "
        "positives added):"
    )
    for name in ("model", "embedding", "popularity", "random"):
        lines.append(
            f"    {name:<10} {m[f'retrieved_only_{name}_ndcg@{k}']:.4f} / "
            f"{m[f'retrieved_only_{name}_recall@{k}']:.4f}   |   "
            f"{m[f'{name}_ndcg@{k}']:.4f} / {m[f'{name}_recall@{k}']:.4f}"
        )
    behind = [
        b
        for b in ("popularity", "embedding")
        if m[f"retrieved_only_model_ndcg@{k}"] <= m[f"retrieved_only_{b}_ndcg@{k}"]
    ]
    if behind:
        lines.append(
            f"  WARNING: the ranker does not beat {' and '.join(behind)} on NDCG@{k} of the retrieved "
            "candidates: it is published, but serving that order would do as well (check the split, "
            "the features that drift over time, and the label)"
        )
    lines.append("  timings (s): " + ", ".join(f"{k}={v}" for k, v in timings.items()))
    lines.append(f"  peak memory (RSS of this process): {peak_rss_mb():,.0f} MB")
    return "\n".join(lines)


def peak_rss_mb() -> float:
    """The largest resident set size this process has had, MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m offline.runs.bootstrap", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--world", default="data/world", help="world directory (python -m offline.simulation.world)"
    )
    ap.add_argument("--registry", default="data/registry", help="model registry root")
    ap.add_argument("--redis-url", default=None, help="also materialize features into this Redis")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--index", default="auto", choices=["auto", "flat", "ivf", "hnsw"])
    ap.add_argument("--max-train-users", type=int, default=RankerConfig.max_train_users)
    args = ap.parse_args(argv)
    bootstrap(
        args.world,
        args.registry,
        args.redis_url,
        ranker=RankerConfig(threads=args.threads, max_train_users=args.max_train_users),
        index_config=IndexConfig(kind=args.index, threads=args.threads),
        threads=args.threads,
        verbose=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
