"""The recommendation decision log: one row per served decision, schema from the registry.

Each row holds every candidate the model scored with its source, retrieval score, model
score and final rank (0 = scored but not served), and the EXACT feature values served:
the user vector, each candidate's item vector and cross features, with a status per entity
and group (decision_service.domain.features.FeatureStatus). The model's input is a fixed
projection of these (FeatureAssembler), so the training set never recomputes features.
File metadata carries the registry version and the column names of every vector.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from decision_service.decision_log import columns
from decision_service.domain.decision import Degradation
from decision_service.domain.recommendation import RequestContext
from decision_service.features.definitions import ITEM, REGISTRY, USER, USER_ITEM

USE_CASE = "recommendation"


@dataclass(frozen=True, slots=True)
class RecommendationLogRecord:
    decision_id: str
    request_id: str
    decided_at_ms: int
    user_id: str
    context: RequestContext
    model_version: str
    degraded: tuple[Degradation, ...]
    item_ids: np.ndarray  # object [n] of str: every candidate the model scored
    sources: np.ndarray  # uint8 [n] CandidateSource
    retrieval_scores: np.ndarray  # float32 [n]
    scores: np.ndarray  # float32 [n]
    ranks: np.ndarray  # int16 [n], 1-based; 0 = not served
    propensities: np.ndarray  # float32 [n]: probability of being shown where it was
    user_features: np.ndarray  # float32 [USER.width]
    user_status: int
    item_features: np.ndarray  # float32 [n, ITEM.width]
    item_status: np.ndarray  # uint8 [n]
    cross_features: np.ndarray  # float32 [n, USER_ITEM width]
    arm: str = "live"  # the rollout arm that served it: "live" or "canary"
    stage_ms: tuple[tuple[str, float], ...] = ()  # (stage, ms) of the decision


def _vector_list(width: int) -> pa.DataType:
    return pa.list_(pa.list_(pa.float32(), width))


SCHEMA = pa.schema(
    [
        pa.field("decision_id", pa.string(), nullable=False),
        pa.field("request_id", pa.string()),
        pa.field("decided_at", columns.TIMESTAMP, nullable=False),
        pa.field("use_case", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("context", columns.CONTEXT),
        pa.field("model_version", pa.string()),
        pa.field("registry_version", pa.string()),
        pa.field("degraded", columns.DEGRADED),
        pa.field("item_ids", pa.list_(pa.string())),
        pa.field("sources", pa.list_(pa.uint8())),
        pa.field("retrieval_scores", pa.list_(pa.float32())),
        pa.field("scores", pa.list_(pa.float32())),
        pa.field("ranks", pa.list_(pa.int16())),
        pa.field("propensities", pa.list_(pa.float32())),
        pa.field("user_features", pa.list_(pa.float32(), USER.width)),
        pa.field("user_feature_status", pa.uint8()),
        pa.field("item_features", _vector_list(ITEM.width)),
        pa.field("item_feature_status", pa.list_(pa.uint8())),
        pa.field("cross_features", _vector_list(len(USER_ITEM.columns))),
        pa.field("arm", columns.ARM),
        pa.field("stage_ms", columns.STAGE_MS),
    ],
    metadata={
        "registry_version": REGISTRY.version,
        "user_features": json.dumps(USER.columns),
        "item_features": json.dumps(ITEM.columns),
        "cross_features": json.dumps(USER_ITEM.columns),
        "feature_status": json.dumps(["present", "missing", "stale", "invalid", "unavailable"]),
    },
)


def partition_of(record: RecommendationLogRecord) -> tuple[tuple[str, str], ...]:
    return columns.partition(USE_CASE, record.decided_at_ms)


def to_batch(records: Sequence[RecommendationLogRecord]) -> pa.RecordBatch:
    """Columnar conversion of a batch: numpy concatenations, no per-value Python loops."""
    lengths = np.fromiter((len(r.item_ids) for r in records), np.int32, len(records))
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))

    def lists(values: np.ndarray) -> pa.Array:
        return pa.ListArray.from_arrays(offsets, pa.array(values))

    def vectors(parts: list[np.ndarray], width: int) -> pa.Array:
        flat = np.concatenate([p.reshape(-1) for p in parts]).astype(np.float32, copy=False)
        return pa.ListArray.from_arrays(offsets, pa.FixedSizeListArray.from_arrays(pa.array(flat), width))

    arrays = [
        pa.array([r.decision_id for r in records]),
        pa.array([r.request_id for r in records]),
        columns.timestamps([r.decided_at_ms for r in records]),
        pa.array([USE_CASE] * len(records)),
        pa.array([r.user_id for r in records]),
        columns.contexts(r.context for r in records),
        pa.array([r.model_version for r in records]),
        pa.array([REGISTRY.version] * len(records)),
        columns.degraded(r.degraded for r in records),
        lists(np.concatenate([r.item_ids for r in records]).astype(object)),
        lists(np.concatenate([r.sources for r in records]).astype(np.uint8)),
        lists(np.concatenate([r.retrieval_scores for r in records]).astype(np.float32)),
        lists(np.concatenate([r.scores for r in records]).astype(np.float32)),
        lists(np.concatenate([r.ranks for r in records]).astype(np.int16)),
        lists(np.concatenate([r.propensities for r in records]).astype(np.float32)),
        pa.FixedSizeListArray.from_arrays(
            pa.array(np.concatenate([r.user_features for r in records]).astype(np.float32)), USER.width
        ),
        pa.array(np.array([r.user_status for r in records], np.uint8)),
        vectors([r.item_features for r in records], ITEM.width),
        lists(np.concatenate([r.item_status for r in records]).astype(np.uint8)),
        vectors([r.cross_features for r in records], len(USER_ITEM.columns)),
        pa.array([r.arm for r in records]),
        columns.stage_ms(r.stage_ms for r in records),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)
