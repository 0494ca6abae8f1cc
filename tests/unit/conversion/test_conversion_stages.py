"""The conversion pipeline's declared failure policies, settings and artifact checks, without
a server: an executor over a fake store and a small real LightGBM model."""

from __future__ import annotations

import asyncio
import json

import lightgbm as lgb
import numpy as np
import pytest

from decision_service.config import ConfigError
from decision_service.domain.conversion import ConversionAction, ConversionRequest
from decision_service.domain.decision import RequestContext
from decision_service.engine import DEGRADE, FAIL, OnFailure, Step
from decision_service.features.conversion import PROFILE_COLUMNS, REQUEST_COLUMNS, reason_code
from decision_service.features.definitions import USER
from decision_service.features.packed import encode
from decision_service.models.conversion_artifacts import ConversionArtifacts, save_conversion_artifacts
from decision_service.models.registry import ModelVersion, RegistryError
from decision_service.stages.policies.threshold import ThresholdConfig
from decision_service.use_cases.conversion import threshold_config
from decision_service.use_cases.conversion.executor import ConversionExecutor
from decision_service.use_cases.conversion.pipeline import ON_FAILURE, conversion_pipeline

COLUMNS = ("u_events_30d", "u_purchase_rate", "c_cart_items", "c_surface", "c_hour_of_day")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> ConversionArtifacts:
    rng = np.random.default_rng(0)
    x = rng.random((400, len(COLUMNS))).astype(np.float32) * [50, 1, 5, 5, 24]
    y = (x[:, 2] + rng.normal(0, 1, 400) > 2.5).astype(np.float32)
    model = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 7},
        lgb.Dataset(x, y, feature_name=list(COLUMNS)),
        20,
    )
    d = tmp_path_factory.mktemp("conv_version")
    manifest = save_conversion_artifacts(d, model, (1.0, 0.0), float(y.mean()), {c: 1.0 for c in COLUMNS})
    return ConversionArtifacts.load(
        ModelVersion("conversion", "v0001", d, json.loads(json.dumps(manifest))), verify=False
    )


class FakeStore:
    def __init__(self, raw=None, error: Exception | None = None, delay_s: float = 0.0) -> None:
        self.raw, self.error, self.delay_s = raw, error, delay_s

    async def read_groups(self, requests):
        from decision_service.features.packed import decode

        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        return [decode(USER, [self.raw])]


def request(threshold: float | None = None) -> ConversionRequest:
    return ConversionRequest(
        "r1",
        "u1",
        RequestContext(surface="checkout", device="ios"),
        3,
        99.0,
        8,
        300.0,
        threshold,
        1_700_000_000_000,
    )


def run(artifacts, store, req=None, budget_s=1.0, threshold=None):
    threshold = threshold or ThresholdConfig()
    executor = ConversionExecutor("conversion", conversion_pipeline(store, threshold), lambda _: artifacts)
    return asyncio.run(executor.run(req or request(), budget_s)), executor


def stored_profile() -> bytes:
    values = USER.defaults.copy()
    values[USER.slot("u_events_30d")] = 40.0
    from decision_service.domain.decision import now_ms

    return encode(USER, values[None, :], now_ms())[0]


def test_a_healthy_score_uses_the_stored_profile(artifacts):
    decision, _ = run(artifacts, FakeStore(stored_profile()))
    assert decision.degraded == [] and decision.scored
    assert 0.0 < decision.probability < 1.0 and decision.action == ConversionAction.UNSPECIFIED
    assert set(decision.stage_ms) == {"profile", "features", "lightgbm", "policy"}


@pytest.mark.parametrize(
    "store, flag",
    [
        (FakeStore(error=ConnectionError("down")), ("features", "store_unavailable")),
        (FakeStore(error=TimeoutError()), ("features", "deadline_exceeded")),
        (FakeStore(delay_s=0.5), ("features", "deadline_exceeded")),
        (FakeStore(None), ("user_context", "unknown_user")),
        (FakeStore(b"\x00" * 5), ("features", "user_invalid")),
    ],
)
def test_kind_profile_failure_serves_declared_defaults_flagged(artifacts, store, flag):
    decision, executor = run(artifacts, store, budget_s=0.1)
    assert (decision.degraded[0].stage, decision.degraded[0].reason) == flag
    assert decision.scored and 0.0 < decision.probability < 1.0
    assert executor.degraded_counts[flag] == 1


def test_kind_model_failure_answers_the_base_rate_and_never_targets(artifacts, monkeypatch):
    from decision_service.stages.scorers.calibrated_lightgbm import CalibratedLightGbm

    def broken(self, state):
        raise RuntimeError("model exploded")

    monkeypatch.setattr(CalibratedLightGbm, "score", broken)
    decision, _ = run(artifacts, FakeStore(stored_profile()), request(threshold=0.0))
    assert [(d.stage, d.reason) for d in decision.degraded] == [("scoring", "model_error")]
    assert not decision.scored and decision.probability == pytest.approx(artifacts.base_rate)
    assert decision.action == ConversionAction.SKIP and decision.reasons == ()


