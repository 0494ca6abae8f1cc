"""Large checks, run by `make test-slow` (not `make test`): the demo-sized worlds learn."""

from __future__ import annotations

import pytest

from offline.runs.bootstrap import bootstrap
from offline.simulation.world import generate_world, preset

pytestmark = pytest.mark.slow


def test_small_world_ranker_beats_every_baseline_on_served_candidates(tmp_path):
    generate_world(preset("small"), tmp_path / "world")
    version = bootstrap(tmp_path / "world", tmp_path / "registry")
    m = version.manifest["metrics"]
    # "retrieved only" = candidates exactly as serving builds them (no added positives)
    assert m["retrieved_only_model_ndcg@20"] >= m["retrieved_only_embedding_ndcg@20"] + 0.02
    assert m["retrieved_only_model_ndcg@20"] >= 3 * m["retrieved_only_popularity_ndcg@20"]
    assert m["retrieved_only_model_ndcg@20"] >= 5 * m["retrieved_only_random_ndcg@20"]
    assert version.manifest["index"]["recall_at_k"] >= 0.95
