"""LightGBM lambdarank ranker trained on candidates built exactly like serving builds them.

For a snapshot at T1 (features + embeddings + index from events before T1) and a label
window [T1, T2): per user with events in the window, candidates = ANN top-``k_ann`` by user
embedding + the ``k_popular`` most popular items, minus items the user interacted with
before T1 (serving's "seen" filter), restricted to items listed before T1; the user's window
positives are added when retrieval missed them. Labels: purchase = 2, click = 1, else 0.
Features: ``user_item_features`` + ``FeatureAssembler(RECOMMENDATION_MODEL_FEATURES)``, the
same code the serving hydrator runs, so there is no training/serving skew.

Evaluation: the same construction over a later window [T2, T3) with the same snapshot;
NDCG@20 and recall@20 of the model against random, popularity and embedding-dot orders.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from typing import Any

import faiss
import lightgbm as lgb
import numpy as np

from decision_service.features.assembly import FeatureAssembler
from decision_service.features.definitions import (
    ITEM,
    RECOMMENDATION_MODEL_FEATURES,
    REGISTRY,
    USER_ITEM,
)
from decision_service.features.on_demand import user_item_features
from offline.features.build_index import IndexConfig, build_index, sample_queries
from offline.features.embeddings import Embeddings, train_embeddings
from offline.features.snapshot import Snapshot, compute_snapshot
from offline.simulation.world import World
from offline.training.lightgbm_params import LightGbmSettings, categorical_columns

RANKER_LGBM = LightGbmSettings(
    learning_rate=0.08, num_leaves=31, min_data_in_leaf=50, num_boost_round=300, early_stopping_rounds=30
)


@dataclass(frozen=True)
class RankerConfig:
    """Windows (days after the world start), candidate sizes and LightGBM knobs."""

    t1_day: float = 46.0
    t2_day: float = 53.0
    t3_day: float | None = None  # None = world now
    k_ann: int = 200
    k_popular: int = 50
    k_random: int = 100
    """Popularity-weighted random negatives per user. Without them every item outside
    retrieval is a positive (the added ones), and the model learns "low embedding
    similarity = relevant", which breaks on serving's category-fallback candidates."""
    max_train_users: int = 4_000
    max_eval_users: int = 3_000
    valid_share: float = 0.2
    eval_at: int = 20
    eval_as_of_t2: bool = False
    """Evaluate with features, embeddings, index and popularity as of T2 (what a model trained
    at T1 meets when served at T2; ``train_ranker(eval_state=...)``), not as of T1."""
    eval_positive_only: bool = False
    """Evaluate against the positive events only (a purchase, a like), not every event."""
    train_served_only: bool = False
    """Train on the candidates serving retrieves (ANN + popular) only: no added window
    positives, no sampled negatives, i.e. learn to order what is served."""
    train_positive_only: bool = False
    """Train against the positive events only (like/purchase = 1, every other event 0)."""
    extra_train_windows: int = 0
    """Also train on this many earlier windows of the same length, the k-th with its state
    (snapshot, embeddings, index) at T1 - k * (T2 - T1) / 2 and labels over the following
    T2 - T1 (all before T2); more users to learn from, each as served at its time."""
    lgbm: LightGbmSettings = field(default_factory=lambda: RANKER_LGBM)
    threads: int = 2
    seed: int = 7


@dataclass
class CandidateSet:
    """Row-aligned (user row, item row, label) triples, grouped by user (contiguous)."""

    user: np.ndarray  # int64 [n]
    item: np.ndarray  # int64 [n]
    label: np.ndarray  # int8 [n]: 2 purchase, 1 click, 0 none
    group_sizes: np.ndarray  # int64 [n_users in set]
    n_added_positives: int

    def __len__(self) -> int:
        return len(self.user)


