"""The conversion decision log: one row per score, with the exact model input row.

Rows land under ``decisions/use_case=conversion/date=/hour=``. The model's input columns
travel with each row (``feature_names``, dictionary-encoded by Parquet, almost free) because
a file may span a hot reload; ``features`` holds EVERY conversion input exactly as served
(features.conversion.INPUT_COLUMNS: the USER profile's scalar columns and the request-time
features; the model scored a projection of them), so a later model may use any of them;
null when it was never built. The training set (offline/loop/training_set.build_labelled_rows) reads these
columns and never recomputes a feature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from decision_service.decision_log import columns
from decision_service.domain.conversion import ConversionDecision, ConversionRequest
from decision_service.features.definitions import REGISTRY

USE_CASE = "conversion"


@dataclass(frozen=True, slots=True)
class ConversionLogRecord:
    decision: ConversionDecision
    request: ConversionRequest
    feature_names: tuple[str, ...]
    features: np.ndarray | None  # float32 [len(feature_names)]: every input as served; None if never built
    margin: float | None  # the model's raw log-odds; None when it could not score
    profile_status: int  # FeatureStatus of the USER row


SCHEMA = pa.schema(
    [
        pa.field("decision_id", pa.string(), nullable=False),
        pa.field("request_id", pa.string()),
        pa.field("decided_at", columns.TIMESTAMP, nullable=False),
        pa.field("use_case", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("context", columns.CONTEXT),
        pa.field("cart_items", pa.int32()),
        pa.field("cart_value", pa.float64()),
        pa.field("session_page_views", pa.int32()),
        pa.field("session_seconds", pa.float64()),
        pa.field("model_version", pa.string()),
        pa.field("registry_version", pa.string()),
        pa.field("degraded", columns.DEGRADED),
        pa.field("probability", pa.float32()),
        pa.field("margin", pa.float32()),
        pa.field("base_rate", pa.float32()),
        pa.field("scored", pa.bool_()),
        pa.field("action", pa.string()),
        pa.field("threshold", pa.float32()),
        pa.field("reasons", pa.list_(columns.REASON)),
        pa.field("feature_names", pa.list_(pa.dictionary(pa.int16(), pa.string()))),
        pa.field("features", pa.list_(pa.float32())),
        pa.field("profile_status", pa.uint8()),
        pa.field("arm", columns.ARM),
        pa.field("stage_ms", columns.STAGE_MS),
    ],
    metadata={
        "registry_version": REGISTRY.version,
        "profile_status": "user profile: present, missing, stale, invalid, unavailable",
    },
)


def partition_of(record: ConversionLogRecord) -> tuple[tuple[str, str], ...]:
    return columns.partition(USE_CASE, record.decision.decided_at_ms)


def to_batch(records: Sequence[ConversionLogRecord]) -> pa.RecordBatch:
    d = [r.decision for r in records]
    q = [r.request for r in records]
    return pa.RecordBatch.from_arrays(
        [
            pa.array([x.decision_id for x in d]),
            pa.array([x.request_id for x in d]),
            columns.timestamps([x.decided_at_ms for x in d]),
            pa.array([USE_CASE] * len(records)),
            pa.array([x.user_id for x in q]),
            columns.contexts(x.context for x in q),
            pa.array([x.cart_items for x in q], pa.int32()),
            pa.array([x.cart_value for x in q], pa.float64()),
            pa.array([x.session_page_views for x in q], pa.int32()),
            pa.array([x.session_seconds for x in q], pa.float64()),
            pa.array([x.model_version for x in d]),
            pa.array([REGISTRY.version] * len(records)),
            columns.degraded(x.degraded for x in d),
            pa.array([x.probability for x in d], pa.float32()),
            pa.array([r.margin for r in records], pa.float32()),
            pa.array([x.base_rate for x in d], pa.float32()),
            pa.array([x.scored for x in d], pa.bool_()),
            pa.array([x.action.name for x in d]),
            pa.array([x.threshold for x in d], pa.float32()),
            columns.reasons(x.reasons for x in d),
            pa.array([list(r.feature_names) for r in records], SCHEMA.field("feature_names").type),
            pa.array(
                [None if r.features is None else r.features.astype(np.float32) for r in records],
                pa.list_(pa.float32()),
            ),
            pa.array([r.profile_status for r in records], pa.uint8()),
            pa.array([x.arm for x in d]),
            columns.stage_ms(x.stage_ms for x in d),
        ],
        schema=SCHEMA,
    )
