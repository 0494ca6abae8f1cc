"""The fraud decision log: one row per fraud verdict, with the exact model input row.

Rows land in the same ``decisions`` log as recommendations, under ``use_case=fraud``. The
model's input columns travel with each row (``feature_names``, dictionary-encoded by
Parquet so they cost almost nothing) because a file may span a model hot reload.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from decision_service.decision_log import columns
from decision_service.domain.fraud import FraudDecision, Transaction
from decision_service.features.definitions import REGISTRY

USE_CASE = "fraud"


@dataclass(frozen=True, slots=True)
class FraudLogRecord:
    decision: FraudDecision
    transaction: Transaction
    feature_names: tuple[str, ...]
    features: np.ndarray | None        # float32 [n features], model order; None if never built
    profile_status: tuple[int, int, int]  # FeatureStatus of user, merchant, device profiles


_RULE = pa.struct([("code", pa.string()), ("description", pa.string())])

SCHEMA = pa.schema(
    [
        pa.field("decision_id", pa.string(), nullable=False),
        pa.field("request_id", pa.string()),
        pa.field("decided_at", columns.TIMESTAMP, nullable=False),
        pa.field("use_case", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("transaction_id", pa.string()),
        pa.field("amount_minor", pa.int64()),
        pa.field("currency", pa.string()),
        pa.field("amount_eur", pa.float64()),
        pa.field("merchant_id", pa.string()),
        pa.field("merchant_category", pa.string()),
        pa.field("country", pa.string()),
        pa.field("device_id", pa.string()),
        pa.field("ip_address", pa.string()),
        pa.field("channel", pa.int32()),
        pa.field("occurred_at", pa.timestamp("ms", tz="UTC")),
        pa.field("payment_instrument_id", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("registry_version", pa.string()),
        pa.field("degraded", columns.DEGRADED),
        pa.field("action", pa.string()),
        pa.field("risk_score", pa.int16()),
        pa.field("fraud_probability", pa.float32()),
        pa.field("fired_rules", pa.list_(_RULE)),
        pa.field("reasons", pa.list_(columns.REASON)),
        pa.field("feature_names", pa.list_(pa.dictionary(pa.int16(), pa.string()))),
        pa.field("features", pa.list_(pa.float32())),
        pa.field("profile_status", pa.list_(pa.uint8(), 3)),
        pa.field("arm", columns.ARM),
        pa.field("stage_ms", columns.STAGE_MS),
    ],
    metadata={
        "registry_version": REGISTRY.version,
        "profile_status": "user, merchant, device: present, missing, stale, invalid, unavailable",
    },
)


def partition_of(record: FraudLogRecord) -> tuple[tuple[str, str], ...]:
    return columns.partition(USE_CASE, record.decision.decided_at_ms)


def to_batch(records: Sequence[FraudLogRecord]) -> pa.RecordBatch:
    def ts(values: list[int]) -> pa.Array:
        return pa.array(values, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))

    d = [r.decision for r in records]
    t = [r.transaction for r in records]
    return pa.RecordBatch.from_arrays(
        [
            pa.array([x.decision_id for x in d]),
            pa.array([x.request_id for x in d]),
            columns.timestamps([x.decided_at_ms for x in d]),
            pa.array([USE_CASE] * len(records)),
            pa.array([x.user_id for x in t]),
            pa.array([x.transaction_id for x in t]),
            pa.array([x.amount_minor for x in t], pa.int64()),
            pa.array([x.currency for x in t]),
            pa.array([x.amount_eur for x in t], pa.float64()),
            pa.array([x.merchant_id for x in t]),
            pa.array([x.merchant_category for x in t]),
            pa.array([x.country for x in t]),
            pa.array([x.device_id for x in t]),
            pa.array([x.ip_address for x in t]),
            pa.array([x.channel for x in t], pa.int32()),
            ts([x.occurred_at_ms for x in t]),
            pa.array([x.payment_instrument_id for x in t]),
            pa.array([x.model_version for x in d]),
            pa.array([REGISTRY.version] * len(records)),
            columns.degraded(x.degraded for x in d),
            pa.array([x.action.name for x in d]),
            pa.array([x.risk_score for x in d], pa.int16()),
            pa.array([x.fraud_probability for x in d], pa.float32()),
            pa.array([[{"code": f.code, "description": f.description} for f in x.fired_rules] for x in d],
                     pa.list_(_RULE)),
            columns.reasons(x.reasons for x in d),
            pa.array([list(r.feature_names) for r in records], SCHEMA.field("feature_names").type),
            pa.array(
                [None if r.features is None else r.features.astype(np.float32) for r in records],
                pa.list_(pa.float32()),
            ),
            pa.array([list(r.profile_status) for r in records], pa.list_(pa.uint8(), 3)),
            pa.array([x.arm for x in d]),
            columns.stage_ms(x.stage_ms for x in d),
        ],
        schema=SCHEMA,
    )
