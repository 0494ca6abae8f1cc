"""Drift and health of the loop: PSI on hand-made distributions, the feature profile stored in
a published version, and loop_health on real decision / outcome logs (the service's own
schemas and to_batch functions) with one feature deliberately shifted."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from decision_service.decision_log import conversion_log, outcome_log, recommendation_log
from decision_service.domain.conversion import ConversionAction, ConversionDecision, ConversionRequest
from decision_service.domain.decision import RequestContext
from decision_service.domain.features import FeatureStatus
from decision_service.domain.outcomes import DecisionRef, Outcome
from decision_service.features.conversion import INPUT_COLUMNS
from decision_service.features.definitions import ITEM, USER, USER_ITEM
from decision_service.models.registry import ModelRegistry, RegistryError
from decision_service.use_cases import OUTCOME_TYPES
from offline.watch import drift, profile
from offline.watch.drift import loop_health, psi, psi_level

NOW_MS = 1_750_000_000_000
HOUR_MS, DAY_MS = 3_600_000, 86_400_000


# ---------------------------------------------------------------------------------------------
# PSI


def test_psi_of_identical_distributions_is_zero() -> None:
    assert psi([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]) == 0.0
    assert psi([1.0], [1.0]) == 0.0


def test_psi_of_a_known_shift_matches_the_hand_computed_value() -> None:
    # (0.9 - 0.5) ln(0.9 / 0.5) + (0.1 - 0.5) ln(0.1 / 0.5) = 0.4 ln 1.8 + 0.4 ln 5 = 0.4 ln 9
    assert psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(0.4 * math.log(9.0), rel=1e-12)
    # uniform over 4 bins -> (0.1, 0.2, 0.3, 0.4): 0.15 ln 4 + 0.05 ln 1.5
    value = psi([0.25] * 4, [0.1, 0.2, 0.3, 0.4])
    assert value == pytest.approx(0.15 * math.log(4.0) + 0.05 * math.log(1.5), rel=1e-12)
    assert psi_level(value) == "moderate"
    assert psi([0.1, 0.2, 0.3, 0.4], [0.25] * 4) == pytest.approx(value)  # symmetric


def test_psi_with_empty_bins_is_finite_and_uses_the_floor() -> None:
    value = psi([0.5, 0.5, 0.0], [0.5, 0.4, 0.1])
    eps = drift.PSI_EPS
    expected = (0.4 - 0.5) * math.log(0.4 / 0.5) + (0.1 - eps) * math.log(0.1 / eps)
    assert math.isfinite(value)
    assert value == pytest.approx(expected, rel=1e-12)
    assert psi([0.0, 1.0], [0.0, 1.0]) == 0.0  # empty on both sides: no term
    assert psi([0.5, 0.5, 0.0], [0.5, 0.4, 0.1], eps=1e-6) > value  # a lower floor: a larger term


def test_psi_levels_at_the_thresholds() -> None:
    assert [psi_level(x) for x in (0.0, 0.0999, 0.1, 0.2499, 0.25, 3.0)] == [
        "ok",
        "ok",
        "moderate",
        "moderate",
        "major",
        "major",
    ]


def test_psi_refuses_bins_that_do_not_match() -> None:
    with pytest.raises(ValueError, match="2 expected shares against 3"):
        psi([0.5, 0.5], [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match=">= 0"):
        psi([0.5, 0.5], [1.5, -0.5])
    with pytest.raises(ValueError, match="no bins"):
        psi([], [])


# ---------------------------------------------------------------------------------------------
# Profile


def test_quantile_bins_of_a_discrete_feature_hold_one_value_each() -> None:
    values = np.array([0.0] * 80 + [1.0] * 20)
    h = profile.histogram(values, bins=10, default=0.0)
    assert h.edges == (0.0, 1.0)  # deduplicated: x <= 0, 0 < x <= 1, x > 1
    assert h.proportions == pytest.approx((0.8, 0.2, 0.0))
    assert h.missing == 0.0 and h.default_share == pytest.approx(0.8)
    shares = h.shares_of(np.array([0.0, 1.0, 5.0, np.nan]))
    assert shares.tolist() == [0.25, 0.25, 0.25, 0.25]  # bins, then missing
    continuous = profile.histogram(np.random.default_rng(0).normal(size=10_000), bins=10)
    assert len(continuous.edges) == 9
    assert continuous.proportions == pytest.approx((0.1,) * 10, abs=0.002)


def test_profile_round_trips_through_a_published_version(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.poisson(3, 5000), rng.lognormal(3, 1, 5000), rng.random(5000)]).astype(
        np.float32
    )
    x[:50, 2] = np.nan
    columns = ("u_events_7d", "i_price", "x_emb_cosine")
    built = profile.build_profile(x, columns, rng.random(5000), max_rows=4000, extra={"rows": "test"})
    assert built.rows == 4000 and built.source_rows == 5000
    assert built.features["u_events_7d"].default == 0.0  # the feature registry's default
    for h in (*built.features.values(), built.score):
        assert sum(h.proportions) + h.missing == pytest.approx(1.0)

    registry = ModelRegistry(tmp_path / "registry")
    staging = registry.staging_dir("recommendation")
    (staging / "model.txt").write_text("not a model: the registry does not load artifacts")
    profile.save(staging, built)
    version = registry.publish("recommendation", staging, {"note": "test"})
    assert profile.PROFILE_FILE in version.manifest["files"]  # the checksums cover it

    loaded = profile.load(registry.get("recommendation", version.name))
    assert loaded == built

    bare = registry.staging_dir("recommendation")
    (bare / "model.txt").write_text("an old version")
    old = registry.publish("recommendation", bare, {})
    assert profile.load(old) is None

    path = version.file(profile.PROFILE_FILE)
    path.write_text(path.read_text().replace('"bins": 10', '"bins": 11'))
    with pytest.raises(RegistryError, match="checksum"):
        profile.load(registry.get("recommendation", version.name))


def test_the_bootstrap_publishes_a_profile_of_the_model_inputs(tiny_bootstrap) -> None:
    _, _, version = tiny_bootstrap
    p = profile.load(version)
    assert p is not None
    assert list(p.features) == version.manifest["model_features"]
    assert p.score is not None and p.rows > 1000
    assert all(sum(h.proportions) + h.missing == pytest.approx(1.0) for h in p.features.values())
    assert any(len(h.edges) >= 5 for h in p.features.values())  # continuous features get real bins


def test_the_fraud_bootstrap_publishes_a_profile_of_the_model_inputs(tiny_fraud_bootstrap) -> None:
    _, _, version = tiny_fraud_bootstrap
    p = profile.load(version)
    assert p is not None
    assert list(p.features) == version.manifest["model_features"]
    assert p.score is not None and p.score.edges[0] >= 0.0 and p.score.edges[-1] <= 1.0


# ---------------------------------------------------------------------------------------------
# loop_health on real logs


def _write(root: Path, table: pa.Table, partition: tuple[tuple[str, str], ...], name: str) -> None:
    directory = root.joinpath(*(f"{k}={v}" for k, v in partition))
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, directory / f"{name}.parquet")


def _publish(registry: ModelRegistry, use_case: str, p: profile.FeatureProfile | None) -> str:
    staging = registry.staging_dir(use_case)
    (staging / "model.txt").write_text("placeholder")
    if p is not None:
        profile.save(staging, p)
    return registry.publish(use_case, staging, {}).name


def _recommendation_logs(root: Path, version: str, old: str, rng: np.random.Generator) -> None:
    """400 decisions of ``version`` (100 of them without an ``arm`` column, 80 on the canary
    arm) and 50 of ``old``; 10 candidates each, the first 5 shown. u_events_7d and x_emb_cosine
    as in training, i_price three times its training level; unshown candidates UNAVAILABLE."""
    u, i = USER.columns.index("u_events_7d"), ITEM.columns.index("i_price")
    c = USER_ITEM.columns.index("x_emb_cosine")
    records = []
    for d in range(450):
        n = 10
        user = np.zeros(USER.width, np.float32)
        user[u] = rng.poisson(3)
        items = np.zeros((n, ITEM.width), np.float32)
        items[:, i] = 3.0 * rng.lognormal(3, 1, n)
        cross = np.zeros((n, len(USER_ITEM.columns)), np.float32)
        cross[:, c] = rng.random(n)
        status = np.full(n, FeatureStatus.PRESENT, np.uint8)
        status[5:] = FeatureStatus.UNAVAILABLE
        records.append(
            recommendation_log.RecommendationLogRecord(
                decision_id=f"r{d}",
                request_id=f"q{d}",
                decided_at_ms=NOW_MS - HOUR_MS + d,
                user_id=f"u{d % 37}",
                context=RequestContext(surface="home"),
                model_version=version if d < 400 else old,
                degraded=(),
                item_ids=np.array([f"i{k}" for k in range(n)], object),
                sources=np.zeros(n, np.uint8),
                retrieval_scores=np.zeros(n, np.float32),
                scores=rng.random(n).astype(np.float32),
                ranks=np.array([1, 2, 3, 4, 5, 0, 0, 0, 0, 0], np.int16),
                propensities=np.ones(n, np.float32),
                user_features=user,
                user_status=int(FeatureStatus.MISSING if d % 10 == 0 else FeatureStatus.PRESENT),
                item_features=items,
                item_status=status,
                cross_features=cross,
                arm="canary" if 100 <= d < 180 else "live",
            )
        )
    part = recommendation_log.partition_of(records[0])
    logs = root / "decisions"
    _write(logs, pa.Table.from_batches([recommendation_log.to_batch(records[:100])]).drop_columns(["arm"]),
           part, "no-arm")  # fmt: skip
    _write(logs, pa.Table.from_batches([recommendation_log.to_batch(records[100:])]), part, "with-arm")


def test_loop_health_flags_the_shifted_feature_and_not_the_others(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 6000
    train = np.column_stack([rng.poisson(3, n), rng.lognormal(3, 1, n), rng.random(n)]).astype(np.float32)
    columns = ("u_events_7d", "i_price", "x_emb_cosine")
    registry = ModelRegistry(tmp_path / "registry")
    old = _publish(registry, "recommendation", None)  # published before profiles
    version = _publish(registry, "recommendation", profile.build_profile(train, columns, rng.random(n)))
    _recommendation_logs(tmp_path / "logs", version, old, rng)

    health = loop_health(tmp_path / "logs", tmp_path / "registry", "recommendation", NOW_MS)

    by = {(d.version, d.feature): d for d in health.drift}
    assert set(by) == {(version, c) for c in columns}  # the profiled features of the profiled version
    assert by[(version, "i_price")].level == "major" and by[(version, "i_price")].psi > 1.0
    assert by[(version, "i_price")].group == "item"
    assert by[(version, "u_events_7d")].level == "ok" and by[(version, "u_events_7d")].group == "user"
    assert by[(version, "x_emb_cosine")].level == "ok" and by[(version, "x_emb_cosine")].group == "cross"
    assert by[(version, "i_price")].served == 400 * 5  # the shown candidates
    assert by[(version, "u_events_7d")].default_share == pytest.approx(
        by[(version, "u_events_7d")].training_default_share, abs=0.04
    )  # Poisson(3) at 0: ~5 % on both sides
    assert health.drift[0].feature == "i_price"  # worst first
    assert any(old in note and "no feature profile" in note for note in health.notes)

    scores = {(s.version, s.arm): s for s in health.scores}
    assert set(scores) == {(version, "live"), (version, "canary"), (old, "live")}
    assert sum(scores[(version, "live")].counts) == 320 * 5  # 100 without an arm column count as live
    assert sum(scores[(version, "canary")].counts) == 80 * 5
    assert scores[(version, "live")].level == "ok" and scores[(old, "live")].psi is None
    live = scores[(version, "live")]
    assert len(live.edges) == len(live.counts) + 1 and list(live.edges) == sorted(live.edges)

    shares = {(s.group, s.status): s for s in health.statuses}
    assert shares[("user", "missing")].share == pytest.approx(45 / 450)  # per decision
    assert shares[("user", "present")].rows == 405 and shares[("user", "present")].total == 450
    assert shares[("item", "present")].share == 1.0  # the shown candidates only
    assert shares[("item", "unavailable")].share == 0.0

    scored = loop_health(
        tmp_path / "logs", tmp_path / "registry", "recommendation", NOW_MS, candidates="scored"
    )
    shares = {(s.group, s.status): s.share for s in scored.statuses}
    assert shares[("item", "unavailable")] == pytest.approx(0.5)
    assert {d.feature: d.served for d in scored.drift}["i_price"] == 400 * 10

    before = loop_health(tmp_path / "logs", tmp_path / "registry", "recommendation", NOW_MS - 2 * HOUR_MS)
    assert before.drift == () and before.scores == ()  # nothing decided by then


def _conversion_records(
    version: str, decided_at_ms: list[int], cart_items: np.ndarray, events: np.ndarray
) -> list[conversion_log.ConversionLogRecord]:
    ci, ev = INPUT_COLUMNS.index("c_cart_items"), INPUT_COLUMNS.index("u_events_7d")
    out = []
    for k, at in enumerate(decided_at_ms):
        row = np.zeros(len(INPUT_COLUMNS), np.float32)
        row[ci], row[ev] = cart_items[k], events[k]
        out.append(
            conversion_log.ConversionLogRecord(
                decision=ConversionDecision(
                    decision_id=f"c{k}",
                    request_id=f"q{k}",
                    model_version=version,
                    decided_at_ms=at,
                    probability=0.2,
                    action=ConversionAction.UNSPECIFIED,
                    threshold=None,
                    base_rate=0.1,
                ),
                request=ConversionRequest(
                    f"q{k}", f"u{k}", RequestContext(), int(cart_items[k]), 10.0, 3, 30.0, None, at
                ),
                feature_names=INPUT_COLUMNS,
                features=row,
                margin=0.0,
                profile_status=int(FeatureStatus.STALE if k % 4 == 0 else FeatureStatus.PRESENT),
            )
        )
    return out


def test_loop_health_reads_logged_feature_names(tmp_path: Path) -> None:
    """Conversion-style rows (feature_names + features): the cart grew, the activity did not."""
    rng = np.random.default_rng(3)
    n = 4000
    train = np.column_stack([rng.poisson(3, n), rng.poisson(2, n)]).astype(np.float32)
    registry = ModelRegistry(tmp_path / "registry")
    version = _publish(
        registry,
        "conversion",
        profile.build_profile(train, ("u_events_7d", "c_cart_items"), defaults={"c_cart_items": 0.0}),
    )
    m = 1500
    records = _conversion_records(
        version, [NOW_MS - HOUR_MS] * m, rng.poisson(2, m) + 4, rng.poisson(3, m).astype(np.float32)
    )
    _write(
        tmp_path / "logs" / "decisions",
        pa.Table.from_batches([conversion_log.to_batch(records)]),
        conversion_log.partition_of(records[0]),
        "part",
    )
    health = loop_health(tmp_path / "logs", tmp_path / "registry", "conversion", NOW_MS)
    by = {d.feature: d for d in health.drift}
    assert set(by) == {"u_events_7d", "c_cart_items"}  # the profile's, not every logged input
    assert by["c_cart_items"].level == "major" and by["u_events_7d"].level == "ok"
    assert by["c_cart_items"].group == "conversion"
    assert by["c_cart_items"].default_share == 0.0 < by["c_cart_items"].training_default_share
    shares = {(s.group, s.status): s.share for s in health.statuses}
    assert shares[("user profile", "stale")] == pytest.approx(0.25)
    assert shares[("user profile", "present")] == pytest.approx(0.75)
    assert [s.arm for s in health.scores] == ["live"] and health.scores[0].psi is None  # no score profile


def test_label_health_on_hand_made_outcome_times(tmp_path: Path) -> None:
    """10 decisions, 4 older than the 7-day window; 5 labelled at known delays; an outcome
    received after ``now`` and one of an unknown decision do not count."""
    decided = [NOW_MS - 10 * DAY_MS] * 4 + [NOW_MS - DAY_MS] * 6
    records = _conversion_records("v1", decided, np.ones(10), np.ones(10))
    _write(
        tmp_path / "logs" / "decisions",
        pa.Table.from_batches([conversion_log.to_batch(records)]),
        conversion_log.partition_of(records[0]),
        "part",
    )
    converted = OUTCOME_TYPES["converted"]
    assert converted.label_window_s == 7 * 86_400
    outcomes = []
    for k, delay_s in ((0, 60), (1, 120), (4, 180), (5, 240), (6, 600)):
        at = decided[k] + delay_s * 1000
        ref = DecisionRef(f"c{k}", "conversion", f"u{k}", decided[k])
        outcomes.append(outcome_log.OutcomeLogRecord(Outcome(f"c{k}", converted, at), at + 5, ref))
    late = decided[7] + 1000
    outcomes.append(outcome_log.OutcomeLogRecord(Outcome("c7", converted, late), NOW_MS + 1, None))
    outcomes.append(outcome_log.OutcomeLogRecord(Outcome("nope", converted, late), late, None))
    _write(
        tmp_path / "logs" / "outcomes",
        pa.Table.from_batches([outcome_log.to_batch(outcomes)]),
        outcome_log.partition_of(outcomes[0]),
        "part",
    )
    labels = loop_health(tmp_path / "logs", tmp_path / "registry", "conversion", NOW_MS).labels
    assert labels is not None
    assert labels.decisions == 10
    assert labels.matured_share == pytest.approx(0.4)
    assert labels.labelled_share == pytest.approx(0.5)
    assert labels.delay_p50_s == pytest.approx(180.0)
    assert labels.delay_p90_s == pytest.approx(240.0 + 0.6 * 360.0)  # linear between 240 and 600

    health = loop_health(tmp_path / "logs", tmp_path / "registry", "conversion", NOW_MS)
    assert any("v1" in note for note in health.notes)  # not in the registry: no profile read


def test_the_command_prints_the_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(5)
    train = np.column_stack([rng.poisson(3, 3000), rng.lognormal(3, 1, 3000), rng.random(3000)])
    registry = ModelRegistry(tmp_path / "registry")
    old = _publish(registry, "recommendation", None)
    version = _publish(
        registry,
        "recommendation",
        profile.build_profile(train.astype(np.float32), ("u_events_7d", "i_price", "x_emb_cosine")),
    )
    _recommendation_logs(tmp_path / "logs", version, old, rng)
    code = drift.main(["--logs", str(tmp_path / "logs"), "--registry", str(tmp_path / "registry"),
                       "--now-ms", str(NOW_MS)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "== recommendation ==" in out
    price = next(line for line in out.splitlines() if "i_price" in line)
    assert version in price and "major" in price
    assert "label" in out and "decisions 450" in out


def test_the_amount_only_start_model_profiles_the_input_it_learned_from(
    tiny_fraud_bootstrap, tmp_path
) -> None:
    from offline.features.fraud_features import FraudHistory
    from offline.simulation.fraud_world import FraudWorld
    from offline.use_cases.fraud import publish_amount_only_model

    world_dir, _, _ = tiny_fraud_bootstrap
    version = publish_amount_only_model(
        ModelRegistry(tmp_path / "registry"), FraudHistory(FraudWorld.load(world_dir)), threads=1
    )
    p = profile.load(version)
    assert p is not None and list(p.features) == ["r_amount_log"]
    assert len(p.features["r_amount_log"].edges) >= 5 and p.score is not None


# ---------------------------------------------------------------------------------------------
# Review fixes, each as a kind


def test_kind_profile_bins_at_the_log_float32_precision() -> None:
    # model outputs in float64 with much mass ON the edges (0.1 rounds UP in float32)
    values = np.repeat(np.array([0.1, 0.2, 0.3, 0.7, 0.9], np.float64), 200)
    h = profile.histogram(values, bins=5)
    logged = values.astype(np.float32)  # what the decision log holds
    assert psi(h.shares, h.shares_of(logged)) < 1e-9
    assert all(float(np.float32(e)) == e for e in h.edges)  # edges are float32 values
    # a profile written before the rule (float64 edges): binned at the log's precision too
    old = profile.Histogram((0.1, 0.2, 0.3, 0.7), (0.2, 0.2, 0.2, 0.2, 0.2), 0.0, 1000)
    assert psi(old.shares, old.shares_of(logged)) < 1e-9
    # the default share compares at that precision as well
    d = profile.histogram(values, bins=5, default=0.1)
    assert d.default_share == pytest.approx(0.2)
    assert profile.at_default(logged, 0.1).mean() == pytest.approx(0.2)


def _profile_json(**histogram_fields: object) -> dict:
    h = {"edges": [1.0], "proportions": [0.5, 0.5], "missing": 0.0, "rows": 10, "mean": 1.0}
    h.update(histogram_fields)
    return {"format": 1, "bins": 10, "rows": 10, "source_rows": 10, "features": {"u_events_7d": h}}


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"proportions": [float("nan"), 0.5]}, "not a share"),
        ({"missing": float("nan")}, "not a share"),
        ({"proportions": [-0.1, 1.1]}, "not a share"),
        ({"proportions": [0.5, 0.4]}, "sum to"),
        ({"rows": -1}, "rows"),
        ({"mean": float("inf")}, "mean"),
        ({"default": 0.0, "default_share": 1.5}, "default_share"),
        ({"proportions": [1.0]}, "edges"),
    ],
)
def test_kind_every_profile_field_is_validated(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        profile.FeatureProfile.from_json(_profile_json(**fields))
    profile.FeatureProfile.from_json(_profile_json())  # the valid one loads
    empty = _profile_json(proportions=[0.0, 0.0], rows=0)  # no row profiled: all zeros is right
    profile.FeatureProfile.from_json(empty)
    bad_score = dict(_profile_json(), score=_profile_json(**fields)["features"]["u_events_7d"])
    with pytest.raises(ValueError, match="score"):
        profile.FeatureProfile.from_json(bad_score)


def test_kind_a_bad_or_missing_profile_is_a_note_and_the_other_versions_are_measured(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 3000
    train = np.column_stack([rng.poisson(3, n), rng.lognormal(3, 1, n), rng.random(n)]).astype(np.float32)
    columns = ("u_events_7d", "i_price", "x_emb_cosine")
    registry = ModelRegistry(tmp_path / "registry")
    good = profile.build_profile(train, columns, rng.random(n))
    bad = good.to_json()
    bad["features"]["u_events_7d"]["proportions"][0] = float("nan")
    staging = registry.staging_dir("recommendation")
    (staging / "model.txt").write_text("placeholder")
    (staging / profile.PROFILE_FILE).write_text(json.dumps(bad))  # NaN: valid JSON for Python
    nan_version = registry.publish("recommendation", staging, {}).name
    version = _publish(registry, "recommendation", good)
    with pytest.raises(
        RegistryError, match=f"recommendation/{nan_version}: feature_profile.json.*not a share"
    ):
        profile.load(registry.get("recommendation", nan_version))
    _recommendation_logs(tmp_path / "logs", version, nan_version, rng)

    health = loop_health(tmp_path / "logs", tmp_path / "registry", "recommendation", NOW_MS)
    assert {d.version for d in health.drift} == {version}  # the good version still measured
    assert any(nan_version in note and "feature_profile.json" in note for note in health.notes)

    # listed in the manifest, then deleted: said missing, not "published before profiles"
    registry.get("recommendation", version).file(profile.PROFILE_FILE).unlink()
    with pytest.raises(RegistryError, match="listed in the manifest but missing"):
        profile.load(registry.get("recommendation", version))
    health = loop_health(tmp_path / "logs", tmp_path / "registry", "recommendation", NOW_MS)
    notes = " | ".join(health.notes)
    assert f"{version}: no profile read" in notes and "listed in the manifest but missing" in notes
    assert f"{version}: no feature profile (published before profiles)" not in notes


def test_kind_non_finite_served_scores_are_counted_and_in_the_missing_bin(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    n = 3000
    train = np.column_stack([rng.poisson(3, n), rng.lognormal(3, 1, n), rng.random(n)]).astype(np.float32)
    registry = ModelRegistry(tmp_path / "registry")
    version = _publish(
        registry,
        "recommendation",
        profile.build_profile(train[:, :2], ("u_events_7d", "i_price"), rng.random(n)),
    )
    _recommendation_logs(tmp_path / "logs", version, version, rng)
    files = sorted((tmp_path / "logs" / "decisions").rglob("*.parquet"))
    t = pq.read_table(files[0])
    scores = t.column("scores").to_pylist()
    scores[0] = [float("nan")] * len(scores[0])  # 5 shown candidates of one decision
    t = t.set_column(
        t.column_names.index("scores"), "scores", pa.array(scores, t.schema.field("scores").type)
    )
    pq.write_table(t, files[0])
    health = loop_health(tmp_path / "logs", tmp_path / "registry", "recommendation", NOW_MS)
    live = next(s for s in health.scores if s.arm == "live")
    assert live.non_finite == 5 and sum(live.counts) == 370 * 5 - 5  # 450 decisions, 80 canary
