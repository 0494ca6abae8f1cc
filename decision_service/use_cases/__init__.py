"""The registered use cases. Adding one: its package here, and one entry in USE_CASES.

Everything that serves, logs, attributes or reloads (server/, models/reload.py, outcomes/
recorder.py) iterates over ``USE_CASES`` (see base.py for what a use case declares) and
names none of them. The checks below run at import: a declaration error stops the server
at start, naming what is wrong.
"""

from __future__ import annotations

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service.domain.outcomes import OutcomeType
from decision_service.use_cases.base import UseCase
from decision_service.use_cases.conversion import USE_CASE as CONVERSION
from decision_service.use_cases.fraud import USE_CASE as FRAUD
from decision_service.use_cases.recommendation import USE_CASE as RECOMMENDATION

USE_CASES: tuple[UseCase, ...] = (RECOMMENDATION, FRAUD, CONVERSION)

OUTCOME_TYPES: dict[str, OutcomeType] = {t.name: t for u in USE_CASES for t in u.outcome_types}
"""Every outcome type RecordOutcome accepts, by name (names are unique across use cases)."""


def _check() -> None:
    names = [u.name for u in USE_CASES]
    fields = [u.request_field for u in USE_CASES]
    types = [t.name for u in USE_CASES for t in u.outcome_types]
    for what, values in (("use case", names), ("request field", fields), ("outcome type", types)):
        repeated = {v for v in values if values.count(v) > 1}
        if repeated:
            raise ValueError(f"{what} declared twice: {sorted(repeated)}")
    oneof = {f.name for f in pb.GetDecisionRequest.DESCRIPTOR.oneofs_by_name["use_case"].fields}
    unknown = sorted(set(fields) - oneof)
    if unknown:
        raise ValueError(f"request field(s) {unknown} not in GetDecisionRequest.use_case {sorted(oneof)}")


_check()