def test_a_failing_fail_step_fails_the_request(artifacts, monkeypatch):
    from decision_service.stages.policies.threshold import Threshold

    monkeypatch.setattr(Threshold, "decide", lambda self, state: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        run(artifacts, FakeStore(stored_profile()))


def test_the_pipeline_declares_a_policy_for_every_step():
    pipeline = conversion_pipeline(FakeStore(), ThresholdConfig())
    steps = [pipeline.steps[name] for name in ("profile", "features", "scorer", "policy")]
    assert [s.on_failure for s in steps] == [DEGRADE, FAIL, DEGRADE, FAIL]
    assert [s.flag for s in steps] == ["features", "", "scoring", ""]
    with pytest.raises(ValueError, match="needs a flag"):
        Step(pipeline.scorer, DEGRADE)


def test_threshold_settings_come_from_the_environment_and_name_the_variable():
    assert threshold_config({}).threshold is None
    assert threshold_config({"DS_CONVERSION_THRESHOLD": "0.4"}).threshold == 0.4
    with pytest.raises(ConfigError, match="DS_CONVERSION_THRESHOLD"):
        threshold_config({"DS_CONVERSION_THRESHOLD": "high"})
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        threshold_config({"DS_CONVERSION_THRESHOLD": "1.5"})
    with pytest.raises(ConfigError, match="DS_CONVERSION_MAX_REASONS"):
        threshold_config({"DS_CONVERSION_MAX_REASONS": "3.5"})


def test_the_server_threshold_applies_when_the_request_has_none(artifacts):
    decision, _ = run(artifacts, FakeStore(stored_profile()), threshold=ThresholdConfig(threshold=0.0))
    assert decision.action == ConversionAction.TARGET and decision.threshold == 0.0
    decision, _ = run(
        artifacts, FakeStore(stored_profile()), request(threshold=1.0), threshold=ThresholdConfig(0.0)
    )
    assert decision.action == ConversionAction.SKIP and decision.threshold == 1.0


def test_categorical_reasons_name_their_category():
    assert reason_code("c_surface", 3.0, False) == ("SURFACE_CART", "on the cart page")
    assert reason_code("c_surface", -1.0, True)[0] == "SURFACE_OTHER"
    assert reason_code("c_cart_items", 0.0, True)[0] == "CART_EMPTY"
    assert all(reason_code(c, 1.0, False)[0] for c in PROFILE_COLUMNS + REQUEST_COLUMNS)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.pop("calibration"), "calibration"),
        (lambda m: m.update(calibration={"a": float("nan"), "b": 0}), "bad calibration"),
        (lambda m: m.update(base_rate=1.5), "base_rate"),
    ],
)
def test_kind_a_broken_version_is_refused_at_load(artifacts, tmp_path, change, message):
    manifest = save_conversion_artifacts(tmp_path, artifacts.model, (1.0, 0.0), 0.2, {})
    change(manifest)
    with pytest.raises(RegistryError, match=message):
        ConversionArtifacts.load(ModelVersion("conversion", "v0009", tmp_path, manifest), verify=False)


def test_kind_a_model_column_no_input_provides_is_refused(tmp_path):
    x = np.random.default_rng(1).random((50, 2)).astype(np.float32)
    model = lgb.train(
        {"objective": "binary", "verbose": -1},
        lgb.Dataset(x, (x[:, 0] > 0.5).astype(float), feature_name=["c_cart_items", "i_price"]),
        3,
    )
    manifest = save_conversion_artifacts(tmp_path, model, (1.0, 0.0), 0.5, {})
    with pytest.raises(RegistryError, match="i_price"):
        ConversionArtifacts.load(ModelVersion("conversion", "v0001", tmp_path, manifest), verify=False)


def test_kind_log_holds_every_input_not_just_the_model_columns(artifacts):
    """A model on 5 columns still logs all inputs: the next model (trained on the logs) may use
    any of them. (The flywheel's weak start model once starved every later retrain.)"""
    from decision_service.features.conversion import INPUT_COLUMNS
    from decision_service.stages.side_effects.conversion_decision import LogConversionDecision

    class Writer:
        records: list = []

        def submit(self, record):
            self.records.append(record)

    writer = Writer()
    pipeline = conversion_pipeline(FakeStore(stored_profile()), ThresholdConfig())
    executor = ConversionExecutor("conversion", pipeline, lambda _: artifacts, (LogConversionDecision(writer),))
    decision = asyncio.run(executor.run(request(), 1.0))
    (record,) = writer.records
    assert record.feature_names == INPUT_COLUMNS and len(record.features) == len(INPUT_COLUMNS)
    assert len(artifacts.columns) < len(INPUT_COLUMNS)
    assert record.features[INPUT_COLUMNS.index("u_events_30d")] == 40.0
    assert record.features[INPUT_COLUMNS.index("c_cart_items")] == 3.0
    assert record.decision is decision and record.margin is not None


