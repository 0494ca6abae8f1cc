"""Index recall, ranker quality, the published version and Redis materialization."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import redis

from decision_service.devtools.local_redis import LocalRedis
from decision_service.domain.decision import now_ms
from decision_service.features.definitions import (
    ITEM,
    RECOMMENDATION_MODEL_FEATURES,
    REGISTRY,
    USER,
    USER_EMBEDDING,
)
from decision_service.features.packed import decode
from decision_service.features.redis_store import feature_keys, seen_key
from decision_service.models.recommendation_artifacts import RecommendationArtifacts
from decision_service.models.registry import ModelRegistry, ModelVersion
from offline.features.build_index import IndexConfig, build_index, sample_queries
from offline.features.embeddings import train_embeddings
from offline.features.materialize import load_serving_state, materialize_world
from offline.simulation.world import World
from offline.training.train_ranker import ranking_metrics

Bootstrapped = tuple[Path, Path, ModelVersion]


def test_flat_index_recall_is_exact(tiny_world_dir: Path) -> None:
    world = World.load(tiny_world_dir)
    emb = train_embeddings(world, world.now_ms)
    index, info = build_index(emb.items, sample_queries(emb.users, 200), IndexConfig(kind="flat"))
    assert info.type == "IndexFlatIP" and info.recall_at_k == 1.0
    # every item with an embedding is indexed under its catalog row; cold (all-zero) ones are not
    warm = np.flatnonzero(np.any(emb.items != 0, axis=1))
    assert 0 < len(warm) < world.n_items and index.ntotal == info.n_items == len(warm)
    queries = sample_queries(emb.users, 20)
    scores, rows = index.search(queries, 10)
    exact = np.sort(queries @ emb.items.T, axis=1)[:, ::-1][:, :10]
    assert np.all(exact > 0)  # so the cold items (score 0) cannot belong to the exact top 10
    assert np.all(np.isin(rows, warm)) and np.allclose(scores, exact, atol=1e-5)
    assert np.allclose(np.einsum("qd,qkd->qk", queries, emb.items[rows]), scores, atol=1e-5)


def test_ivf_index_stores_compressed_lists_under_catalog_rows(tiny_world_dir: Path) -> None:
    world = World.load(tiny_world_dir)
    emb = train_embeddings(world, world.now_ms)
    index, info = build_index(emb.items, sample_queries(emb.users, 100), IndexConfig(kind="ivf"))
    assert info.type == "IndexIVFPQFastScan+refine" and info.params["storage"] == "pq4fs"
    assert 0.5 < info.recall_at_k <= 1.0
    assert [t["nprobe"] for t in info.tried] == list(IndexConfig.ivf_nprobe)[: len(info.tried)]
    warm = np.flatnonzero(np.any(emb.items != 0, axis=1))
    _, rows = index.search(sample_queries(emb.users, 10), 20)
    assert np.all(np.isin(rows[rows >= 0], warm))


def test_hnsw_index_is_measured(tiny_world_dir: Path) -> None:
    world = World.load(tiny_world_dir)
    emb = train_embeddings(world, world.now_ms)
    _, info = build_index(emb.items, sample_queries(emb.users, 100), IndexConfig(kind="hnsw"))
    assert info.type == "IndexHNSWFlat" and 0.5 < info.recall_at_k <= 1.0 and info.tried


def test_ranking_metrics() -> None:
    labels = np.array([0, 1, 0, 2, 0, 0], np.int8)
    sizes = np.array([4, 2])
    perfect = ranking_metrics(labels.astype(float), labels, sizes, k=20)
    assert perfect["ndcg@20"] == 1.0 and perfect["recall@20"] == 1.0
    worst = ranking_metrics(-labels.astype(float), labels, sizes, k=1)
    assert worst["ndcg@1"] == 0.0


def test_model_beats_baselines(tiny_bootstrap: Bootstrapped) -> None:
    m = tiny_bootstrap[2].manifest["metrics"]
    assert m["model_ndcg@20"] >= m["random_ndcg@20"] + 0.05
    assert m["model_ndcg@20"] >= m["popularity_ndcg@20"]
    assert m["retrieved_only_model_ndcg@20"] >= m["retrieved_only_random_ndcg@20"] + 0.05
    assert m["retrieved_only_model_ndcg@20"] >= m["retrieved_only_popularity_ndcg@20"]


def test_published_version_loads(tiny_bootstrap: Bootstrapped) -> None:
    world_dir, registry_root, version = tiny_bootstrap
    current = ModelRegistry(registry_root).current("recommendation")
    assert current.name == version.name
    art = RecommendationArtifacts.load(current)
    world = World.load(world_dir)
    assert art.model.feature_name() == list(RECOMMENDATION_MODEL_FEATURES)
    assert world.n_items == len(art.catalog) == len(art.item_embeddings)
    warm = int(np.any(np.asarray(art.item_embeddings) != 0, axis=1).sum())
    assert art.index.ntotal == warm == version.manifest["index"]["n_items"]  # cold items not indexed
    assert list(art.catalog.item_ids[:3]) == ["i0000000", "i0000001", "i0000002"]
    np.testing.assert_array_equal(art.catalog.categories, world.item_category)
    m = version.manifest
    assert m["feature_registry_version"] == REGISTRY.version
    assert m["index"]["recall_at_200"] == 1.0
    assert {"rows", "positives", "users", "seconds"} <= set(m["training"])
    assert m["world"]["preset"] == "tiny" and m["world"]["now_ms"] == world.now_ms
    # The index and embeddings are those of the serving state saved for materialization.
    _, emb = load_serving_state(world_dir)
    np.testing.assert_array_equal(np.asarray(art.item_embeddings), emb.items)
    q = emb.users[np.abs(emb.users).sum(axis=1) > 0][:5]
    _, ids = art.index.search(q, 10)
    np.testing.assert_array_equal(ids[:, 0], np.argmax(q @ emb.items.T, axis=1))


def test_materialize_round_trips(tiny_bootstrap: Bootstrapped, redis_server: LocalRedis) -> None:
    world_dir = tiny_bootstrap[0]
    stats = materialize_world(world_dir, redis_server.url, max_seen_items=500)
    snap, emb = load_serving_state(world_dir)
    world = World.load(world_dir)
    assert stats["users"] == world.n_users and stats["items"] == int(snap.item_listed.sum())
    client: redis.Redis = redis_server.client()
    try:
        ids = ["u0000003", "u0000777", "u9999999"]
        got = decode(USER, client.mget(feature_keys(USER, ids)), now_ms())
        np.testing.assert_array_equal(got.values[:2], snap.users[[3, 777]])
        assert list(got.status) == [0, 0, 1]  # present, present, missing
        got = decode(USER_EMBEDDING, client.mget(feature_keys(USER_EMBEDDING, ids[:1])))
        np.testing.assert_array_equal(got.values[0], emb.users[3])
        got = decode(ITEM, client.mget(feature_keys(ITEM, ["i0000005"])))
        np.testing.assert_array_equal(got.values[0], snap.items[5])
        seen = client.zrevrange(seen_key("u0000003"), 0, -1, withscores=True)
        mine = world.event_ms[world.event_user == 3]
        assert len(seen) == len(np.unique(world.event_item[world.event_user == 3])) or len(seen) == 500
        assert seen[0][1] == float(mine.max())
    finally:
        client.close()


def test_extra_training_windows_learn_from_earlier_states_and_never_past_the_split(
    tiny_world_dir: Path, tmp_path: Path
) -> None:
    """extra_train_windows: each earlier window has its own state and its labels end before
    T2 (the evaluation's start): more users to learn from, nothing from the evaluated future."""
    from offline.runs.bootstrap import bootstrap_world
    from offline.simulation.world import World
    from offline.training.train_ranker import RankerConfig

    world = World.load(tiny_world_dir)
    base = RankerConfig(threads=1)
    cfg = dataclasses.replace(base, extra_train_windows=2, train_positive_only=True)
    version = bootstrap_world(world, tmp_path / "state", tmp_path / "registry", ranker=cfg, threads=1)
    windows = version.manifest["training"]["windows_days"]
    assert len(windows) == 3 and windows[0] == [base.t1_day, base.t2_day]
    span = base.t2_day - base.t1_day
    for k, (a, b) in enumerate(windows[1:], start=1):
        assert a == pytest.approx(base.t1_day - k * span / 2, abs=1e-3) and b < base.t2_day
    # more (window, user) queries than the split's window alone has users with a positive
    t1, t2 = world.day_ms(base.t1_day), world.day_ms(base.t2_day)
    inside = (world.event_ms >= t1) & (world.event_ms < t2) & world.event_purchase
    assert version.manifest["training"]["users"] > len(np.unique(world.event_user[inside]))
