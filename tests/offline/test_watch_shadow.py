"""Shadow vs live on the same decisions (offline/watch/shadow.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from decision_service.decision_log import conversion_log, fraud_log
from decision_service.features.conversion import FEATURES as CONVERSION_FEATURES
from decision_service.features.definitions import FRAUD_MODEL_FEATURES
from offline.loop.publish_gate import roc_auc
from offline.watch.shadow import compare_shadow, format_shadow
from tests.offline.watch_logs import T0, outcomes, recommendation_decisions, shadow, table_of, write

WINDOW_S = 60.0
SEC = 1000
LATE = T0 + 10**8


def _recommendation(root: Path, n: int = 80, seed: int = 0) -> dict[str, list]:
    """Decisions of 20 candidates (the first 10 shown); clicks mostly on the live model's top
    items; shadow v0003 = the live scores, v0004 = their reverse."""
    rng = np.random.default_rng(seed)
    rows, events, same, reverse = [], [], [], []
    for i in range(n):
        d_id = f"d{i}"
        at = T0 + i * SEC
        items = [f"i{(i + x) % 50}" for x in range(20)]
        scores = np.sort(rng.random(20))[::-1]
        rows.append({"decision_id": d_id, "user_id": f"u{i % 30}", "at_ms": at, "item_ids": items,
                     "scores": scores, "shown": 10, "propensity": 0.8})  # fmt: skip
        for pos in range(10):
            if rng.random() < 0.5 * 0.6**pos:
                events.append((d_id, items[pos], "click", at + SEC, None))
                if rng.random() < 0.3:
                    events.append((d_id, items[pos], "purchase", at + 2 * SEC, None))
        same.append({"decision_id": d_id, "at_ms": at, "shadow_version": "v0003", "scores": scores})
        reverse.append({"decision_id": d_id, "at_ms": at, "shadow_version": "v0004", "scores": -scores})
    # the shadow missed 5 decisions of its period, and one row does not line up
    same, reverse = same[:10] + same[15:], reverse[:10] + reverse[15:]
    same[20] = dict(same[20], scores=same[20]["scores"][:19])
    # a decision after the shadows stopped, and one of another version: neither is "skipped"
    rows.append(
        {"decision_id": "late", "user_id": "u1", "at_ms": T0 + (n + 5) * SEC, "item_ids": ["i1", "i2"]}
    )
    rows.append({"decision_id": "other", "user_id": "u2", "at_ms": T0 + 3 * SEC, "item_ids": ["i1", "i2"],
                 "version": "v0002", "arm": "canary"})  # fmt: skip
    write(root, "decisions", "recommendation", recommendation_decisions(rows))
    write(root, "outcomes", "recommendation", outcomes(events, "recommendation"))
    write(root, "shadow", "recommendation", shadow(same + reverse, "recommendation"))
    return {"rows": rows}


def test_recommendation_shadow_equal_to_live_and_reversed(tmp_path):
    _recommendation(tmp_path)
    got = {c.shadow_version: c for c in compare_shadow(tmp_path, "recommendation", LATE, window_s=WINDOW_S)}
    assert set(got) == {"v0003", "v0004"}
    same, rev = got["v0003"], got["v0004"]
    assert same.live_version == rev.live_version == "v0001"
    assert same.metric == "ndcg@10"
    assert same.decisions == 74 and same.misaligned == 1 and rev.decisions == 75 and rev.misaligned == 0
    assert same.skipped == 5 and rev.skipped == 5
    assert same.score_correlation == pytest.approx(1.0)
    assert same.rank_agreement == pytest.approx(1.0) and same.spearman == pytest.approx(1.0)
    assert same.live_metric is not None and same.live_metric == pytest.approx(same.shadow_metric)
    assert same.matured_decisions > 50
    assert rev.score_correlation == pytest.approx(-1.0)
    assert rev.rank_agreement == pytest.approx(0.0)  # 20 candidates: the two top-10s are disjoint
    assert rev.spearman == pytest.approx(-1.0)
    assert rev.shadow_metric < rev.live_metric - 0.1
    # not matured yet at the production windows (30 min / 24 h): no metric, the rest is there
    young = {c.shadow_version: c for c in compare_shadow(tmp_path, "recommendation", T0 + 200 * SEC)}
    assert young["v0003"].live_metric is None and young["v0003"].matured_decisions == 0
    assert young["v0003"].score_correlation == pytest.approx(1.0)
    lines = format_shadow(list(got.values()))
    assert len(lines) == 3 and "ndcg@10" in lines[1]


def _binary(root: Path, use_case: str, n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    positive = rng.random(n) < 0.2
    p = np.clip(np.where(positive, rng.normal(0.6, 0.2, n), rng.normal(0.35, 0.2, n)), 0.01, 0.99)
    at = (T0 + np.arange(n) * SEC).tolist()
    ids = [f"x{i}" for i in range(n)]
    common = {"decision_id": ids, "decided_at": at, "user_id": [f"u{i}" for i in range(n)],
              "model_version": ["v0001"] * n, "arm": ["live"] * n, "degraded": [[] for _ in ids]}  # fmt: skip
    if use_case == "fraud":
        table = table_of(fraud_log.SCHEMA, n, {
            **common, "fraud_probability": p.tolist(), "action": ["APPROVE"] * n,
            "feature_names": [[FRAUD_MODEL_FEATURES[0]]] * n, "features": [[1.0]] * n,
        })  # fmt: skip
        kind = "chargeback"
    else:
        table = table_of(conversion_log.SCHEMA, n, {
            **common, "probability": p.tolist(), "scored": [True] * n,
            "feature_names": [[next(iter(CONVERSION_FEATURES))]] * n, "features": [[1.0]] * n,
        })  # fmt: skip
        kind = "converted"
    write(root, "decisions", use_case, table)
    write(
        root,
        "outcomes",
        use_case,
        outcomes([(ids[i], None, kind, at[i] + SEC, None) for i in np.flatnonzero(positive)], use_case),
    )
    rows = [
        {"decision_id": ids[i], "at_ms": at[i], "shadow_version": "v0003", "scores": [p[i]]} for i in range(n)
    ]
    rows += [
        {"decision_id": ids[i], "at_ms": at[i], "shadow_version": "v0004", "scores": [1 - p[i]]}
        for i in range(n)
    ]
    write(root, "shadow", use_case, shadow(rows, use_case))
    return positive, p


@pytest.mark.parametrize("use_case", ["fraud", "conversion"])
def test_binary_shadow_equal_to_live_and_reversed(tmp_path, use_case):
    positive, p = _binary(tmp_path, use_case)
    got = {c.shadow_version: c for c in compare_shadow(tmp_path, use_case, LATE, window_s=WINDOW_S)}
    same, rev = got["v0003"], got["v0004"]
    auc = roc_auc(positive, p)
    assert same.metric == "auc" and same.decisions == 300 and same.skipped == 0
    assert same.matured_decisions == 300
    assert same.score_correlation == pytest.approx(1.0) and same.rank_agreement == pytest.approx(1.0)
    assert same.live_metric == pytest.approx(auc, abs=1e-6) and same.shadow_metric == pytest.approx(
        auc, abs=1e-6
    )
    assert rev.score_correlation == pytest.approx(-1.0) and rev.rank_agreement == pytest.approx(-1.0)
    assert rev.shadow_metric == pytest.approx(1 - auc, abs=1e-6) and rev.shadow_metric < rev.live_metric


def test_no_shadow_log_no_comparison(tmp_path):
    assert compare_shadow(tmp_path, "fraud") == []
    with pytest.raises(ValueError, match="unknown use case"):
        compare_shadow(tmp_path, "no-such-use-case")


def test_kind_shadow_non_finite_scores_and_no_outcome_log(tmp_path):
    from offline.watch.logfiles import NoOutcomesError

    _recommendation(tmp_path)
    nan_rows = [
        {"decision_id": f"d{i}", "at_ms": T0 + i * SEC, "shadow_version": "v0005",
         "scores": np.r_[np.nan, np.linspace(1, 0, 19)] if i % 2 else np.linspace(1, 0, 20)}
        for i in range(20, 40)
    ]  # fmt: skip
    write(tmp_path, "shadow", "recommendation", shadow(nan_rows, "recommendation"))
    got = {c.shadow_version: c for c in compare_shadow(tmp_path, "recommendation", LATE, window_s=WINDOW_S)}
    nan = got["v0005"]
    assert nan.non_finite == 10 and nan.decisions == 10  # left out and counted, never ranked
    assert got["v0003"].non_finite == 0
    assert "1 left out" not in "\n".join(format_shadow([got["v0003"]]))
    assert "10 left out (NaN / inf score)" in "\n".join(format_shadow([nan]))
    # decisions and a shadow log but no outcome log: said, not an all-negative metric
    for f in (tmp_path / "outcomes").rglob("*.parquet"):
        f.unlink()
    with pytest.raises(NoOutcomesError, match="no outcome log files"):
        compare_shadow(tmp_path, "recommendation", LATE, window_s=WINDOW_S)