def test_kind_a_bad_setting_stops_the_server_even_without_a_published_version(tmp_path, monkeypatch):
    from decision_service.use_cases.conversion import serve

    class Env:
        registry = ModelVersion  # never reached: the setting is read first

    monkeypatch.setenv("DS_CONVERSION_THRESHOLD", "2")
    with pytest.raises(ConfigError, match="DS_CONVERSION_THRESHOLD"):
        serve(Env())  # type: ignore[arg-type]
    monkeypatch.setenv("DS_CONVERSION_THRESHOLD", "0.5")
    monkeypatch.setenv("DS_CONVERSION_MAX_REASONS", "100000")
    with pytest.raises(ConfigError, match="DS_CONVERSION_MAX_REASONS"):
        serve(Env())  # type: ignore[arg-type]


def test_a_fail_step_declared_degrade_is_refused_at_build(artifacts):
    from dataclasses import replace as dc_replace

    pipeline = conversion_pipeline(FakeStore(), ThresholdConfig())
    wrong = dc_replace(pipeline, on_failure={**ON_FAILURE, "policy": OnFailure(DEGRADE, "policy")})
    with pytest.raises(ValueError, match="policy"):
        ConversionExecutor("conversion", wrong, lambda _: artifacts)


def test_kind_reason_at_the_median_reads_low_when_it_is_also_the_minimum():
    """An empty cart, no purchase, a visit today: most rows sit at 0 = median = minimum; a
    reason saying 'items in the cart' there was wrong (shared by fraud's reasons too)."""
    from decision_service.features.registry import reads_low

    assert reads_low(0.0, 0.0, 0.0) and reads_low(0.5, 1.0) and not reads_low(1.0, 1.0)
    assert not reads_low(2.0, 1.0, 0.0) and not reads_low(1.0, 1.0, 0.0)
    assert reason_code("c_cart_items", 0.0, reads_low(0.0, 0.0, 0.0))[0] == "CART_EMPTY"


def test_kind_a_version_trained_on_another_input_encoding_is_refused(artifacts, tmp_path):
    manifest = save_conversion_artifacts(tmp_path, artifacts.model, (1.0, 0.0), 0.2, {})
    manifest["conversion_inputs_version"] = "0123456789ab"
    with pytest.raises(RegistryError, match="conversion inputs"):
        ConversionArtifacts.load(ModelVersion("conversion", "v0002", tmp_path, manifest), verify=False)


def test_kind_calibration_is_fitted_on_rows_the_trees_never_saw():
    import pyarrow as pa

    from offline.training.train_conversion import ConversionTrainConfig, fit_conversion

    rng = np.random.default_rng(3)
    n = 2000
    x = rng.normal(size=n)
    y = rng.random(n) < 1 / (1 + np.exp(-2 * x))
    table = pa.table({
        "decision_id": [f"d{i:05d}" for i in range(n)],
        "decided_at": pa.array(np.arange(n) * 1000).cast(pa.timestamp("ms", tz="UTC")),
        "converted": y,
        "c_cart_items": x.astype(np.float32),
    })
    fitted = fit_conversion(table, ConversionTrainConfig(columns=("c_cart_items",), threads=1))
    info = fitted.info
    assert info["calibration_rows"] == 400  # the latest 20 %
    assert info["train_rows"] + info["valid_rows"] == 1600  # the trees and early stopping: the rest
    with pytest.raises(ValueError, match="calibrat"):
        one_class_tail = table.set_column(2, "converted", pa.array(np.r_[y[:1600], np.zeros(400, bool)]))
        fit_conversion(one_class_tail, ConversionTrainConfig(columns=("c_cart_items",), threads=1))


def test_training_leaves_out_outage_rows_but_keeps_unknown_users(tmp_path):
    import pyarrow as pa

    from offline.loop.retrain_conversion import ConversionRetrainConfig, retrain_conversion
    from offline.training.train_conversion import ConversionTrainConfig

    rng = np.random.default_rng(4)
    n = 1500
    x = rng.normal(size=n)
    flags = [["features:store_unavailable"] if i % 10 == 0 else ["user_context:unknown_user"] if i % 10 == 1
             else [] for i in range(n)]
    table = pa.table({
        "decision_id": [f"d{i:05d}" for i in range(n)],
        "decided_at": pa.array(np.arange(n) * 1000).cast(pa.timestamp("ms", tz="UTC")),
        "degraded": [bool(f) for f in flags],
        "converted": rng.random(n) < 1 / (1 + np.exp(-2 * x)),
        "flags": flags,
        "c_cart_items": x.astype(np.float32),
    })
    cfg = ConversionRetrainConfig(train=ConversionTrainConfig(columns=("c_cart_items",), threads=1))
    result = retrain_conversion(table, tmp_path / "registry", cfg)
    assert result.published and result.training["rows"] == n - n // 10  # outages out, unknown users in
