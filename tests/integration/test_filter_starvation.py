"""Kind: filters starve the answer. While eligible items exist, a request gets num_items items
(the sources retrieve deeper in proportion to what the filters remove); when they run out,
the shorter list is flagged ``selection:short_list``. Real gRPC, real Redis, tiny world."""

from __future__ import annotations

import numpy as np
import pytest

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service.domain.features import FeatureStatus
from decision_service.features.definitions import CATEGORIES, ITEM
from decision_service.features.packed import decode
from decision_service.features.redis_store import feature_keys, seen_key
from decision_service.models.recommendation_artifacts import RecommendationArtifacts
from decision_service.models.registry import ModelRegistry

SHORT = ("selection", "short_list")


def recommend(stub, user_id, num_items, **fields):
    request = pb.GetDecisionRequest(
        recommendation=pb.RecommendationRequest(user_id=user_id, num_items=num_items, **fields)
    )
    return stub.GetDecision(request, timeout=10)


@pytest.fixture(scope="module")
def shelf(served_world):
    """(catalog item ids, their categories, bool: the out-of-stock filter keeps it), as served."""
    artifacts = RecommendationArtifacts.load(ModelRegistry(served_world.registry_root).current("recommendation"))
    ids = [str(i) for i in artifacts.catalog.item_ids]
    client = served_world.redis.client()
    items = decode(ITEM, client.mget(feature_keys(ITEM, ids)))
    in_stock = ~((items.status == FeatureStatus.PRESENT) & (items.values[:, ITEM.slot("i_stock")] <= 0))
    return np.asarray(ids, dtype=object), artifacts.catalog.categories, in_stock


def active_user(world):
    counts = np.bincount(world.event_user, minlength=world.n_users)
    return str(world.user_ids[int(np.argmax(counts))])


def degradations(reply):
    return {(d.stage, d.reason) for d in reply.degraded}


def exclusion_loop(stub, user, num_items, eligible, calls, **fields):
    """Calls ``calls`` times, each excluding everything served so far; checks every answer."""
    excluded: list[str] = []
    lengths = []
    for _ in range(calls):
        reply = recommend(stub, user, num_items, exclude_item_ids=excluded, **fields)
        served = [i.item_id for i in reply.recommendation.items]
        remaining = len(eligible - set(excluded))
        assert len(served) == len(set(served))
        assert not set(served) & set(excluded)
        assert set(served) <= eligible
        assert len(served) == min(num_items, remaining), (len(excluded), remaining, degradations(reply))
        assert (SHORT in degradations(reply)) == (len(served) < num_items)
        excluded += served
        lengths.append(len(served))
        if not served:
            break
    return lengths


def test_kind_filter_starvation_exclusion_loop_known_user(stub, served_world, shelf):
    ids, _, in_stock = shelf
    user = active_user(served_world.world)
    seen = {s.decode() for s in served_world.redis.client().zrange(seen_key(user), 0, -1)}
    assert seen, "the most active user has history"
    eligible = set(ids[in_stock]) - seen
    # 10 calls of 100: up to 900 exclusions (the limit is 1,000); 0 items after ~210 before
    lengths = exclusion_loop(stub, user, 100, eligible, calls=10)
    assert lengths == [100] * 10


def test_kind_filter_starvation_exclusion_loop_unknown_user(stub, shelf):
    ids, _, in_stock = shelf
    lengths = exclusion_loop(stub, "never-seen-starving-user", 100, set(ids[in_stock]), calls=10)
    assert lengths == [100] * 10


def test_kind_filter_starvation_one_allowed_category_fills_then_flags_short(stub, served_world, shelf):
    ids, categories, in_stock = shelf
    user = active_user(served_world.world)
    seen = {s.decode() for s in served_world.redis.client().zrange(seen_key(user), 0, -1)}
    c = int(np.argmax(np.bincount(categories, minlength=len(CATEGORIES))))
    eligible = set(ids[in_stock & (categories == c)]) - seen
    assert 60 < len(eligible) < 400, "a category of the tiny world holds ~100 items"
    first = recommend(stub, user, 50, allowed_categories=[CATEGORIES[c]])
    assert len(first.recommendation.items) == 50  # the category cap (4) relaxes: one category
    assert {i.category for i in first.recommendation.items} == {CATEGORIES[c]}
    # then until the category runs dry: full lists, one short flagged list, then empty and flagged
    lengths = exclusion_loop(stub, user, 30, eligible, calls=30, allowed_categories=[CATEGORIES[c]])
    assert sum(lengths) == len(eligible) and lengths[-1] == 0
    assert all(n == 30 for n in lengths[: len(eligible) // 30])
