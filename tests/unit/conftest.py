"""Small hand-made artifacts for stage unit tests: fast, deterministic, no Redis."""

from __future__ import annotations

import faiss
import lightgbm as lgb
import numpy as np
import pytest

from decision_service.domain.features import FeatureStatus, GroupValues
from decision_service.domain.recommendation import RecommendationRequest
from decision_service.features.assembly import FeatureAssembler
from decision_service.features.definitions import (
    EMBEDDING_DIM,
    ITEM,
    RECOMMENDATION_MODEL_FEATURES,
    USER,
)
from decision_service.models.recommendation_artifacts import ItemCatalog, RecommendationArtifacts
from decision_service.stages.base import HydratedFeatures, RecommendationState, UserState

N_ITEMS = 60


@pytest.fixture(scope="session")
def toy_artifacts() -> RecommendationArtifacts:
    rng = np.random.default_rng(7)
    emb = rng.normal(size=(N_ITEMS, EMBEDDING_DIM)).astype(np.float32)
    index = faiss.IndexFlatIP(EMBEDDING_DIM)
    index.add(emb)
    x = rng.normal(size=(400, len(RECOMMENDATION_MODEL_FEATURES)))
    y = (x[:, 0] + rng.normal(scale=0.1, size=400) > 0).astype(int)
    model = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": 1},
        lgb.Dataset(x, y, feature_name=list(RECOMMENDATION_MODEL_FEATURES)),
        num_boost_round=5,
    )
    catalog = ItemCatalog(
        item_ids=np.array([f"i{i:07d}" for i in range(N_ITEMS)], dtype=object),
        categories=(np.arange(N_ITEMS) % 5).astype(np.int16),
        popularity=np.arange(N_ITEMS, 0, -1).astype(np.float32),  # item 0 most popular
    )
    return RecommendationArtifacts(
        version="v-toy",
        model=model,
        assembler=FeatureAssembler(RECOMMENDATION_MODEL_FEATURES),
        index=index,
        item_embeddings=emb,
        catalog=catalog,
        manifest={},
    )


def make_state(
    artifacts: RecommendationArtifacts,
    user_id: str = "u0000001",
    num_items: int = 10,
    embedding: np.ndarray | None = None,
    seen: frozenset[str] = frozenset(),
    **request_fields: object,
) -> RecommendationState:
    request = RecommendationRequest(
        request_id="r1",
        user_id=user_id,
        num_items=num_items,
        **request_fields,  # type: ignore[arg-type]
    )
    state = RecommendationState(request=request, artifacts=artifacts)
    status = FeatureStatus.PRESENT if embedding is not None else FeatureStatus.MISSING
    # seen ids as the hydrator maps them: catalog rows, unknown ids dropped
    state.user = UserState(user_id, embedding, status, artifacts.catalog.rows_of(seen))
    return state


def hydrated(
    n: int, stock: np.ndarray | None = None, status: int = FeatureStatus.PRESENT
) -> HydratedFeatures:
    items = np.tile(ITEM.defaults, (n, 1))
    if stock is not None:
        items[:, ITEM.slot("i_stock")] = stock
    return HydratedFeatures(
        GroupValues("user", USER.defaults[None, :].copy(), np.zeros(1, np.uint8)),
        GroupValues("item", items, np.full(n, status, np.uint8)),
        np.zeros((n, 6), np.float32),
    )
