"""NeighbourFraudRate: the fraud share among the k nearest labelled payments of a hand-made index."""

import math
from dataclasses import replace

import numpy as np
import pytest

from decision_service.features.assembly import RowAssembler
from decision_service.features.definitions import FRAUD_NEIGHBOUR_COLUMNS
from decision_service.features.fraud import FRAUD_INPUT_GROUPS, neighbour_space
from decision_service.retrieval.neighbours import NeighbourIndex
from decision_service.stages.hydrators.neighbour_fraud_rate import NeighbourFraudRate
from tests.unit.fraud.conftest import COLUMNS, flat_neighbours, make_state, row_with

DIMS = len(FRAUD_NEIGHBOUR_COLUMNS)


def axis(j: int, length: float) -> np.ndarray:
    p = np.zeros(DIMS, np.float32)
    p[j] = length
    return p


def hand_index(k: int) -> NeighbourIndex:
    """4 points at distance 1 from the origin (3 fraud), 3 far ones (not fraud)."""
    near = [axis(0, 1.0), axis(1, -1.0), axis(2, 1.0), axis(3, 1.0)]
    far = [axis(4, 10.0), axis(5, 10.0), axis(6, 10.0)]
    return flat_neighbours(np.stack(near + far), [1, 1, 0, 1, 0, 0, 0], k)


def fill(artifacts, row):
    state = make_state(artifacts, row=row)
    NeighbourFraudRate().fill(state, row)
    return dict(zip(COLUMNS, row[0].tolist(), strict=True))


def test_fraud_share_and_mean_distance_of_the_k_nearest(fraud_artifacts):
    artifacts = replace(fraud_artifacts, neighbours=hand_index(k=4))
    row = row_with(r_channel=2.0, r_hour_of_day=14.0)  # neighbour space: all zeros
    got = fill(artifacts, row)
    assert got["nn_fraud_rate"] == pytest.approx(0.75)
    assert got["nn_mean_distance"] == pytest.approx(1.0)
    assert got["r_channel"] == 2.0 and got["r_hour_of_day"] == 14.0  # nothing else is touched


def test_a_larger_k_reaches_the_far_points(fraud_artifacts):
    artifacts = replace(fraud_artifacts, neighbours=hand_index(k=6))
    got = fill(artifacts, row_with())
    assert got["nn_fraud_rate"] == pytest.approx(3 / 6)
    assert got["nn_mean_distance"] == pytest.approx((4 * 1.0 + 2 * 10.0) / 6)


def test_k_beyond_the_index_averages_over_real_neighbours_only(fraud_artifacts):
    artifacts = replace(
        fraud_artifacts, neighbours=flat_neighbours(np.stack([axis(0, 2.0), axis(1, 2.0)]), [1, 0], 5)
    )
    got = fill(artifacts, row_with())
    assert got["nn_fraud_rate"] == pytest.approx(0.5)
    assert got["nn_mean_distance"] == pytest.approx(2.0)


def test_query_is_standardized_and_counts_are_log_scaled(fraud_artifacts):
    # v_user_count_1h is a count: log1p(e - 1) = 1; standardized with mean 1, std 2 -> 0
    j_count = FRAUD_NEIGHBOUR_COLUMNS.index("v_user_count_1h")
    j_amount = FRAUD_NEIGHBOUR_COLUMNS.index("r_amount_log")
    mean, std = np.zeros(DIMS), np.ones(DIMS)
    mean[j_count], std[j_count] = 1.0, 2.0
    std[j_amount] = 4.0
    points = np.stack([axis(j_amount, 1.0), axis(j_amount, 5.0)])  # standardized space
    artifacts = replace(fraud_artifacts, neighbours=flat_neighbours(points, [1, 0], 1, mean, std))
    row = row_with(v_user_count_1h=math.e - 1.0, r_amount_log=4.0)  # -> (4 - 0) / 4 = 1 standardized
    space = neighbour_space(row, COLUMNS)
    assert space[0, j_count] == pytest.approx(1.0)
    assert space[0, j_amount] == pytest.approx(4.0)  # not a count: not log-scaled
    got = fill(artifacts, row)
    assert got["nn_fraud_rate"] == 1.0  # nearest is the point at 1.0, a fraud
    assert got["nn_mean_distance"] == pytest.approx(0.0, abs=1e-5)


def test_a_model_without_a_neighbour_column_only_gets_the_ones_it_uses(fraud_artifacts):
    columns = [c for c in COLUMNS if c != "nn_mean_distance"]
    artifacts = replace(
        fraud_artifacts, neighbours=hand_index(k=4), assembler=RowAssembler(columns, FRAUD_INPUT_GROUPS)
    )
    row = np.zeros((1, len(columns)), np.float32)
    NeighbourFraudRate().fill(make_state(artifacts, row=row), row)
    assert row[0, columns.index("nn_fraud_rate")] == pytest.approx(0.75)
    assert np.count_nonzero(row) == 1


def test_built_hnsw_index_agrees_with_the_exact_one():
    rng = np.random.default_rng(3)
    space = rng.normal(size=(300, DIMS)).astype(np.float32)
    labels = (space[:, 0] > 0).astype(np.uint8)
    built = NeighbourIndex.build(space, labels, k=10)
    query = space[:5] + 0.01
    exact = flat_neighbours((space - built.mean) / built.std, labels.tolist(), 10, built.mean, built.std)
    assert np.allclose(built.query(query), exact.query(query), atol=1e-4)


def test_build_rejects_a_wrong_space():
    with pytest.raises(ValueError, match="dims"):
        NeighbourIndex.build(np.zeros((20, 3), np.float32), np.zeros(20), k=5)
    with pytest.raises(ValueError, match="at least k"):
        NeighbourIndex.build(np.zeros((3, DIMS), np.float32), np.zeros(3), k=5)
