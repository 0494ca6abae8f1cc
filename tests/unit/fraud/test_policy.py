"""RulesAndThresholds: actions from thresholds, block lists, hard limits and the degraded
fallbacks, with the fired rule codes (deciding ones first) and the reasons."""

import numpy as np
import pytest

from decision_service.domain.fraud import FraudAction
from decision_service.stages.policies.rules_and_thresholds import PolicyConfig, RulesAndThresholds, risk_score
from tests.unit.fraud.conftest import COLUMNS, context, make_state, row_with

APPROVE, REVIEW, DECLINE = FraudAction.APPROVE, FraudAction.REVIEW, FraudAction.DECLINE
REVIEW_CFG = PolicyConfig()  # review 40, decline 85, amount 10k, 12 per 10 min, fail to review
OPEN_CFG = PolicyConfig(degraded_fallback="open")


def decide(artifacts, config=REVIEW_CFG, ctx="default", probability=0.1, row=None, **txn):
    ctx = context() if ctx == "default" else ctx
    state = make_state(artifacts, ctx, row=row_with() if row is None else row, probability=probability, **txn)
    verdict = RulesAndThresholds(config).decide(state)
    return verdict, [r.code for r in verdict.fired_rules]


@pytest.mark.parametrize(
    ("probability", "action", "codes", "risk"),
    [
        (0.10, APPROVE, ["THRESHOLD_APPROVE"], 10),
        (0.395, APPROVE, ["THRESHOLD_APPROVE"], 39),
        (0.405, REVIEW, ["THRESHOLD_REVIEW"], 40),
        (0.60, REVIEW, ["THRESHOLD_REVIEW"], 60),
        (0.855, DECLINE, ["THRESHOLD_DECLINE"], 85),
        (1.0, DECLINE, ["THRESHOLD_DECLINE"], 99),
    ],
)
def test_thresholds(fraud_artifacts, probability, action, codes, risk):
    verdict, fired = decide(fraud_artifacts, probability=probability)
    assert (verdict.action, fired, verdict.risk_score) == (action, codes, risk)


@pytest.mark.parametrize(
    ("kind", "code"),
    [("device", "BLOCKLIST_DEVICE"), ("ip", "BLOCKLIST_IP"), ("instrument", "BLOCKLIST_INSTRUMENT")],
)
def test_each_block_list_declines_and_is_named_first(fraud_artifacts, kind, code):
    verdict, fired = decide(fraud_artifacts, ctx=context(blocked=frozenset({kind})), probability=0.05)
    assert verdict.action == DECLINE
    assert fired == [code, "THRESHOLD_APPROVE"]  # the deciding rule first, the rest still reported
    assert kind in verdict.fired_rules[0].description


def test_several_block_lists_are_all_reported(fraud_artifacts):
    verdict, fired = decide(fraud_artifacts, ctx=context(blocked=frozenset({"ip", "device", "instrument"})))
    assert verdict.action == DECLINE
    assert fired == ["BLOCKLIST_DEVICE", "BLOCKLIST_INSTRUMENT", "BLOCKLIST_IP", "THRESHOLD_APPROVE"]


@pytest.mark.parametrize(("amount", "fires"), [(10_000.0, False), (10_000.01, True), (50_000.0, True)])
def test_hard_amount_limit(fraud_artifacts, amount, fires):
    verdict, fired = decide(fraud_artifacts, amount_eur=amount)
    assert ("HARD_LIMIT_AMOUNT" in fired) is fires
    assert verdict.action == (DECLINE if fires else APPROVE)
    if fires:
        assert fired[0] == "HARD_LIMIT_AMOUNT"


@pytest.mark.parametrize(("recent", "fires"), [(11, False), (12, True), (40, True)])
def test_hard_velocity_limit(fraud_artifacts, recent, fires):
    verdict, fired = decide(fraud_artifacts, row=row_with(v_user_count_10m=recent))
    assert ("VELOCITY_LIMIT_USER_10M" in fired) is fires
    assert verdict.action == (DECLINE if fires else APPROVE)
    if fires:
        assert fired[0] == "VELOCITY_LIMIT_USER_10M" and str(recent) in verdict.fired_rules[0].description


