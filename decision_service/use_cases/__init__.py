"""The registered use cases. Adding one: its package here, and one entry in AVAILABLE.

``USE_CASES`` holds the ones the active project serves (project.yaml ``use_cases``): only
their packages are imported, so a project declares only the feature groups they read.

Everything that serves, logs, attributes or reloads (server/, models/reload.py, outcomes/
recorder.py) iterates over ``USE_CASES`` (see base.py for what a use case declares) and
names none of them. The checks below run at import: a declaration error stops the server
at start, naming what is wrong.
"""

from __future__ import annotations

import importlib

from decision_service import project
from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service.domain.outcomes import OutcomeType
from decision_service.use_cases.base import UseCase

AVAILABLE: dict[str, str] = {
    "recommendation": "decision_service.use_cases.recommendation",
    "fraud": "decision_service.use_cases.fraud",
    "conversion": "decision_service.use_cases.conversion",
}
"""Every use case this package implements: name -> its package (exporting USE_CASE)."""


def _served() -> tuple[UseCase, ...]:
    unknown = sorted(set(project.active().use_cases) - set(AVAILABLE))
    if unknown:
        known = sorted(AVAILABLE)
        raise project.ProjectError(f"project use_cases {unknown}: not implemented; known: {known}")
    served = [name for name in AVAILABLE if project.active().serves(name)]
    return tuple(importlib.import_module(AVAILABLE[name]).USE_CASE for name in served)


USE_CASES: tuple[UseCase, ...] = _served()
"""The use cases the active project serves, in AVAILABLE's order."""

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
