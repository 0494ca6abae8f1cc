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

from dataclasses import dataclass

from decision_service.engine import DEGRADE, FAIL, Step
from decision_service.features.online_store import AsyncOnlineStore
from decision_service.stages.conversion_base import Policy, ProfileLoader, RowBuilder, Scorer
from decision_service.stages.hydrators.conversion_features import ConversionFeatures
from decision_service.stages.hydrators.user_profile import UserProfile
from decision_service.stages.policies.threshold import Threshold, ThresholdConfig
from decision_service.stages.scorers.calibrated_lightgbm import CalibratedLightGbm


@dataclass(frozen=True)
class ConversionPipeline:
    profile: Step  # ProfileLoader: one MGET of the USER row
    features: Step  # RowBuilder: request-time features + profile -> model row
    scorer: Step  # Scorer: calibrated probability + contributions
    policy: Step  # Policy: threshold -> action, top reasons


def conversion_pipeline(store: AsyncOnlineStore, threshold: ThresholdConfig) -> ConversionPipeline:
    profile: ProfileLoader = UserProfile(store)
    features: RowBuilder = ConversionFeatures()
    scorer: Scorer = CalibratedLightGbm()
    policy: Policy = Threshold(threshold)
    return ConversionPipeline(
        profile=Step(profile, DEGRADE, "features", "the USER group's declared defaults"),
        features=Step(features, FAIL),
        scorer=Step(scorer, DEGRADE, "scoring", "the base rate, action SKIP"),
        policy=Step(policy, FAIL),
    )