def test_strictest_action_wins_and_deciding_rules_come_first(fraud_artifacts):
    verdict, fired = decide(
        fraud_artifacts,
        ctx=context(blocked=frozenset({"ip"})),
        probability=0.5,
        row=row_with(v_user_count_10m=20),
        amount_eur=20_000.0,
    )
    assert verdict.action == DECLINE
    assert fired == ["BLOCKLIST_IP", "HARD_LIMIT_AMOUNT", "VELOCITY_LIMIT_USER_10M", "THRESHOLD_REVIEW"]


# ------------------------------------------------------------------ degraded: store unavailable


def test_store_down_fail_to_review(fraud_artifacts):
    verdict, fired = decide(fraud_artifacts, ctx=None, probability=0.05)
    assert verdict.action == REVIEW
    assert fired == ["FALLBACK_REVIEW"]  # no THRESHOLD_APPROVE without the store
    assert "feature store" in verdict.fired_rules[0].description
    assert verdict.risk_score == 5


@pytest.mark.parametrize(
    ("amount", "action", "code"),
    [
        (20.0, APPROVE, "FALLBACK_OPEN"),
        (200.0, APPROVE, "FALLBACK_OPEN"),
        (200.01, REVIEW, "FALLBACK_AMOUNT_CAP"),
        (5_000.0, REVIEW, "FALLBACK_AMOUNT_CAP"),
    ],
)
def test_store_down_fail_open_with_the_amount_cap(fraud_artifacts, amount, action, code):
    verdict, fired = decide(fraud_artifacts, OPEN_CFG, ctx=None, probability=0.05, amount_eur=amount)
    assert verdict.action == action
    assert fired == [code]
    if code == "FALLBACK_OPEN":
        assert "request-time features (risk 5)" in verdict.fired_rules[0].description


@pytest.mark.parametrize("config", [REVIEW_CFG, OPEN_CFG])
def test_store_down_still_applies_thresholds_and_hard_limits(fraud_artifacts, config):
    verdict, fired = decide(fraud_artifacts, config, ctx=None, probability=0.95)
    assert verdict.action == DECLINE and fired[0] == "THRESHOLD_DECLINE"
    verdict, fired = decide(fraud_artifacts, config, ctx=None, probability=0.05, amount_eur=12_000.0)
    assert verdict.action == DECLINE and fired[0] == "HARD_LIMIT_AMOUNT"
    assert fired[1] in ("FALLBACK_REVIEW", "FALLBACK_AMOUNT_CAP")
    verdict, fired = decide(fraud_artifacts, config, ctx=None, probability=0.5, amount_eur=20.0)
    assert verdict.action == REVIEW and "THRESHOLD_REVIEW" in fired


def test_store_down_ignores_the_velocity_limit(fraud_artifacts):
    # without the store the counts are zeros, not evidence; the rule must not read them
    _, fired = decide(fraud_artifacts, OPEN_CFG, ctx=None, row=row_with(v_user_count_10m=50), amount_eur=20.0)
    assert "VELOCITY_LIMIT_USER_10M" not in fired


# ------------------------------------------------------------------ degraded: no model score


def test_model_down_fail_to_review(fraud_artifacts):
    verdict, fired = decide(fraud_artifacts, probability=None)
    assert (verdict.action, fired, verdict.risk_score) == (REVIEW, ["FALLBACK_REVIEW"], 0)
    assert "the model" in verdict.fired_rules[0].description
    assert verdict.reasons == []


def test_model_down_fail_open_on_rules(fraud_artifacts):
    verdict, fired = decide(fraud_artifacts, OPEN_CFG, probability=None, amount_eur=50.0)
    assert (verdict.action, fired) == (APPROVE, ["FALLBACK_OPEN"])
    assert "fail open on rules" in verdict.fired_rules[0].description
    verdict, fired = decide(fraud_artifacts, OPEN_CFG, probability=None, amount_eur=500.0)
    assert (verdict.action, fired) == (REVIEW, ["FALLBACK_AMOUNT_CAP"])


