"""The conversion pipeline: its ordered stages, each with its failure policy declared here.

stage      on failure                                       flagged
profile    late / store down -> the USER group's declared   features:{deadline_exceeded |
           defaults (request-time features still score)     store_timeout | store_unavailable}
           missing / stale / invalid row -> defaults        user_context:unknown_user,
                                                            features:user_stale | user_invalid
features   raises -> the request fails (a bug, not an outage); a non-finite value in the
           row -> the column's declared default             features:row_invalid
scoring    raises -> no score: the base rate, action SKIP   scoring:model_error
policy     raises -> the request fails (never guess an action)
effects    the decision index write late / failed -> the answer stands, flagged
           (engine.StageBook.run_side_effects); the log never blocks
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from decision_service.engine import DEGRADE, FAIL, OnFailure, Step, declared_steps
from decision_service.features.store import FeatureReads
from decision_service.stages.conversion_base import Policy, ProfileLoader, RowBuilder, Scorer
from decision_service.stages.hydrators.conversion_features import ConversionFeatures
from decision_service.stages.hydrators.user_profile import UserProfile
from decision_service.stages.policies.threshold import Threshold, ThresholdConfig
from decision_service.stages.scorers.calibrated_lightgbm import CalibratedLightGbm

# Each stage's failure policy, by pipeline field (the table above).
ON_FAILURE: Mapping[str, OnFailure] = {
    "profile": OnFailure(DEGRADE, "features", "the USER group's declared defaults"),
    "features": OnFailure(FAIL),
    "scorer": OnFailure(DEGRADE, "scoring", "the base rate, action SKIP"),
    "policy": OnFailure(FAIL),
}
STAGES = ("profile", "features", "scorer", "policy")  # in order


@dataclass(frozen=True)
class ConversionPipeline:
    profile: ProfileLoader  # one MGET of the USER row
    features: RowBuilder  # request-time features + profile -> inputs and the model row
    scorer: Scorer  # calibrated probability + contributions
    policy: Policy  # threshold -> action, top reasons
    on_failure: Mapping[str, OnFailure] = field(default_factory=lambda: ON_FAILURE, repr=False)
    # field -> its stage with the declared policy, built (and checked) with the pipeline
    steps: Mapping[str, Step] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        stages: dict[str, Any] = {name: getattr(self, name) for name in STAGES}
        object.__setattr__(self, "steps", declared_steps(stages, self.on_failure))


def conversion_pipeline(store: FeatureReads, threshold: ThresholdConfig) -> ConversionPipeline:
    return ConversionPipeline(
        profile=UserProfile(store),
        features=ConversionFeatures(),
        scorer=CalibratedLightGbm(),
        policy=Threshold(threshold),
    )
