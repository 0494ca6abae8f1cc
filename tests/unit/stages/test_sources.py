import numpy as np

from decision_service.domain.recommendation import Candidates, CandidateSource
from decision_service.stages.sources.ann import AnnCandidates
from decision_service.stages.sources.popular import PopularCandidates
from tests.unit.conftest import make_state


def test_ann_returns_exact_nearest_items_best_first(toy_artifacts):
    query = np.asarray(toy_artifacts.item_embeddings[17]) * 3.0
    state = make_state(toy_artifacts, embedding=query)
    got = AnnCandidates(10).retrieve(state)
    exact = np.argsort(-(toy_artifacts.item_embeddings @ query))[:10]
    assert got.rows.tolist() == exact.tolist()
    assert np.all(np.diff(got.retrieval_scores) <= 0)
    assert set(got.sources.tolist()) == {CandidateSource.ANN}


def test_ann_is_empty_for_unknown_user(toy_artifacts):
    assert len(AnnCandidates(10).retrieve(make_state(toy_artifacts, embedding=None))) == 0


def test_ann_drops_faiss_padding_when_asking_for_more_than_the_catalog(toy_artifacts):
    state = make_state(toy_artifacts, embedding=np.ones(64, np.float32))
    got = AnnCandidates(500).retrieve(state)
    assert len(got) == len(toy_artifacts.catalog) and got.rows.min() >= 0


def test_popular_gives_more_candidates_to_unknown_users(toy_artifacts):
    source = PopularCandidates(num_candidates=5, num_fallback_candidates=20)
    known = source.retrieve(make_state(toy_artifacts, embedding=np.ones(64, np.float32)))
    unknown = source.retrieve(make_state(toy_artifacts, embedding=None))
    assert known.rows.tolist() == [0, 1, 2, 3, 4]  # toy popularity decreases with the row
    assert unknown.rows.tolist() == list(range(20))
    assert set(unknown.sources.tolist()) == {CandidateSource.POPULAR}


def test_popular_respects_category_allow_list(toy_artifacts):
    source = PopularCandidates(num_candidates=5, num_fallback_candidates=8)
    state = make_state(toy_artifacts, allowed_categories=frozenset({3}))
    got = source.retrieve(state)
    assert len(got) == 8
    assert set(toy_artifacts.catalog.categories[got.rows].tolist()) == {3}
    assert np.all(np.diff(toy_artifacts.catalog.popularity[got.rows]) <= 0)


def test_merge_keeps_first_source_for_duplicates_and_order():
    a = Candidates(np.array([5, 3, 9]), np.full(3, 1, np.uint8), np.array([3, 2, 1], np.float32))
    b = Candidates(np.array([3, 7]), np.full(2, 2, np.uint8), np.array([9, 8], np.float32))
    merged = Candidates.merge([a, b])
    assert merged.rows.tolist() == [5, 3, 9, 7]
    assert merged.sources.tolist() == [1, 1, 1, 2]