def test_model_and_store_down_block_rules_still_decline(fraud_artifacts):
    verdict, fired = decide(fraud_artifacts, OPEN_CFG, ctx=None, probability=None, amount_eur=15_000.0)
    assert verdict.action == DECLINE and fired == ["HARD_LIMIT_AMOUNT", "FALLBACK_AMOUNT_CAP"]


# ------------------------------------------------------------------ reasons


def contributions(**values: float) -> np.ndarray:
    out = np.zeros(len(COLUMNS) + 1, np.float32)
    out[-1] = -2.0  # bias: never a reason
    for name, v in values.items():
        out[COLUMNS.index(name)] = v
    return out


def reasons(artifacts, contrib, row=None, **config):
    state = make_state(
        artifacts, context(), row=row_with() if row is None else row, probability=0.5, contributions=contrib
    )
    return RulesAndThresholds(PolicyConfig(**config)).decide(state).reasons


def test_reasons_in_contribution_order_deduplicated_and_cut(fraud_artifacts):
    contrib = contributions(
        r_new_device=0.9,
        r_amount_z_user=0.6,
        fu_amount_mean_log=0.5,
        fu_amount_std_log=0.4,  # same code as fu_amount_mean_log: reported once
        r_foreign_country=0.04,  # below min_reason_contribution (0.05)
        d_new_users_30d=-1.0,  # lowers the risk: never a reason
    )
    got = reasons(fraud_artifacts, contrib, max_reasons=10)
    assert [(r.code, r.feature) for r in got] == [
        ("NEW_DEVICE", "r_new_device"),
        ("AMOUNT_HIGH_FOR_USER", "r_amount_z_user"),
        ("USER_AMOUNT_PROFILE", "fu_amount_mean_log"),
    ]
    assert [r.contribution for r in got] == [0.9, 0.6, 0.5]
    assert [r.code for r in reasons(fraud_artifacts, contrib, max_reasons=2)] == [
        "NEW_DEVICE",
        "AMOUNT_HIGH_FOR_USER",
    ]


def test_reason_direction_follows_the_training_median(fraud_artifacts):
    contrib = contributions(r_amount_z_user=0.7, r_amount_log=0.3)
    low = reasons(fraud_artifacts, contrib, row=row_with(r_amount_z_user=-3.0, r_amount_log=-1.0))
    assert [r.code for r in low] == ["AMOUNT_LOW_FOR_USER", "AMOUNT_VERY_SMALL"]
    assert low[1].description == "very small amount, typical of card testing"
    high = reasons(fraud_artifacts, contrib, row=row_with(r_amount_z_user=3.0, r_amount_log=1.0))
    assert [r.code for r in high] == ["AMOUNT_HIGH_FOR_USER", "AMOUNT_HIGH"]


# ------------------------------------------------------------------ config and risk score


@pytest.mark.parametrize(
    "config",
    [
        PolicyConfig(review_score=0),
        PolicyConfig(review_score=90, decline_score=80),
        PolicyConfig(decline_score=100),
        PolicyConfig(degraded_fallback="approve"),
    ],
)
def test_invalid_config_is_rejected(config):
    with pytest.raises(ValueError):
        RulesAndThresholds(config)


@pytest.mark.parametrize(
    ("p", "score"), [(0.0, 0), (0.009, 0), (0.5, 50), (0.999, 99), (1.0, 99), (-0.1, 0), (1.7, 99)]
)
def test_risk_score_is_0_to_99(p, score):
    assert risk_score(p) == score


def test_custom_thresholds(fraud_artifacts):
    config = PolicyConfig(review_score=10, decline_score=20)
    assert decide(fraud_artifacts, config, probability=0.15)[0].action == REVIEW
    assert decide(fraud_artifacts, config, probability=0.25)[0].action == DECLINE
    assert decide(fraud_artifacts, config, probability=0.05)[0].action == APPROVE
