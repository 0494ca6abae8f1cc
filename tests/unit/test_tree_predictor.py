"""DS_SCORER: compiled trees give LightGBM's scores, are cached, and fall back to LightGBM."""

from __future__ import annotations

import logging
import sys

import lightgbm as lgb
import numpy as np
import pytest

from decision_service.models.tree_predictor import (
    CompiledTreesUnavailable,
    LightGbmPredictor,
    make_predictor,
    sample_rows,
)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2_000, 6)).astype(np.float32)
    x[:, 5] = rng.integers(0, 8, len(x))
    x[rng.random(x.shape) < 0.05] = np.nan
    y = (np.nan_to_num(x[:, 0]) + (x[:, 5] == 3) + rng.normal(0, 0.5, len(x)) > 0.5).astype(int)
    data = lgb.Dataset(x, y, categorical_feature=[5], free_raw_data=False)
    booster = lgb.train(
        {"objective": "binary", "num_leaves": 8, "verbose": -1, "num_threads": 1}, data, num_boost_round=8
    )
    path = tmp_path_factory.mktemp("version") / "model.txt"
    booster.save_model(str(path))
    return path


def test_lightgbm_mode_never_compiles(model_file):
    booster = lgb.Booster(model_file=str(model_file))
    predictor = make_predictor(booster, model_file, "lightgbm", 1e-6)
    assert isinstance(predictor, LightGbmPredictor)
    assert not (model_file.parent / ".compiled").exists()


def test_sample_rows_cover_thresholds_missing_and_categories(model_file):
    booster = lgb.Booster(model_file=str(model_file))
    x = sample_rows(booster, 256)
    assert x.shape == (256, 6) and x.dtype == np.float32
    assert np.isnan(x).any()
    assert len(np.unique(x[~np.isnan(x[:, 5]), 5])) > 2


def test_compiled_matches_lightgbm_and_is_cached(model_file):
    pytest.importorskip("lleaves")
    booster = lgb.Booster(model_file=str(model_file))
    predictor = make_predictor(booster, model_file, "compiled", 1e-9)
    assert predictor.kind == "compiled"
    x = sample_rows(booster, 300, seed=7)
    assert np.max(np.abs(predictor.predict(x) - booster.predict(x))) <= 1e-9
    cached = list((model_file.parent / ".compiled").glob("*.so"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    again = make_predictor(booster, model_file, "auto", 1e-9)  # loads the cache, no recompile
    assert again.kind == "compiled" and cached[0].stat().st_mtime_ns == mtime


def test_auto_falls_back_to_lightgbm_and_says_why(model_file, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "lleaves", None)  # "not installed"
    booster = lgb.Booster(model_file=str(model_file))
    with caplog.at_level(logging.INFO):
        predictor = make_predictor(booster, model_file, "auto", 1e-6, "recommendation/v0001")
    assert predictor.kind == "lightgbm"
    assert "compiled trees unavailable" in caplog.text and "lleaves is not installed" in caplog.text
    with pytest.raises(CompiledTreesUnavailable, match="lleaves is not installed"):
        make_predictor(booster, model_file, "compiled", 1e-6)
