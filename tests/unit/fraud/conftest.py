"""Small hand-made fraud artifacts and states for the fraud stage unit tests.

Fast and deterministic: a tiny LightGBM trained on a few hundred random rows, an exact
(flat) neighbour index, explicit times everywhere, a private Redis where a stage talks to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

import faiss
import lightgbm as lgb
import numpy as np
import pytest

from decision_service.domain.features import FeatureStatus, GroupValues
from decision_service.domain.fraud import FraudCheckRequest, Transaction
from decision_service.features.assembly import RowAssembler
from decision_service.features.definitions import (
    DEVICE,
    FRAUD_MODEL_FEATURES,
    FRAUD_NEIGHBOUR_COLUMNS,
    FRAUD_USER,
    MERCHANT,
)
from decision_service.features.fraud import FRAUD_INPUT_GROUPS
from decision_service.features.redis_mux import MultiplexedRedis
from decision_service.features.store import StoredContext
from decision_service.models.fraud_artifacts import FraudArtifacts
from decision_service.retrieval.neighbours import NeighbourIndex
from decision_service.stages.fraud_base import FraudState, Score

T = TypeVar("T")

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
OCCURRED_MS = 19_800 * DAY_MS + 14 * HOUR_MS + 30 * 60_000  # 2024-03-18 14:30:00 UTC
COLUMNS: list[str] = list(FRAUD_MODEL_FEATURES)
NO_EVENTS = (np.empty(0, np.int64), np.empty(0, np.float64))


@pytest.fixture(scope="session")
def fraud_artifacts() -> FraudArtifacts:
    """A 10-tree LightGBM over every default fraud column and a 4-point exact neighbour index."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(400, len(COLUMNS)))
    signal = x[:, COLUMNS.index("r_amount_z_user")] + x[:, COLUMNS.index("r_new_device")]
    y = (signal + rng.normal(scale=0.3, size=400) > 0.5).astype(int)
    model = lgb.train(
        {
            "objective": "binary",
            "verbose": -1,
            "num_threads": 1,
            "seed": 1,
            "deterministic": True,
            "num_leaves": 7,
            "min_data_in_leaf": 10,
        },
        lgb.Dataset(x, y, feature_name=COLUMNS),
        num_boost_round=10,
    )
    return FraudArtifacts(
        version="v-fraud-toy",
        model=model,
        assembler=RowAssembler(COLUMNS, FRAUD_INPUT_GROUPS),
        neighbours=flat_neighbours(np.zeros((4, len(FRAUD_NEIGHBOUR_COLUMNS)), np.float32), [0, 0, 0, 0], 2),
        medians=np.zeros(len(COLUMNS), np.float32),
        manifest={},
    )


def flat_neighbours(points: np.ndarray, labels: list[int], k: int, mean=None, std=None) -> NeighbourIndex:
    """An exact L2 index over ``points`` (already standardized unless mean/std say otherwise)."""
    dims = len(FRAUD_NEIGHBOUR_COLUMNS)
    index = faiss.IndexFlatL2(dims)
    index.add(np.ascontiguousarray(points, np.float32))
    return NeighbourIndex(
        index,
        np.asarray(labels, np.uint8),
        np.zeros(dims, np.float32) if mean is None else np.asarray(mean, np.float32),
        np.ones(dims, np.float32) if std is None else np.asarray(std, np.float32),
        k,
    )


def transaction(**fields: object) -> Transaction:
    values: dict[str, object] = {
        "transaction_id": "t-1",
        "user_id": "u1",
        "amount_minor": 2_500,
        "currency": "EUR",
        "amount_eur": 25.0,
        "merchant_id": "m1",
        "merchant_category": "5411",
        "country": "DE",
        "device_id": "d1",
        "ip_address": "81.2.69.160",
        "channel": 2,
        "occurred_at_ms": OCCURRED_MS,
        "payment_instrument_id": "c1",
    }
    values.update(fields)
    return Transaction(**values)  # type: ignore[arg-type]


def group(g, values: dict[str, float] | None = None) -> GroupValues:
    row = g.defaults.copy()
    for name, value in (values or {}).items():
        row[g.slot(name)] = value
    return GroupValues(g.name, row[None, :], np.array([FeatureStatus.PRESENT], np.uint8))


def context(
    user: dict[str, float] | None = None,
    merchant: dict[str, float] | None = None,
    device: dict[str, float] | None = None,
    user_events=NO_EVENTS,
    device_events=NO_EVENTS,
    device_known: bool = True,
    blocked: frozenset[str] = frozenset(),
    previous_record: bytes | None = None,
) -> StoredContext:
    return StoredContext(
        user=group(FRAUD_USER, user),
        merchant=group(MERCHANT, merchant),
        device=group(DEVICE, device),
        user_events=user_events,
        device_events=device_events,
        device_known=device_known,
        blocked=blocked,
        previous_record=previous_record,
    )


def events(*pairs: tuple[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """(time ms, amount EUR) pairs -> the store's event arrays."""
    return np.array([t for t, _ in pairs], np.int64), np.array([a for _, a in pairs], np.float64)


def row_with(**values: float) -> np.ndarray:
    """A [1, n] model row of zeros with the named columns set."""
    row = np.zeros((1, len(COLUMNS)), np.float32)
    for name, value in values.items():
        row[0, COLUMNS.index(name)] = value
    return row


def make_state(
    artifacts: FraudArtifacts,
    ctx: StoredContext | None = None,
    row: np.ndarray | None = None,
    probability: float | None = None,
    contributions: np.ndarray | None = None,
    **txn_fields: object,
) -> FraudState:
    state = FraudState(FraudCheckRequest("r1", transaction(**txn_fields)), artifacts)
    state.context = ctx
    state.row = row
    if probability is not None:
        contrib = np.zeros(len(COLUMNS) + 1, np.float32) if contributions is None else contributions
        state.score = Score(probability, contrib)
    return state


def with_model(artifacts: FraudArtifacts, model: object) -> FraudArtifacts:
    return replace(artifacts, model=model)


def run_with_client(url: str, body: Callable[[MultiplexedRedis], Awaitable[T]], **kwargs: float) -> T:
    """Runs ``body(client)`` on a fresh event loop with the serving read client of ``url``."""

    async def go() -> T:
        client = MultiplexedRedis(url, **kwargs)
        try:
            return await body(client)
        finally:
            await client.aclose()

    return asyncio.run(go())
