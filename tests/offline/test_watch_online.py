"""Online metrics per arm, their intervals, and the canary promotion rule (offline/watch/online.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from decision_service.decision_log import conversion_log, fraud_log
from offline.loop.publish_gate import log_loss, recall_at_rate, roc_auc
from offline.use_cases import OFFLINE_USE_CASES, by_name
from offline.use_cases.base import OnlineMetric
from offline.watch import online
from offline.watch.online import (
    CanaryRule,
    arm_metrics,
    canary_verdict,
    canary_verdicts,
    newcombe,
    rate_interval,
    rollouts,
    weighted_auc,
    weighted_log_loss,
    weighted_recall_at_rate,
    wilson,
)
from offline.watch.results import CANARY, LIVE, PROMOTE, ROLLBACK, WAIT
from tests.offline.watch_logs import T0, outcomes, recommendation_decisions, table_of, write

WINDOW_S = 60.0  # compressed label window of these logs
SEC = 1000


def _rollout(
    root: Path,
    p_live: float,
    p_canary: float,
    users: int,
    per_user: int = 3,
    seed: int = 0,
    start_ms: int = T0,
    live_version: str = "v0001",
    canary_version: str = "v0002",
    arms: tuple[str, ...] = (LIVE, CANARY),
) -> None:
    """Recommendation decisions of 10 shown items each; every shown item clicked with the arm's
    probability one second after the decision."""
    rng = np.random.default_rng(seed)
    rows, clicks = [], []
    k = 0
    for u, j in np.ndindex(users, per_user):  # the arms interleaved in time, as a canary runs
        for arm, p, version in ((LIVE, p_live, live_version), (CANARY, p_canary, canary_version)):
            if arm in arms:
                d_id = f"{arm}-{seed}-{start_ms}-{u}-{j}"
                at = start_ms + k * 10
                k += 1
                items = [f"i{x}" for x in range(10)]
                rows.append(
                    {"decision_id": d_id, "user_id": f"{arm}-u{u}", "at_ms": at, "version": version, "arm": arm,
                     "item_ids": items}
                )  # fmt: skip
                clicks += [(d_id, it, "click", at + SEC, None) for it in items if rng.random() < p]
    write(root, "decisions", "recommendation", recommendation_decisions(rows))
    if clicks:
        write(root, "outcomes", "recommendation", outcomes(clicks, "recommendation"))


def _late(root: Path) -> int:
    """A 'now' after every window of the logs above."""
    return T0 + 10_000_000


def test_every_use_case_declares_online_metrics_with_a_gated_one():
    for uc in OFFLINE_USE_CASES:
        assert uc.online_metrics, uc.name
        assert any(m.gate for m in uc.online_metrics), uc.name
        assert len({m.name for m in uc.online_metrics}) == len(uc.online_metrics)
        assert uc.shadow_metric is not None
        for m in uc.online_metrics:  # production windows: a day or more for fraud / conversion
            assert m.window_s > 0 and m.tolerance >= 0
    with pytest.raises(ValueError, match="statistic"):
        OnlineMetric("x", "", ("click",), 1.0, statistic="median")
    with pytest.raises(ValueError, match="score"):
        OnlineMetric("x", "", ("click",), 1.0, statistic="auc")


def test_ctr_counts_distinct_served_items_clicked_in_window_of_matured_decisions(tmp_path):
    items = ["a", "b", "c", "d"]
    now = T0 + 1_000 * SEC
    rows = [
        {"decision_id": "d1", "user_id": "u1", "at_ms": T0, "item_ids": items, "shown": 3},
        {"decision_id": "d2", "user_id": "u2", "at_ms": T0 + 10 * SEC, "item_ids": items, "shown": 2},
        # immature: decided 30 s before now, window 60 s
        {"decision_id": "d3", "user_id": "u3", "at_ms": now - 30 * SEC, "item_ids": items, "shown": 4},
        # a canary decision
        {"decision_id": "d4", "user_id": "u4", "at_ms": T0 + 20 * SEC, "item_ids": items, "shown": 4,
         "arm": CANARY, "version": "v0002"},
    ]  # fmt: skip
    write(tmp_path, "decisions", "recommendation", recommendation_decisions(rows))
    # an old file without the arm column: read as live
    old = [{"decision_id": "d0", "user_id": "u0", "at_ms": T0 - 5 * SEC, "item_ids": items, "shown": 2}]
    write(tmp_path, "decisions", "recommendation", recommendation_decisions(old, drop_arm=True))
    write(
        tmp_path,
        "outcomes",
        "recommendation",
        outcomes(
            [
                ("d1", "a", "click", T0 + 5 * SEC, None),  # counts
                ("d1", "a", "click", T0 + 6 * SEC, None),  # the same item again: once
                ("d1", "b", "click", T0 + 120 * SEC, None),  # after the window: late
                ("d1", "d", "click", T0 + 5 * SEC, None),  # not shown: not counted
                ("d2", "a", "click", T0 + 11 * SEC, now + 5 * SEC),  # received after now: ignored
                ("d2", "b", "purchase", T0 + 12 * SEC, None),  # a purchase is not a click
                ("d3", "a", "click", now - 29 * SEC, None),  # immature decision
                ("d4", "a", "click", T0 + 21 * SEC, None),
                ("d4", "b", "click", T0 + 22 * SEC, None),
                ("d0", "a", "click", T0 - 4 * SEC, None),
            ],
            "recommendation",
        ),
    )
    got = arm_metrics(tmp_path, "recommendation", now_ms=now, window_s=WINDOW_S, bootstrap=200)
    by = {(m.metric, m.arm, m.version): m for m in got}
    ctr_live = by[("ctr", LIVE, "v0001")]
    assert ctr_live.value.n == 3  # d0, d1, d2 (d3 immature)
    assert ctr_live.value.estimate == pytest.approx((1 + 0 + 1) / (3 + 2 + 2))  # d1: a; d2: none; d0: a
    assert ctr_live.users == 3 and ctr_live.method == "bootstrap over users" and ctr_live.window_s == WINDOW_S
    assert ctr_live.value.low <= ctr_live.value.estimate <= ctr_live.value.high
    ctr_canary = by[("ctr", CANARY, "v0002")]
    assert ctr_canary.value.estimate == pytest.approx(2 / 4) and ctr_canary.value.n == 1
    buys = by[("purchases_per_decision", LIVE, "v0001")]
    assert buys.value.estimate == pytest.approx(1 / 3) and buys.higher_is_better
    # since_ms: only d2 and later
    later = arm_metrics(
        tmp_path, "recommendation", now, since_ms=T0 + 10 * SEC, window_s=WINDOW_S, bootstrap=50
    )
    assert {(m.metric, m.arm): m.value.n for m in later}[("ctr", LIVE)] == 1
    # default now = the newest time in the logs (d3's click): d3 is still immature then
    default = arm_metrics(tmp_path, "recommendation", window_s=WINDOW_S, bootstrap=50)
    assert {(m.metric, m.arm): m.value.n for m in default}[("ctr", LIVE)] == 3
    # the production window (30 min) has not closed for any of them at `now`
    assert arm_metrics(tmp_path, "recommendation", now_ms=now, bootstrap=50) == []


def test_no_logs_no_metrics(tmp_path):
    assert arm_metrics(tmp_path, "recommendation") == []
    assert canary_verdicts(tmp_path, None, "recommendation") == []
    with pytest.raises(ValueError, match="unknown use case"):
        arm_metrics(tmp_path, "no-such-use-case")


def test_a_clearly_better_canary_is_promoted(tmp_path):
    _rollout(tmp_path, p_live=0.05, p_canary=0.12, users=300)
    v = canary_verdict(tmp_path, "recommendation", "v0001", "v0002", CanaryRule(min_decisions=500),
                       _late(tmp_path), window_s=WINDOW_S)  # fmt: skip
    assert v.action == PROMOTE, v.reason
    assert v.metric == "ctr"
    assert 0.05 < v.difference.estimate < 0.09
    assert v.difference.low > 0 and v.difference.low <= v.difference.estimate <= v.difference.high
    # the first live decision came before the canary's first: outside its period
    assert [(a.arm, a.value.n) for a in v.arms] == [(LIVE, 899), (CANARY, 900)]
    assert [name for name, _ in v.checks] == ["ctr"]  # purchases are reported, not gated


def test_a_clearly_worse_canary_is_rolled_back(tmp_path):
    _rollout(tmp_path, p_live=0.12, p_canary=0.05, users=300)
    v = canary_verdict(tmp_path, "recommendation", "v0001", "v0002", CanaryRule(min_decisions=500),
                       _late(tmp_path), window_s=WINDOW_S)  # fmt: skip
    assert v.action == ROLLBACK, v.reason
    assert v.difference.high < -0.005 and "worse" in v.reason


def test_too_few_decisions_wait_and_a_final_check_rolls_back(tmp_path):
    _rollout(tmp_path, p_live=0.05, p_canary=0.12, users=20, per_user=1)
    rule = CanaryRule(min_decisions=100)
    v = canary_verdict(tmp_path, "recommendation", "v0001", "v0002", rule, _late(tmp_path), window_s=WINDOW_S)
    assert v.action == WAIT and "too few" in v.reason
    final = canary_verdict(
        tmp_path, "recommendation", "v0001", "v0002", CanaryRule(min_decisions=100, final=True),
        _late(tmp_path), window_s=WINDOW_S,
    )  # fmt: skip
    assert final.action == ROLLBACK and "final" in final.reason
    # a canary that served nothing
    none = canary_verdict(
        tmp_path, "recommendation", "v0001", "v0009", rule, _late(tmp_path), window_s=WINDOW_S
    )
    assert none.action == WAIT and math.isnan(none.difference.estimate)


def test_an_equal_canary_within_a_wide_tolerance_is_promoted_and_undecided_without(tmp_path):
    _rollout(tmp_path, p_live=0.08, p_canary=0.08, users=300, seed=3)
    args = (tmp_path, "recommendation", "v0001", "v0002")
    wide = canary_verdict(
        *args, CanaryRule(min_decisions=500, tolerance=0.05), _late(tmp_path), window_s=WINDOW_S
    )
    assert wide.action == PROMOTE
    tight = canary_verdict(
        *args, CanaryRule(min_decisions=500, tolerance=0.0), _late(tmp_path), window_s=WINDOW_S
    )
    assert tight.difference.low < 0 < tight.difference.high
    assert tight.action == WAIT and "straddles" in tight.reason


def test_arms_are_compared_over_the_canary_period_only(tmp_path):
    # before the canary: a long live-only stretch with a much higher CTR
    _rollout(tmp_path, p_live=0.5, p_canary=0.0, users=100, seed=1, start_ms=T0 - 1_000_000, arms=(LIVE,))
    _rollout(tmp_path, p_live=0.05, p_canary=0.12, users=300, seed=2)
    v = canary_verdict(tmp_path, "recommendation", "v0001", "v0002", CanaryRule(min_decisions=500),
                       _late(tmp_path), window_s=WINDOW_S)  # fmt: skip
    live = next(a for a in v.arms if a.arm == LIVE)
    assert live.value.n == 899 and live.value.estimate < 0.1
    assert v.action == PROMOTE
    all_live = [m for m in arm_metrics(tmp_path, "recommendation", _late(tmp_path), window_s=WINDOW_S, bootstrap=50)
                if m.metric == "ctr" and m.arm == LIVE]  # fmt: skip
    assert all_live[0].value.n == 1200


def test_canary_verdicts_find_the_rollouts_in_the_logs(tmp_path):
    _rollout(tmp_path, p_live=0.05, p_canary=0.12, users=300)
    # another live version served less during the canary
    _rollout(tmp_path, p_live=0.05, p_canary=0.0, users=5, live_version="v0000", arms=(LIVE,), seed=9)
    assert rollouts(tmp_path, "recommendation") == [("v0001", "v0002")]
    (v,) = canary_verdicts(tmp_path, None, "recommendation", CanaryRule(min_decisions=500), _late(tmp_path),
                           window_s=WINDOW_S)  # fmt: skip
    assert (v.live_version, v.canary_version, v.action) == ("v0001", "v0002", PROMOTE)
    # the registry's CURRENT wins when it served live during the canary
    registry = tmp_path / "registry"
    (registry / "recommendation").mkdir(parents=True)
    (registry / "recommendation" / "CURRENT").write_text("v0000")
    assert rollouts(tmp_path, "recommendation", registry) == [("v0000", "v0002")]
    assert rollouts(tmp_path, "recommendation", tmp_path / "no-registry") == [("v0001", "v0002")]


def _fraud_logs(root: Path, n: int = 400, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    fraud = rng.random(n) < 0.15
    prob = np.clip(np.where(fraud, rng.normal(0.6, 0.25, n), rng.normal(0.3, 0.2, n)), 0.001, 0.999)
    action = np.where(prob > 0.85, "DECLINE", np.where(prob > 0.6, "REVIEW", "APPROVE"))
    at = T0 + np.arange(n) * SEC
    ids = [f"f{i}" for i in range(n)]
    arm = np.where(np.arange(n) % 2 == 0, LIVE, CANARY)
    version = np.where(arm == LIVE, "v0001", "v0002")
    write(
        root, "decisions", "fraud",
        table_of(fraud_log.SCHEMA, n, {
            "decision_id": ids, "decided_at": at.tolist(), "user_id": [f"u{i % 150}-{a}" for i, a in enumerate(arm)],
            "model_version": version.tolist(), "arm": arm.tolist(), "action": action.tolist(),
            "fraud_probability": prob.tolist(), "degraded": [[] for _ in ids],
        }),
    )  # fmt: skip
    rows = []
    label = fraud & (action != "DECLINE")  # what the logs can tell: a declined payment never settles
    for i in range(n):
        if action[i] == "REVIEW":  # the analyst's verdict, after the window: final anyway
            rows.append(
                (ids[i], None, "confirmed_fraud" if fraud[i] else "confirmed_legit", at[i] + 100 * SEC, None)
            )
        elif fraud[i] and action[i] == "APPROVE":
            rows.append((ids[i], None, "chargeback", at[i] + 10 * SEC, None))
    # a chargeback later overruled by an analyst: legitimate
    j = int(np.flatnonzero(action == "APPROVE")[0])
    rows += [
        (ids[j], None, "chargeback", at[j] + 5 * SEC, None),
        (ids[j], None, "confirmed_legit", at[j] + 7 * SEC, None),
    ]
    label[j] = False
    write(root, "outcomes", "fraud", outcomes(rows, "fraud"))
    return {
        "prob": prob,
        "action": action,
        "label": label,
        "arm": arm,
        "users": np.asarray([f"u{i % 150}" for i in range(n)]),
    }


def test_fraud_recall_at_the_review_rate_is_the_gate_metric_on_each_arm(tmp_path):
    truth = _fraud_logs(tmp_path)
    got = {
        (m.metric, m.arm): m
        for m in arm_metrics(tmp_path, "fraud", T0 + 10**8, window_s=WINDOW_S, bootstrap=200)
    }
    metric = by_name("fraud").online_metrics[0]
    for arm in (LIVE, CANARY):
        keep = (truth["arm"] == arm) & (truth["action"] != "DECLINE")
        expected = recall_at_rate(truth["label"][keep], truth["prob"][keep], metric.flag_rate)
        m = got[(metric.name, arm)]
        assert m.value.n == int(keep.sum())
        assert m.value.estimate == pytest.approx(expected)
        assert m.value.low <= m.value.estimate <= m.value.high and m.method == "bootstrap over users"
        caught = got[("fraud_caught", arm)]
        pos = (truth["arm"] == arm) & truth["label"]
        flagged = np.isin(truth["action"][pos], ["REVIEW", "DECLINE"])
        assert caught.value.n == int(pos.sum()) and caught.method == "wilson"
        assert caught.value.estimate == pytest.approx(flagged.mean())


def _conversion_logs(root: Path, n: int, live_noise: float, canary_noise: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    p_true = rng.beta(2, 6, n)
    converted = rng.random(n) < p_true
    arm = np.where(np.arange(n) % 2 == 0, LIVE, CANARY)
    noise = np.where(arm == LIVE, live_noise, canary_noise)
    logit = np.log(p_true / (1 - p_true)) + rng.normal(0, 1, n) * noise
    served = 1 / (1 + np.exp(-logit))
    at = T0 + np.arange(n) * 10
    ids = [f"c{i}" for i in range(n)]
    write(
        root, "decisions", "conversion",
        table_of(conversion_log.SCHEMA, n, {
            "decision_id": ids, "decided_at": at.tolist(), "user_id": [f"u{i}" for i in range(n)],
            "model_version": np.where(arm == LIVE, "v0001", "v0002").tolist(), "arm": arm.tolist(),
            "probability": served.tolist(), "scored": [True] * n, "degraded": [[] for _ in ids],
        }),
    )  # fmt: skip
    rows = [(ids[i], None, "converted", int(at[i]) + SEC, None) for i in np.flatnonzero(converted)]
    write(root, "outcomes", "conversion", outcomes(rows, "conversion"))
    return served, converted, arm


def test_conversion_auc_and_log_loss_per_arm_and_the_direction_of_log_loss(tmp_path):
    served, converted, arm = _conversion_logs(tmp_path, 4000, live_noise=2.5, canary_noise=0.0)
    now = T0 + 10**8
    got = {
        (m.metric, m.arm): m
        for m in arm_metrics(tmp_path, "conversion", now, window_s=WINDOW_S, bootstrap=200)
    }
    for a in (LIVE, CANARY):
        m = arm == a
        assert got[("auc", a)].value.estimate == pytest.approx(roc_auc(converted[m], served[m]))
        assert got[("log_loss", a)].value.estimate == pytest.approx(log_loss(converted[m], served[m]))
        assert got[("log_loss", a)].higher_is_better is False
    # the canary (exact probabilities) beats the noisy live model on both: promoted
    v = canary_verdict(tmp_path, "conversion", "v0001", "v0002", CanaryRule(min_decisions=1000), now,
                       window_s=WINDOW_S)  # fmt: skip
    assert v.action == PROMOTE, v.reason
    assert dict(v.checks)["log_loss"].high < 0  # canary - live log-loss: lower is better


def test_a_canary_with_worse_log_loss_is_rolled_back_on_that_metric(tmp_path):
    _conversion_logs(tmp_path, 4000, live_noise=0.0, canary_noise=2.5, seed=1)
    v = canary_verdict(tmp_path, "conversion", "v0001", "v0002", CanaryRule(min_decisions=1000), T0 + 10**8,
                       window_s=WINDOW_S)  # fmt: skip
    assert v.action == ROLLBACK
    assert v.difference.low > 0 or v.metric == "auc"  # the deciding metric is worse for the canary


def test_weighted_statistics_match_the_publish_gate_with_unit_weights():
    rng = np.random.default_rng(5)
    y = rng.random(300) < 0.2
    s = np.round(rng.random(300), 2)  # ties
    ones = np.ones((1, 300))
    assert weighted_auc(y, s, ones)[0] == pytest.approx(roc_auc(y, s))
    assert weighted_recall_at_rate(y, s, ones, 0.1)[0] == pytest.approx(recall_at_rate(y, s, 0.1))
    assert weighted_log_loss(y, np.clip(s, 0.01, 0.99), ones)[0] == pytest.approx(
        log_loss(y, np.clip(s, 0.01, 0.99))
    )
    # integer weights = repeated rows
    w = rng.integers(0, 3, 300).astype(float)
    rep = np.repeat(np.arange(300), w.astype(int))
    assert weighted_auc(y, s, w[None])[0] == pytest.approx(roc_auc(y[rep], s[rep]))
    p = np.clip(s, 0.01, 0.99)
    assert weighted_log_loss(y, p, w[None])[0] == pytest.approx(log_loss(y[rep], p[rep]))


def test_wilson_and_newcombe_cover_the_true_rate():
    rng = np.random.default_rng(11)
    covered = covered_diff = 0
    sims = 400
    for _ in range(sims):
        a = int((rng.random(200) < 0.1).sum())
        b = int((rng.random(250) < 0.14).sum())
        live, canary = wilson(a, 200), wilson(b, 250)
        covered += live.low <= 0.1 <= live.high
        d = newcombe(live, canary)
        covered_diff += d.low <= 0.04 <= d.high
    assert covered / sims >= 0.9 and covered_diff / sims >= 0.9
    assert wilson(0, 10).low == 0.0 and wilson(10, 10).high == 1.0
    assert math.isnan(wilson(0, 0).estimate)


def test_the_bootstrap_over_users_covers_a_clustered_ratio():
    """Users differ in their click rate (Beta) and in how many items they see: the ratio's
    interval must account for both; it covers the population CTR (E[p] = 0.1) in >= 90 %."""
    rng = np.random.default_rng(12)
    sims, covered, naive_covered = 150, 0, 0
    for s in range(sims):
        n_users = 300
        p = rng.beta(1, 9, n_users)  # mean 0.1, very heterogeneous
        per_user = rng.integers(1, 6, n_users)
        users = np.repeat(np.arange(n_users), per_user)
        units = np.full(len(users), 10.0)
        hits = rng.binomial(10, p[users]).astype(float)
        i = rate_interval(hits, units, users, bootstrap=300, seed=s)
        covered += i.low <= 0.1 <= i.high
        w = wilson(int(hits.sum()), int(units.sum()))  # items as independent: too narrow
        naive_covered += w.low <= 0.1 <= w.high
    assert covered / sims >= 0.9
    assert naive_covered < covered  # clustering matters: items are not independent
    # a proportion of decisions gets Wilson
    assert rate_interval(np.array([1, 0, 1, 0]), np.ones(4), ["a", "b", "c", "d"]) == wilson(2, 4)


def test_the_cli_prints_every_section(tmp_path, capsys):
    _rollout(tmp_path, p_live=0.05, p_canary=0.12, users=60)
    code = online.main(
        ["--logs", str(tmp_path), "--registry", str(tmp_path / "registry"), "--use-case", "recommendation",
         "--window", "60s", "--now-ms", str(_late(tmp_path)), "--min-decisions", "50", "--bootstrap", "100"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "== recommendation" in out and "ctr" in out and "v0002 vs live v0001: PROMOTE" in out
    assert "no shadow in the logs" in out


# ---------------------------------------------------------------------------------------------
# Review fixes, each as a kind


def _fraud_arms(
    root: Path,
    n: int,
    fraud_rate: float,
    canary_decline: float = 0.03,
    live_decline: float = 0.03,
    seed: int = 0,
) -> None:
    """Fraud decisions alternating live / canary, the same score quality on both arms; each arm
    declines a random ``*_decline`` share, reviews 2 %; approved fraud is charged back."""
    rng = np.random.default_rng(seed)
    fraud = rng.random(n) < fraud_rate
    prob = np.clip(np.where(fraud, rng.normal(0.8, 0.1, n), rng.normal(0.2, 0.1, n)), 0.001, 0.999)
    arm = np.where(np.arange(n) % 2 == 0, LIVE, CANARY)
    u = rng.random(n)
    declines = np.where(arm == LIVE, live_decline, canary_decline)
    action = np.where(u < declines, "DECLINE", np.where(u < declines + 0.02, "REVIEW", "APPROVE"))
    at = T0 + np.arange(n) * SEC
    ids = [f"f{i}" for i in range(n)]
    write(
        root, "decisions", "fraud",
        table_of(fraud_log.SCHEMA, n, {
            "decision_id": ids, "decided_at": at.tolist(), "user_id": [f"u{i}" for i in range(n)],
            "model_version": np.where(arm == LIVE, "v0001", "v0002").tolist(), "arm": arm.tolist(),
            "action": action.tolist(), "fraud_probability": prob.tolist(), "degraded": [[] for _ in ids],
        }),
    )  # fmt: skip
    rows = [
        (ids[i], None, "chargeback", int(at[i]) + SEC, None)
        for i in np.flatnonzero(fraud & (action == "APPROVE"))
    ]
    rows.append((ids[0], None, "confirmed_legit", int(at[0]) + SEC, None))  # an outcome log, always
    write(root, "outcomes", "fraud", outcomes(rows, "fraud"))


def test_kind_few_positives_never_promote_and_undefined_resamples_are_counted(tmp_path):
    # ~4 frauds per arm: the old rule promoted on the collapsed bootstrap of a perfect recall
    _fraud_arms(tmp_path, 1400, fraud_rate=0.006, seed=4)
    rule = CanaryRule(min_decisions=300)
    v = canary_verdict(tmp_path, "fraud", "v0001", "v0002", rule, T0 + 10**8, window_s=WINDOW_S)
    assert v.action == WAIT, v.reason
    assert "fraud_recall_at_review_rate: too few positives (live" in v.reason and "need 20" in v.reason
    recall = {a.arm: a for a in v.arms if a.metric == "fraud_recall_at_review_rate"}
    assert 0 < recall[CANARY].positives < 20
    # with min_positives lowered, the undefined resamples (no positive drawn) decide: counted,
    # never dropped silently from the percentiles
    metric = by_name("fraud").online_metrics[0]
    rng = np.random.default_rng(0)

    def rows(n: int, positives: int) -> online._Rows:
        label = np.zeros(n, bool)
        label[:positives] = True
        score = np.where(label, 0.9, rng.random(n) * 0.5)
        return online._Rows(np.arange(n), n, np.zeros(n), np.ones(n), score, label, 0)

    check = online._check(
        metric, rows(400, 2), rows(400, 2), CanaryRule(min_decisions=300, min_positives=1), rng
    )
    assert check.status == "undecided" and "bootstrap resamples undefined" in check.reason
    assert check.difference.undefined > 10
    # the interval helper counts NaN replicates; too many: no interval
    reps = np.r_[np.full(50, np.nan), np.linspace(0.4, 0.6, 950)]
    i = online._percentile(reps, 0.5, 10)
    assert i.undefined == 50 and math.isnan(i.low) and math.isnan(i.high)
    ok = online._percentile(np.r_[np.nan, np.linspace(0.4, 0.6, 999)], 0.5, 10)
    assert ok.undefined == 1 and ok.low <= 0.5 <= ok.high
    # a rate through the bootstrap (CTR) with a handful of clicks is bounded the same way
    _rollout(tmp_path / "rec", p_live=0.001, p_canary=0.003, users=300)
    ctr = canary_verdict(tmp_path / "rec", "recommendation", "v0001", "v0002", CanaryRule(min_decisions=500),
                         _late(tmp_path), window_s=WINDOW_S)  # fmt: skip
    assert ctr.action == WAIT and "ctr: too few positives" in ctr.reason


def test_kind_an_arm_behaviour_outside_the_gated_scope_is_guarded(tmp_path):
    # fraud: the canary declines half of all payments; its recall on what it did not decline is fine
    _fraud_arms(tmp_path, 3000, fraud_rate=0.1, canary_decline=0.5, seed=5)
    v = canary_verdict(tmp_path, "fraud", "v0001", "v0002", CanaryRule(min_decisions=300), T0 + 10**8,
                       window_s=WINDOW_S)  # fmt: skip
    assert v.action == ROLLBACK, v.reason
    assert v.metric in ("fraud_flag_share", "fraud_decline_share") and v.difference.low > 0.3
    gated = {m.name for m in by_name("fraud").online_metrics if m.gate}
    assert {"fraud_flag_share", "fraud_decline_share"} <= gated
    for m in by_name("fraud").online_metrics:
        if m.name in ("fraud_flag_share", "fraud_decline_share"):
            assert not m.higher_is_better and m.scope == "action is not null"
    # an equal canary is not rolled back by the guards
    _fraud_arms(tmp_path / "eq", 3000, fraud_rate=0.1, seed=6)
    eq = canary_verdict(tmp_path / "eq", "fraud", "v0001", "v0002", CanaryRule(min_decisions=300),
                        T0 + 10**8, window_s=WINDOW_S)  # fmt: skip
    assert eq.action != ROLLBACK, eq.reason
    # conversion: a canary that fails to score a third of its decisions (AUC / log-loss see only
    # the scored ones)
    _conversion_logs(tmp_path / "conv", 4000, live_noise=0.5, canary_noise=0.5, seed=2)
    files = list((tmp_path / "conv" / "decisions").rglob("*.parquet"))
    t = pq.read_table(files[0])
    arm = np.asarray(t.column("arm").to_pylist())
    scored = ~((arm == CANARY) & (np.arange(t.num_rows) % 3 == 1))
    t = t.set_column(t.column_names.index("scored"), "scored", pa.array(scored.tolist()))
    pq.write_table(t, files[0])
    c = canary_verdict(tmp_path / "conv", "conversion", "v0001", "v0002", CanaryRule(min_decisions=1000),
                       T0 + 10**8, window_s=WINDOW_S)  # fmt: skip
    assert c.action == ROLLBACK and c.metric == "unscored_share", c.reason
    assert "unscored_share" in {m.name for m in by_name("conversion").online_metrics if m.gate}


def test_kind_no_outcome_log_is_said_not_measured(tmp_path):
    _rollout(tmp_path, p_live=0.0, p_canary=0.0, users=50)  # decisions, and no click: no outcome file
    assert not (tmp_path / "outcomes").exists()
    with pytest.raises(online.NoOutcomesError, match="no outcome log files"):
        arm_metrics(tmp_path, "recommendation", _late(tmp_path), window_s=WINDOW_S)
    v = canary_verdict(tmp_path, "recommendation", "v0001", "v0002", CanaryRule(min_decisions=10),
                       _late(tmp_path), window_s=WINDOW_S)  # fmt: skip
    assert v.action == WAIT and "no outcome log files" in v.reason and v.arms == ()
    final = canary_verdict(tmp_path, "recommendation", "v0001", "v0002",
                           CanaryRule(min_decisions=10, final=True), _late(tmp_path), window_s=WINDOW_S)  # fmt: skip
    assert final.action == ROLLBACK
    from offline.watch import report

    data = report._gather_use_case(str(tmp_path / "registry"), str(tmp_path), "recommendation", WINDOW_S)
    assert "no outcome log files" in data.notes["online"]


def test_kind_flag_count_is_one_definition_and_the_estimate_is_inside_its_interval():
    from offline.loop.publish_gate import flag_count

    assert flag_count(0.07, 100) == 7  # 0.07 * 100 = 7.000000000000001
    assert flag_count(0.05, 101) == 6 and flag_count(0.1, 0) == 0
    assert list(flag_count(0.07, np.array([100.0, 200.0]))) == [7, 14]
    # the 8th highest score is the only positive: flagging 7 catches nothing, 8 catches it
    y = np.zeros(100, bool)
    y[7] = True
    s = np.linspace(1, 0, 100)
    assert recall_at_rate(y, s, 0.07) == 0.0
    assert weighted_recall_at_rate(y, s, np.ones((1, 100)), 0.07)[0] == 0.0
    # the interval holds the estimate even when the resampling distribution leaves it out
    i = online._percentile(np.full(1000, 0.2), 0.5, 10)
    assert i.low <= 0.5 <= i.high


def test_kind_non_finite_scores_are_left_out_and_counted(tmp_path):
    y = np.array([True, False, True, False])
    s = np.array([0.9, np.nan, 0.8, 0.1])
    assert math.isnan(roc_auc(y, s)) and math.isnan(weighted_auc(y, s, np.ones((1, 4)))[0])
    served, converted, arm = _conversion_logs(tmp_path, 2000, live_noise=1.0, canary_noise=1.0, seed=3)
    files = list((tmp_path / "decisions").rglob("*.parquet"))
    t = pq.read_table(files[0])
    prob = np.asarray(t.column("probability").to_pylist(), np.float64)
    bad = np.arange(len(prob)) % 25 == 3  # both arms; NaN passes SQL's "is not null"
    prob[bad] = np.nan
    t = t.set_column(
        t.column_names.index("probability"), "probability", pa.array(prob, t.schema.field("probability").type)
    )
    pq.write_table(t, files[0])
    got = {(m.metric, m.arm): m for m in arm_metrics(tmp_path, "conversion", T0 + 10**8, window_s=WINDOW_S,
                                                      bootstrap=100)}  # fmt: skip
    for a in (LIVE, CANARY):
        keep = (arm == a) & ~bad
        m = got[("auc", a)]
        assert m.excluded == int(((arm == a) & bad).sum()) > 0
        assert m.value.n == int(keep.sum())
        assert m.value.estimate == pytest.approx(roc_auc(converted[keep], served[keep].astype(np.float32)))


def test_kind_an_unreadable_log_file_is_one_line_naming_it(tmp_path, capsys):
    from offline.watch import drift, shadow
    from offline.watch.logfiles import LogFileError

    _rollout(tmp_path, p_live=0.05, p_canary=0.12, users=20)
    for log in ("decisions", "outcomes"):
        root = tmp_path / log
        bad = sorted(root.rglob("*.parquet"))[0]
        good = bad.read_bytes()
        bad.write_bytes(good[: len(good) // 2])  # truncated
        sources = {
            "online": lambda: arm_metrics(tmp_path, "recommendation", _late(tmp_path), window_s=WINDOW_S),
            "canary": lambda: canary_verdicts(
                tmp_path, None, "recommendation", now_ms=_late(tmp_path), window_s=WINDOW_S
            ),
            "drift": lambda: drift.loop_health(
                tmp_path, tmp_path / "registry", "recommendation", _late(tmp_path)
            ),
        }
        if log == "decisions":  # without a shadow log compare_shadow reads no outcome
            sources["shadow"] = lambda: shadow.compare_shadow(tmp_path, "recommendation", _late(tmp_path))
        for name, fn in sources.items():
            with pytest.raises(LogFileError) as exc:
                fn()
            assert str(bad) in str(exc.value), name
        for main, args in (
            (online.main, ["--logs", str(tmp_path), "--use-case", "recommendation", "--window", "60s"]),
            (drift.main, ["--logs", str(tmp_path), "--registry", str(tmp_path / "registry"),
                          "--use-case", "recommendation"]),
        ):  # fmt: skip
            capsys.readouterr()
            assert main(args) == 1
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and str(bad) in err[0] and "Traceback" not in err[0]
        bad.write_bytes(good)
