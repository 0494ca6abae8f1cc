"""Kind: filters starve the answer. Sources retrieve deeper in proportion to what the filters
can remove; the executor refills when they still leave fewer than num_items, and flags a list
that is short because the eligible items ran out."""

import numpy as np

from decision_service.domain.recommendation import CandidateSource
from decision_service.stages.base import retrieval_depth
from decision_service.stages.sources.ann import AnnCandidates
from decision_service.stages.sources.popular import PopularCandidates
from tests.unit.conftest import N_ITEMS, make_state
from tests.unit.test_executor import run, seed_store


def ids(artifacts, rows):
    return frozenset(str(artifacts.catalog.item_ids[r]) for r in rows)


def test_kind_filter_starvation_depth_grows_with_exclusions_and_rounds(toy_artifacts):
    state = make_state(
        toy_artifacts, exclude_item_ids=ids(toy_artifacts, range(7)), seen=ids(toy_artifacts, range(7, 10))
    )
    # the seen set does not deepen the first round (refill rounds cover what it removes)
    assert retrieval_depth(state, 5, 1_000) == 5 + 7
    state.depth_factor = 4.0
    assert retrieval_depth(state, 5, 1_000) == 20 + 7
    assert retrieval_depth(state, 5, 12) == 12  # capped
    assert retrieval_depth(state, 5, 1_000, catalog_share=0.25) == 80 + 7


def test_kind_filter_starvation_popular_goes_past_excluded_items(toy_artifacts):
    excluded = ids(toy_artifacts, range(20))  # the 20 most popular
    state = make_state(toy_artifacts, embedding=None, exclude_item_ids=excluded)
    got = PopularCandidates(5, 5, 1_000).retrieve(state)
    assert len(set(got.rows.tolist()) - set(range(20))) == 5


def test_kind_filter_starvation_ann_deeper_for_a_narrow_allow_list(toy_artifacts):
    emb = np.asarray(toy_artifacts.item_embeddings[3]) * 2
    state = make_state(toy_artifacts, embedding=emb, allowed_categories=frozenset({2}))
    got = AnnCandidates(4, 1_000).retrieve(state)
    # category 2 holds a fifth of the catalog: 5x deeper, so ~4 of them survive the filter
    assert len(got) == 20


def test_kind_filter_starvation_executor_refills_then_flags_short_list(toy_artifacts, redis_client, redis_server):
    # every other item out of stock: only hydration reveals it, so the first round comes up short
    stock = np.where(np.arange(N_ITEMS) % 2 == 0, 0, 5)
    seed_store(redis_client, toy_artifacts, stock=stock)
    decision = run(toy_artifacts, redis_server.url, user_id="nobody", num_items=25)
    assert len(decision.items) == 25
    assert all(int(i.item_id[1:]) % 2 == 1 for i in decision.items)
    assert ("selection", "short_list") not in {(d.stage, d.reason) for d in decision.degraded}
    assert {i.source for i in decision.items} == {CandidateSource.POPULAR}
    # 30 in stock in all: asking for 40 gives all 30, flagged
    decision = run(toy_artifacts, redis_server.url, user_id="nobody", num_items=40)
    assert len(decision.items) == 30
    assert ("selection", "short_list") in {(d.stage, d.reason) for d in decision.degraded}
