import numpy as np

from decision_service.domain.recommendation import Candidates
from decision_service.features.definitions import RECOMMENDATION_MODEL_FEATURES
from decision_service.stages.scorers.lightgbm_ranker import LightGbmRanker
from decision_service.stages.selectors.top_k_category_cap import TopKWithCategoryCap
from tests.unit.conftest import hydrated, make_state


def candidates(rows):
    rows = np.asarray(rows, np.int64)
    return Candidates(rows, np.ones(len(rows), np.uint8), np.zeros(len(rows), np.float32))


def test_scorer_returns_one_score_per_candidate_in_order(toy_artifacts):
    state = make_state(toy_artifacts)
    state.candidates = candidates(range(8))
    state.features = hydrated(8)
    state.features.items.values[:, 0] = np.arange(8)  # vary i_price so rows differ
    scores = LightGbmRanker().score(state)
    assert scores.shape == (8,) and scores.dtype == np.float32
    matrix = toy_artifacts.assembler.assemble(
        state.features.user.values[0], state.features.items.values, state.features.cross
    )
    assert np.allclose(scores, toy_artifacts.model.predict(matrix))
    assert matrix.shape == (8, len(RECOMMENDATION_MODEL_FEATURES))


def test_selector_takes_top_k_by_score(toy_artifacts):
    state = make_state(toy_artifacts, num_items=3)
    state.candidates = candidates([0, 1, 2, 3, 4])  # categories 0..4
    chosen = TopKWithCategoryCap(max_per_category=5).select(state, np.array([1, 5, 3, 4, 2.0]))
    assert chosen.tolist() == [1, 3, 2]


def test_selector_caps_items_per_category(toy_artifacts):
    state = make_state(toy_artifacts, num_items=4)
    state.candidates = candidates([0, 5, 10, 1, 2])  # rows 0, 5, 10 share category 0
    scores = np.array([9, 8, 7, 1, 0.5])
    chosen = TopKWithCategoryCap(max_per_category=2).select(state, scores)
    assert chosen.tolist() == [0, 1, 3, 4]


def test_selector_cap_is_soft_when_candidates_run_out(toy_artifacts):
    state = make_state(toy_artifacts, num_items=3)
    state.candidates = candidates([0, 5, 10])  # all category 0
    chosen = TopKWithCategoryCap(max_per_category=1).select(state, np.array([1, 3, 2.0]))
    assert chosen.tolist() == [1, 2, 0]
