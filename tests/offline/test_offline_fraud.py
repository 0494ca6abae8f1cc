"""The synthetic payments world and the fraud training job."""

from __future__ import annotations

import numpy as np

from decision_service.features.definitions import FRAUD_MODEL_FEATURES
from decision_service.models.fraud_artifacts import FraudArtifacts
from offline.features.fraud_features import FraudHistory
from offline.simulation.fraud_world import PATTERNS, FraudWorld, fraud_preset, generate_fraud_world


def test_world_is_deterministic_and_has_every_pattern():
    a = generate_fraud_world(fraud_preset("tiny", n_users=300, days=30))
    b = generate_fraud_world(fraud_preset("tiny", n_users=300, days=30))
    assert np.array_equal(a.amount_minor, b.amount_minor) and np.array_equal(a.occurred_ms, b.occurred_ms)
    assert np.all(np.diff(a.occurred_ms) >= 0)
    for i in range(1, len(PATTERNS)):
        assert (a.pattern == i).sum() > 0, PATTERNS[i]
    # labels arrive late: every chargeback comes at least a day after its payment
    cb = a.chargeback_ms >= 0
    assert np.all(a.chargeback_ms[cb] - a.occurred_ms[cb] >= 86_400_000)


def test_velocity_counts_only_earlier_payments_of_the_same_party():
    w = generate_fraud_world(fraud_preset("tiny", n_users=200, days=10))
    h = FraudHistory(w)
    rows = np.arange(0, w.n, 97)
    v = h.velocity(rows)
    for j, r in enumerate(rows[:50].tolist()):
        t = w.occurred_ms[r]
        prior = (w.user == w.user[r]) & (w.occurred_ms >= t - 86_400_000) & (w.occurred_ms <= t)
        prior[r] = False
        prior &= np.arange(w.n) < r  # same-millisecond payments count only if earlier
        assert v[j, 4] == prior.sum()  # v_user_count_24h
        assert abs(v[j, 5] - h.eur[prior].sum()) < 1e-2 * max(1.0, h.eur[prior].sum())


def test_model_beats_the_rules_only_baseline_on_held_out_days(tiny_fraud_bootstrap):
    _, _, version = tiny_fraud_bootstrap
    m = version.manifest["metrics"]
    assert m["eval_positives"] >= 50
    # time-based split: evaluation days come after every training day
    assert version.manifest["training"]["window_days"][1] < m["eval_window_days"][0]
    assert m["model_auc"] > 0.9
    assert m["model_auc"] >= m["rules_auc"] + 0.01, m
    assert m["model_average_precision"] >= m["rules_average_precision"] + 0.1, m


def test_published_version_loads_and_checks_its_features(tiny_fraud_bootstrap):
    world_dir, _, version = tiny_fraud_bootstrap
    artifacts = FraudArtifacts.load(version)
    assert artifacts.assembler.columns == list(FRAUD_MODEL_FEATURES)
    assert artifacts.neighbours.index.ntotal == version.manifest["neighbours"]["rows"]
    assert FraudWorld.load(world_dir).n == version.manifest["world"]["transactions"]