def window_labels(world: World, t0_ms: int, t1_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user * n_items + item) keys with events in [t0, t1) and their max label."""
    sl = world.events_between(t0_ms, t1_ms)
    keys = world.event_user[sl].astype(np.int64) * world.n_items + world.event_item[sl]
    lab = np.where(world.event_purchase[sl], 2, 1).astype(np.int8)
    order = np.lexsort((-lab, keys))
    keys, lab = keys[order], lab[order]
    first = np.r_[True, keys[1:] != keys[:-1]]
    return keys[first], lab[first]


def seen_keys(world: World, before_ms: int) -> np.ndarray:
    """Sorted distinct (user * n_items + item) keys of interactions before ``before_ms``."""
    sl = world.events_before(before_ms)
    return np.unique(world.event_user[sl].astype(np.int64) * world.n_items + world.event_item[sl])


def popular_items(snapshot: Snapshot, n: int) -> np.ndarray:
    """Rows of the ``n`` listed items with most events in the 30 days before the snapshot."""
    pop = snapshot.items[:, ITEM.slot("i_events_30d")].astype(np.float64)
    pop = np.where(snapshot.item_listed, pop, -1.0)
    order = np.lexsort((np.arange(len(pop)), -pop))
    return order[:n]


def sampled_negatives(snapshot: Snapshot, n_users: int, k: int, seed: int) -> np.ndarray:
    """[n_users, k] listed items drawn with probability ~ (30-day events + 1) ** 0.75."""
    weight = (snapshot.items[:, ITEM.slot("i_events_30d")].astype(np.float64) + 1.0) ** 0.75
    weight = np.where(snapshot.item_listed, weight, 0.0)
    rng = np.random.default_rng(seed)
    return rng.choice(len(weight), size=(n_users, k), p=weight / weight.sum()).astype(np.int64)


def build_candidates(
    world: World,
    snapshot: Snapshot,
    emb: Embeddings,
    index: faiss.Index,
    window: tuple[int, int],
    users: np.ndarray | None,
    cfg: RankerConfig,
    add_positives: bool = True,
) -> CandidateSet:
    """Serving-style candidates + window positives for the users active in ``window``.

    ``add_positives=False`` keeps only what serving would retrieve (positives it missed
    are simply absent), for an evaluation free of the added-positive artifact.
    """
    pos_keys, pos_lab = window_labels(world, *window)
    active = np.unique(pos_keys // world.n_items)
    if users is not None:
        active = np.intersect1d(active, users)
    n_items = world.n_items
    q = np.ascontiguousarray(emb.users[active], dtype=np.float32)
    k = min(cfg.k_ann, index.ntotal)
    _, ann = index.search(q, k) if len(active) else (None, np.zeros((0, k), np.int64))
    # A user without an embedding gets no ANN candidates (serving falls back to popular items);
    # searching a zero vector would return arbitrary rows (the first ones, in catalog order).
    ann[~np.abs(q).any(axis=1)] = -1
    pop = popular_items(snapshot, cfg.k_popular)
    parts = [ann, np.broadcast_to(pop, (len(active), len(pop)))]
    if add_positives and cfg.k_random and len(active):
        parts.append(sampled_negatives(snapshot, len(active), cfg.k_random, cfg.seed))
    cand = np.concatenate(parts, axis=1)
    cand_user = np.repeat(active, cand.shape[1])
    cand_keys = cand_user * n_items + cand.ravel()
    cand_keys = cand_keys[cand.ravel() >= 0]
    # Window positives of these users (items listed before the snapshot only).
    mine = np.isin(pos_keys // n_items, active) & snapshot.item_listed[pos_keys % n_items]
    mine &= add_positives
    keys = np.unique(np.concatenate([cand_keys, pos_keys[mine]]))
    keys = keys[snapshot.item_listed[keys % n_items]]
    keys = keys[~np.isin(keys, seen_keys(world, snapshot.as_of_ms), assume_unique=True)]
    retrieved = np.isin(keys, cand_keys, assume_unique=False)
    at = np.searchsorted(pos_keys, keys)
    hit = (at < len(pos_keys)) & (pos_keys[np.minimum(at, len(pos_keys) - 1)] == keys)
    label = np.where(hit, pos_lab[np.minimum(at, len(pos_keys) - 1)], 0).astype(np.int8)
    user = keys // n_items
    # Users whose every positive was filtered out (e.g. only repeats) carry no signal.
    has_pos = np.bincount(user, weights=label > 0, minlength=world.n_users) > 0
    keep = has_pos[user]
    user, item, label = user[keep], keys[keep] % n_items, label[keep]
    _, sizes = np.unique(user, return_counts=True)
    return CandidateSet(user, item, label, sizes, int((~retrieved[keep] & (label > 0)).sum()))


def assemble_features(
    cands: CandidateSet, snapshot: Snapshot, emb: Embeddings, columns: list[str] | tuple[str, ...]
) -> np.ndarray:
    """Model matrix [n, len(columns)] via the serving code (on-demand cross + assembler)."""
    users = snapshot.users[cands.user]
    items = snapshot.items[cands.item]
    cross = user_item_features(users, emb.users[cands.user], items, emb.items[cands.item])
    return FeatureAssembler(columns).assemble(users, items, cross)


def ranking_metrics(
    scores: np.ndarray, labels: np.ndarray, group_sizes: np.ndarray, k: int, seed: int = 0
) -> dict[str, float]:
    """Mean NDCG@k (gain 2^label - 1) and recall@k (share of positives in top k) over groups.

    Ties in ``scores`` are broken at random (seeded), so constant scores measure "random".
    """
    n = len(scores)
    gid = np.repeat(np.arange(len(group_sizes)), group_sizes)
    start = np.concatenate([[0], np.cumsum(group_sizes)[:-1]])
    tie = np.random.default_rng(seed).random(n)
    order = np.lexsort((tie, -scores, gid))
    rank = np.arange(n) - start[gid[order]]
    gain = (2.0 ** labels[order] - 1.0) / np.log2(rank + 2.0)
    top = rank < k
    dcg = np.bincount(gid[order][top], weights=gain[top], minlength=len(group_sizes))
    ideal_order = np.lexsort((-labels, gid))
    irank = np.arange(n) - start[gid[ideal_order]]
    igain = (2.0 ** labels[ideal_order] - 1.0) / np.log2(irank + 2.0)
    itop = irank < k
    idcg = np.bincount(gid[ideal_order][itop], weights=igain[itop], minlength=len(group_sizes))
    pos = labels > 0
    n_pos = np.bincount(gid, weights=pos, minlength=len(group_sizes))
    hits = np.bincount(gid[order][top], weights=pos[order][top], minlength=len(group_sizes))
    ok = n_pos > 0
    return {
        f"ndcg@{k}": float(np.mean(dcg[ok] / idcg[ok])),
        f"recall@{k}": float(np.mean(hits[ok] / n_pos[ok])),
    }


def _split_users(users: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(users)
    n_valid = max(1, int(round(len(perm) * share)))
    return np.sort(perm[n_valid:]), np.sort(perm[:n_valid])


def _subset(c: CandidateSet, users: np.ndarray) -> CandidateSet:
    keep = np.isin(c.user, users)
    u = c.user[keep]
    _, sizes = np.unique(u, return_counts=True)
    return CandidateSet(u, c.item[keep], c.label[keep], sizes, 0)


@dataclass
class TrainResult:
    model: lgb.Booster
    metrics: dict[str, Any]
    training: dict[str, Any]


def train_ranker(
    world: World,
    snapshot: Snapshot,
    emb: Embeddings,
    index: faiss.Index,
    cfg: RankerConfig = RankerConfig(),
    columns: tuple[str, ...] = RECOMMENDATION_MODEL_FEATURES,
    eval_state: tuple[Snapshot, Embeddings, faiss.Index] | None = None,
    extra_train: tuple[tuple[Snapshot, Embeddings, faiss.Index, tuple[int, int]], ...] = (),
) -> TrainResult:
    """Trains on [T1, T2) with the snapshot/embeddings/index at T1 and evaluates on [T2, T3)
    with ``eval_state`` (snapshot, embeddings, index as of T2: ``cfg.eval_as_of_t2``), else
    with the T1 state."""
    t0 = time.perf_counter()
    t1, t2 = world.day_ms(cfg.t1_day), world.day_ms(cfg.t2_day)
    t3 = world.now_ms if cfg.t3_day is None else world.day_ms(cfg.t3_day)
    if snapshot.as_of_ms != t1 or emb.cutoff_ms != t1:
        raise ValueError("snapshot and embeddings must be taken at T1")
    rng = np.random.default_rng(cfg.seed)

    parts_c, parts_x = [], []
    for w, (w_snap, w_emb, w_index, (wa, wb)) in enumerate(((snapshot, emb, index, (t1, t2)), *extra_train)):
        active = np.unique(window_labels(world, wa, wb)[0] // world.n_items)
        if len(active) > cfg.max_train_users:
            active = np.sort(rng.choice(active, cfg.max_train_users, replace=False))
        c = build_candidates(world, w_snap, w_emb, w_index, (wa, wb), active, cfg, not cfg.train_served_only)
        if cfg.train_positive_only:
            c = positives_only(c)
        parts_x.append(assemble_features(c, w_snap, w_emb, columns))
        # group key (window, user): the same user in two windows is two queries
        parts_c.append(
            CandidateSet(w * world.n_users + c.user, c.item, c.label, c.group_sizes, c.n_added_positives)
        )
    cands = CandidateSet(
        np.concatenate([c.user for c in parts_c]),
        np.concatenate([c.item for c in parts_c]),
        np.concatenate([c.label for c in parts_c]),
        np.concatenate([c.group_sizes for c in parts_c]),
        sum(c.n_added_positives for c in parts_c),
    )
    x = np.concatenate(parts_x)
    tr_users, va_users = _split_users(np.unique(cands.user), cfg.valid_share, cfg.seed)
    tr_mask, va_mask = np.isin(cands.user, tr_users), np.isin(cands.user, va_users)
    tr, va = _subset(cands, tr_users), _subset(cands, va_users)
    categorical = categorical_columns(columns)
    params = cfg.lgbm.params(
        "lambdarank",
        threads=cfg.threads,
        seed=cfg.seed,
        metric="ndcg",
        eval_at=[cfg.eval_at],
        lambdarank_truncation_level=2 * cfg.eval_at,
    )
    names = list(columns)
    dtrain = lgb.Dataset(
        x[tr_mask],
        tr.label,
        group=tr.group_sizes,
        feature_name=names,
        categorical_feature=categorical,
        free_raw_data=True,
    )
    dvalid = lgb.Dataset(x[va_mask], va.label, group=va.group_sizes, reference=dtrain)
    model = lgb.train(
        params,
        dtrain,
        num_boost_round=cfg.lgbm.num_boost_round,
        valid_sets=[dvalid],
        callbacks=[lgb.early_stopping(cfg.lgbm.early_stopping_rounds, verbose=False)],
    )
    train_s = time.perf_counter() - t0

    # Held-out window, same snapshot and candidate construction; users not used to train.
    ev_users = np.unique(window_labels(world, t2, t3)[0] // world.n_items)
    if len(ev_users) > cfg.max_eval_users:
        ev_users = np.sort(rng.choice(ev_users, cfg.max_eval_users, replace=False))
    metrics: dict[str, Any] = {}
    k = cfg.eval_at
    ev_snap, ev_emb, ev_index = eval_state if eval_state is not None else (snapshot, emb, index)
    if eval_state is not None and ev_snap.as_of_ms != t2:
        raise ValueError("the evaluation state must be taken at T2")
    for prefix, add in (("", True), ("retrieved_only_", False)):
        ev = build_candidates(world, ev_snap, ev_emb, ev_index, (t2, t3), ev_users, cfg, add)
        if cfg.eval_positive_only:
            ev = positives_only(ev)
        metrics.update(_evaluate(model, ev, ev_snap, ev_emb, columns, k, cfg, prefix))
    metrics["evaluated_as_of"] = "T2" if eval_state is not None else "T1"
    metrics["relevance"] = (
        "positive events" if cfg.eval_positive_only else "every event (positive 2, other 1)"
    )
    metrics["valid_ndcg@20"] = round(float(model.best_score["valid_0"][f"ndcg@{k}"]), 4)
    metrics["eval_window_days"] = [cfg.t2_day, round((t3 - world.start_ms) / 86_400_000, 2)]
    gain = model.feature_importance("gain")
    top = np.argsort(-gain)[:8]
    training = {
        "rows": int(len(cands)),
        "positives": int((cands.label > 0).sum()),
        "purchases": int((cands.label == 2).sum()),
        "positives_added": cands.n_added_positives,
        "users": int(len(cands.group_sizes)),
        "train_users": int(len(tr_users)),
        "valid_users": int(len(va_users)),
        "best_iteration": int(model.best_iteration),
        "window_days": [cfg.t1_day, cfg.t2_day],
        # every window learned from (the split's first, then the earlier ones), in days
        "windows_days": [
            [round((a - world.start_ms) / 86_400_000, 3), round((b - world.start_ms) / 86_400_000, 3)]
            for a, b in [(t1, t2), *(w[3] for w in extra_train)]
        ],
        "params": {k_: v for k_, v in params.items() if k_ not in ("metric", "verbosity")},
        "top_features_by_gain": [names[j] for j in top],
        "seconds": round(train_s, 2),
        "registry_version": REGISTRY.version,
    }
    return TrainResult(model, metrics, training)


def positives_only(ev: CandidateSet) -> CandidateSet:
    """``ev`` with relevance = the positive events only (label 2 -> 1, every other event -> 0);
    users without a positive event are dropped."""
    gid = np.repeat(np.arange(len(ev.group_sizes)), ev.group_sizes)
    has = np.bincount(gid, weights=ev.label == 2, minlength=len(ev.group_sizes)) > 0
    keep = has[gid]
    label = (ev.label[keep] == 2).astype(np.int8)
    return CandidateSet(ev.user[keep], ev.item[keep], label, ev.group_sizes[has], ev.n_added_positives)


def _evaluate(
    model: lgb.Booster,
    ev: CandidateSet,
    snapshot: Snapshot,
    emb: Embeddings,
    columns: tuple[str, ...],
    k: int,
    cfg: RankerConfig,
    prefix: str,
) -> dict[str, Any]:
    """NDCG/recall@k of the model and the random, popularity and embedding-dot orders."""
    xe = assemble_features(ev, snapshot, emb, columns)
    orders = {
        "model": model.predict(xe, num_threads=cfg.threads),
        "random": np.zeros(len(ev)),
        "popularity": snapshot.items[ev.item, ITEM.slot("i_events_30d")],
        "embedding": user_item_features(
            snapshot.users[ev.user], emb.users[ev.user], snapshot.items[ev.item], emb.items[ev.item]
        )[:, USER_ITEM.columns.index("x_emb_dot")],
    }
    metrics: dict[str, Any] = {}
    for name, scores in orders.items():
        for m, v in ranking_metrics(
            np.asarray(scores, np.float64), ev.label, ev.group_sizes, k, cfg.seed
        ).items():
            metrics[f"{prefix}{name}_{m}"] = round(v, 4)
    metrics[f"{prefix}eval_users"] = int(len(ev.group_sizes))
    metrics[f"{prefix}eval_rows"] = int(len(ev))
    if not prefix:
        metrics["eval_positives_added"] = ev.n_added_positives
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m offline.training.train_ranker", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--world", default="data/world", help="world directory")
    ap.add_argument("--t1-day", type=float, default=RankerConfig.t1_day)
    ap.add_argument("--t2-day", type=float, default=RankerConfig.t2_day)
    ap.add_argument("--threads", type=int, default=RankerConfig.threads)
    ap.add_argument("--max-train-users", type=int, default=RankerConfig.max_train_users)
    ap.add_argument("--model-out", default=None, help="save the LightGBM model to this file")
    args = ap.parse_args(argv)
    cfg = RankerConfig(
        t1_day=args.t1_day, t2_day=args.t2_day, threads=args.threads, max_train_users=args.max_train_users
    )
    world = World.load(args.world)
    t1 = world.day_ms(cfg.t1_day)
    snap = compute_snapshot(world, t1)
    emb = train_embeddings(world, t1)
    index, _ = build_index(emb.items, sample_queries(emb.users, 200), IndexConfig(threads=cfg.threads))
    res = train_ranker(world, snap, emb, index, cfg)
    print(json.dumps({"metrics": res.metrics, "training": res.training}, indent=2))
    if args.model_out:
        res.model.save_model(args.model_out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
