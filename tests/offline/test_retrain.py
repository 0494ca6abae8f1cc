"""Retrain: time split, IPS metrics, and publish only when the candidate is not worse."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest

from decision_service.features.definitions import RECOMMENDATION_MODEL_FEATURES
from decision_service.models.registry import ModelRegistry
from offline.loop.retrain import RETRAIN_LGBM, RetrainConfig, ips_ranking_metrics, retrain

CFG = RetrainConfig(threads=1, lgbm=replace(RETRAIN_LGBM, num_boost_round=60, early_stopping_rounds=10))


def logged_slates(n_decisions: int, inverted_until: int = 0, seed: int = 0) -> pa.Table:
    """Shown slates of 10 where clicks follow x_emb_cosine; the first ``inverted_until``
    decisions (the oldest) have it backwards, like a world whose tastes flipped."""
    rng = np.random.default_rng(seed)
    n = n_decisions * 10
    x = rng.random((n, len(RECOMMENDATION_MODEL_FEATURES))).astype(np.float32)
    cos = x[:, RECOMMENDATION_MODEL_FEATURES.index("x_emb_cosine")]
    decision = np.repeat(np.arange(n_decisions), 10)
    signal = np.where(decision < inverted_until, 1.0 - cos, cos)
    click = rng.random(n) < 0.05 + 0.6 * signal**3
    cols = {
        "decision_id": pa.array([f"d{d:05d}" for d in decision]),
        "decided_at": pa.array(
            (1_780_000_000_000 + decision * 1000).astype("datetime64[ms]"), pa.timestamp("ms", tz="UTC")
        ),
        "propensity": pa.array(np.ones(n, np.float32)),
        "click": pa.array(click),
        "purchase": pa.array(np.zeros(n, bool)),
    }
    for j, name in enumerate(RECOMMENDATION_MODEL_FEATURES):
        cols[name] = pa.array(x[:, j])
    return pa.table(cols)


def test_publish_refuses_a_worse_model_unless_forced(tiny_bootstrap, tmp_path):
    _, shared_registry, _ = tiny_bootstrap
    root = tmp_path / "registry"
    shutil.copytree(shared_registry, root)
    registry = ModelRegistry(root)

    good = retrain(logged_slates(600), root, CFG, force=True)
    assert good.published and registry.current_name("recommendation") == good.version
    assert good.candidate["ndcg@5"] > 0.5

    # Trained on the (old, inverted) past, evaluated on the recent held-out decisions.
    bad_data = logged_slates(600, inverted_until=450, seed=1)
    worse = retrain(bad_data, root, CFG)
    assert not worse.published and worse.version is None
    assert worse.candidate["ndcg@5"] < worse.current["ndcg@5"]
    assert registry.current_name("recommendation") == good.version
    assert registry.versions("recommendation")[-1] == good.version  # nothing half-published

    forced = retrain(bad_data, root, CFG, force=True)
    assert forced.published and forced.reason.startswith("forced")
    version = registry.current("recommendation")
    assert version.name == forced.version
    assert version.manifest["metrics"]["current"]["ndcg@5"] == pytest.approx(worse.current["ndcg@5"])
    assert version.manifest["model_features"] == list(RECOMMENDATION_MODEL_FEATURES)
    assert version.manifest["parent_version"] == good.version


def test_kind_learning_from_noise_too_few_positives_train_nothing_even_forced(tiny_bootstrap, tmp_path):
    """A reviewer forced a publish on one held-out click: the model scored every item 0.0.
    Below min_positives on either side nothing is trained, with or without force."""
    _, shared_registry, _ = tiny_bootstrap
    root = tmp_path / "registry"
    shutil.copytree(shared_registry, root)
    before = ModelRegistry(root).versions("recommendation")
    slates = logged_slates(600)
    held = np.zeros(slates.num_rows, bool)
    held[-1500:] = True  # the latest 150 decisions: the held-out side of the time split
    clicks = slates.column("click").to_numpy(zero_copy_only=False) & ~(held & (np.arange(len(held)) % 500 != 0))
    sparse = slates.set_column(slates.column_names.index("click"), "click", pa.array(clicks))
    with pytest.raises(ValueError, match=r"only \d positive 'click' labels in the held-out decisions"):
        retrain(sparse, root, CFG, force=True)
    assert ModelRegistry(root).versions("recommendation") == before


def test_ips_metrics_weight_rare_items_up():
    groups = np.array([0, 0, 0])
    rel = np.array([0.0, 1.0, 1.0])
    scores = np.array([3.0, 2.0, 1.0])  # top-1 misses both positives...
    w = np.array([1.0, 1.0, 4.0])  # ...and the one at rank 3 was shown with propensity 1/4
    m = ips_ranking_metrics(scores, rel, w, groups, k=2)
    assert m["recall@2"] == pytest.approx(1 / 5)
    assert ips_ranking_metrics(-scores, rel, w, groups, k=2)["recall@2"] == pytest.approx(1.0)
