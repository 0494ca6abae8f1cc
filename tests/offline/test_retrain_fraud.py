"""Fraud retrain: time split, ROC AUC and recall at a review rate, publish only if not worse."""

from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest

from decision_service.features.definitions import FRAUD_MODEL_FEATURES
from decision_service.models.fraud_artifacts import FRAUD, FraudArtifacts
from decision_service.models.registry import ModelRegistry
from offline.loop.retrain import FRAUD_RETRAIN_LGBM, FraudRetrainConfig, recall_at_rate, retrain_fraud

CFG = FraudRetrainConfig(
    threads=1,
    lgbm=replace(FRAUD_RETRAIN_LGBM, num_boost_round=60, early_stopping_rounds=10),
    k_neighbours=10,
    max_index_rows=6000,
)


def logged_verdicts(n: int, inverted_until: int = 0, seed: int = 0) -> pa.Table:
    """Verdicts where fraud follows r_new_device + r_foreign_country; the oldest
    ``inverted_until`` have it backwards; a few were declined (unobserved, left out)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, len(FRAUD_MODEL_FEATURES))).astype(np.float32)
    signal = x[:, FRAUD_MODEL_FEATURES.index("r_new_device")] + x[:, FRAUD_MODEL_FEATURES.index("r_foreign_country")]
    signal = np.where(np.arange(n) < inverted_until, 2.0 - signal, signal)
    fraud = rng.random(n) < 0.02 + 0.5 * (signal / 2) ** 4
    action = np.where(rng.random(n) < 0.02, "DECLINE", "APPROVE")
    cols = {
        "decision_id": pa.array([f"d{i:05d}" for i in range(n)]),
        "decided_at": pa.array((1_780_000_000_000 + np.arange(n) * 1000).astype("datetime64[ms]"),
                               pa.timestamp("ms", tz="UTC")),
        "action": pa.array(action),
        "degraded": pa.array(np.zeros(n, bool)),
        "fraud": pa.array(fraud),
    }
    for j, name in enumerate(FRAUD_MODEL_FEATURES):
        cols[name] = pa.array(x[:, j])
    return pa.table(cols)


def test_recall_at_rate():
    labels = np.array([1, 0, 0, 1, 0, 0, 0, 0, 0, 0], bool)
    scores = np.linspace(1, 0, 10)
    assert recall_at_rate(labels, scores, 0.1) == 0.5  # the top 1 of 10 catches one of two
    assert recall_at_rate(labels, scores, 0.4) == 1.0
    assert np.isnan(recall_at_rate(np.zeros(3, bool), scores[:3], 0.5))


def test_fraud_publish_refuses_a_worse_model_unless_forced(tiny_fraud_bootstrap, tmp_path):
    _, shared_registry, base = tiny_fraud_bootstrap
    root = tmp_path / "registry"
    shutil.copytree(shared_registry, root)
    registry = ModelRegistry(root)

    good = retrain_fraud(logged_verdicts(4000), root, CFG)
    assert good.published, good.reason
    assert good.current_version == base.name and registry.current_name(FRAUD) == good.version
    assert good.candidate["auc"] > good.current["auc"] + 0.05
    assert good.candidate["review_rate"] == 0.05 and good.candidate["rows"] == good.current["rows"]
    version = registry.current(FRAUD)
    served = FraudArtifacts.load(version)  # servable; index: labelled logged rows + newest base rows
    assert base.manifest["neighbours"]["rows"] + good.training["rows"] > 6000
    assert served.neighbours.index.ntotal == 6000 and served.neighbours.labels[-good.training["rows"]:].any()
    assert good.training["rows"] < 4000  # declined verdicts left out
    assert version.manifest["parent_version"] == base.name
    # kind: a retrain changing what nn_* means: the index keeps the parent's k (the logged
    # neighbour features the candidate learned from were computed with it), not CFG's 10
    assert served.neighbours.k == base.manifest["neighbours"]["k"] == 50
    assert version.manifest["left_out"] == {}  # the synthetic payments feed every feature

    bad = logged_verdicts(4000, inverted_until=3000, seed=1)
    worse = retrain_fraud(bad, root, CFG)
    assert not worse.published and worse.candidate["auc"] < worse.current["auc"]
    assert registry.current_name(FRAUD) == good.version
    forced = retrain_fraud(bad, root, CFG, force=True)
    assert forced.published and forced.reason.startswith("forced")

    logged = FraudRetrainConfig(
        threads=1, review_rate=None, lgbm=replace(FRAUD_RETRAIN_LGBM, num_boost_round=20), max_index_rows=2000
    )
    logged_rate = retrain_fraud(logged_verdicts(600), root, logged)
    assert logged_rate.candidate["review_rate"] == 0.0  # holdout: only APPROVE rows remain
    with pytest.raises(ValueError, match="no labelled"):
        retrain_fraud(logged_verdicts(10).slice(0, 0), root, CFG)
    few = logged_verdicts(100, seed=4)  # 5 fraud labels on the training side: fewer than min_positives
    with pytest.raises(ValueError, match="wait for more outcomes"):
        retrain_fraud(few, root, CFG, force=True)  # not even forced
