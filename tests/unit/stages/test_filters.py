import numpy as np
import pytest

from decision_service.domain.features import FeatureStatus
from decision_service.domain.recommendation import Candidates
from decision_service.stages.filters.category_allow_list import CategoryAllowList
from decision_service.stages.filters.out_of_stock import OutOfStock
from decision_service.stages.filters.previously_seen import PreviouslySeen
from decision_service.stages.filters.request_exclusions import RequestExclusions
from tests.unit.conftest import hydrated, make_state


def with_candidates(state, rows):
    rows = np.asarray(rows, np.int64)
    state.candidates = Candidates(rows, np.ones(len(rows), np.uint8), np.zeros(len(rows), np.float32))
    return state


def kept_rows(state, f):
    return state.candidates.rows[f.keep(state)].tolist()


def test_previously_seen_removes_seen_items(toy_artifacts):
    state = with_candidates(make_state(toy_artifacts, seen=frozenset({"i0000002", "i0000004"})), [1, 2, 3, 4])
    assert kept_rows(state, PreviouslySeen()) == [1, 3]


def test_request_exclusions_remove_excluded_items(toy_artifacts):
    state = make_state(toy_artifacts, exclude_item_ids=frozenset({"i0000001", "i0000099"}))
    assert kept_rows(with_candidates(state, [0, 1, 2]), RequestExclusions()) == [0, 2]


def test_category_allow_list_keeps_only_allowed(toy_artifacts):
    state = make_state(toy_artifacts, allowed_categories=frozenset({1, 2}))
    # toy category = row % 5
    assert kept_rows(with_candidates(state, range(10)), CategoryAllowList()) == [1, 2, 6, 7]


def test_category_allow_list_empty_means_all(toy_artifacts):
    state = with_candidates(make_state(toy_artifacts), range(7))
    assert kept_rows(state, CategoryAllowList()) == list(range(7))


def test_out_of_stock_removes_only_items_known_to_be_out(toy_artifacts):
    state = with_candidates(make_state(toy_artifacts), [0, 1, 2])
    state.features = hydrated(3, stock=np.array([5, 0, 1]))
    assert kept_rows(state, OutOfStock()) == [0, 2]


@pytest.mark.parametrize("status", [FeatureStatus.MISSING, FeatureStatus.UNAVAILABLE])
def test_out_of_stock_keeps_items_whose_stock_is_unknown(toy_artifacts, status):
    state = with_candidates(make_state(toy_artifacts), [0, 1])
    state.features = hydrated(2, stock=np.array([0, 0]), status=status)
    assert kept_rows(state, OutOfStock()) == [0, 1]


def test_previously_seen_with_no_user_or_nothing_seen_keeps_all(toy_artifacts):
    state = with_candidates(make_state(toy_artifacts), [5, 0, 9])
    assert kept_rows(state, PreviouslySeen()) == [5, 0, 9]
    state.user = None
    assert kept_rows(state, PreviouslySeen()) == [5, 0, 9]


def test_previously_seen_compares_rows_in_any_candidate_order(toy_artifacts):
    seen = frozenset({"i0000000", "i0000059", "i0000030", "unknown"})
    state = with_candidates(make_state(toy_artifacts, seen=seen), [59, 1, 30, 58, 0, 31])
    assert state.user.seen_rows.tolist() == [0, 30, 59]
    assert kept_rows(state, PreviouslySeen()) == [1, 58, 31]
