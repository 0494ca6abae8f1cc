"""LightGbmFraudScorer: a probability and per-feature contributions that sum to the raw score;
the reasons built from them follow the registry's reason codes in contribution order."""

import numpy as np
import pytest

from decision_service.features.definitions import REGISTRY
from decision_service.stages.hydrators.transaction_features import TransactionFeatures
from decision_service.stages.policies.rules_and_thresholds import PolicyConfig, RulesAndThresholds
from decision_service.stages.scorers.lightgbm_fraud import LightGbmFraudScorer
from tests.unit.fraud.conftest import COLUMNS, context, make_state, row_with, with_model


def scored_state(artifacts, **row):
    state = make_state(artifacts, context(), row=row_with(**row))
    state.score = LightGbmFraudScorer().score(state)
    return state


@pytest.mark.parametrize(
    "row",
    [{}, {"r_amount_z_user": 2.5, "r_new_device": 1.0}, {"r_amount_z_user": -2.0, "fu_txn_count_30d": 3.0}],
)
def test_probability_and_contributions_match_the_model(fraud_artifacts, row):
    state = scored_state(fraud_artifacts, **row)
    score = state.score
    assert score.contributions.shape == (len(COLUMNS) + 1,)
    assert score.contributions.dtype == np.float32
    raw = float(fraud_artifacts.model.predict(state.row, raw_score=True, num_threads=1)[0])
    assert float(score.contributions.astype(np.float64).sum()) == pytest.approx(raw, abs=1e-5)
    assert 0.0 <= score.probability <= 1.0
    assert score.probability == pytest.approx(
        float(fraud_artifacts.model.predict(state.row, num_threads=1)[0])
    )


def test_signal_features_move_the_score(fraud_artifacts):
    low = scored_state(fraud_artifacts, r_amount_z_user=-2.0, r_new_device=-2.0).score
    high = scored_state(fraud_artifacts, r_amount_z_user=2.5, r_new_device=2.0).score
    assert high.probability > 0.5 > low.probability
    top = int(np.argmax(high.contributions[:-1]))
    assert COLUMNS[top] in ("r_amount_z_user", "r_new_device")


def test_works_on_a_built_row(fraud_artifacts):
    state = make_state(fraud_artifacts, context(), amount_eur=900.0, country="FR")
    state.row = TransactionFeatures().build(state)
    assert 0.0 <= LightGbmFraudScorer().score(state).probability <= 1.0


def test_reasons_follow_contribution_order_and_registry_codes(fraud_artifacts):
    state = scored_state(fraud_artifacts, r_amount_z_user=2.5, r_new_device=1.0, fu_txn_count_30d=-1.0)
    policy = RulesAndThresholds(PolicyConfig(max_reasons=10, min_reason_contribution=0.0))
    reasons = policy.decide(state).reasons
    assert reasons
    contrib = {c: float(v) for c, v in zip(COLUMNS, state.score.contributions[:-1], strict=True)}
    assert [r.contribution for r in reasons] == sorted((r.contribution for r in reasons), reverse=True)
    for r in reasons:
        assert r.contribution == pytest.approx(contrib[r.feature], abs=1e-4)
        low = state.row[0, COLUMNS.index(r.feature)] < fraud_artifacts.medians[COLUMNS.index(r.feature)]
        assert (r.code, r.description) == REGISTRY.features_by_column[r.feature].reason.pick(bool(low))
    assert len({r.code for r in reasons}) == len(reasons)  # each code once


def test_no_row_is_an_error(fraud_artifacts):
    with pytest.raises(ValueError, match="feature row"):
        LightGbmFraudScorer().score(make_state(fraud_artifacts, context()))


class NaNModel:
    def predict(self, row, **kwargs):
        return np.full((len(row), len(COLUMNS) + 1), np.nan)


def test_a_non_finite_score_is_an_error(fraud_artifacts):
    state = make_state(with_model(fraud_artifacts, NaNModel()), context(), row=row_with())
    with pytest.raises(ValueError, match="non-finite"):
        LightGbmFraudScorer().score(state)
