"""The recommendation pipeline, declared as the ordered stages of each kind."""

from __future__ import annotations

from dataclasses import dataclass

from decision_service.config import ServiceConfig
from decision_service.features.online_store import AsyncOnlineStore
from decision_service.stages.base import (
    CandidateSource,
    FeatureHydrator,
    Filter,
    Scorer,
    Selector,
    SideEffect,
    UserStateLoader,
)
from decision_service.stages.filters.category_allow_list import CategoryAllowList
from decision_service.stages.filters.out_of_stock import OutOfStock
from decision_service.stages.filters.previously_seen import PreviouslySeen
from decision_service.stages.filters.request_exclusions import RequestExclusions
from decision_service.stages.hydrators.candidate_features import CandidateFeatures
from decision_service.stages.hydrators.user_state import LoadUserState
from decision_service.stages.scorers.lightgbm_ranker import LightGbmRanker
from decision_service.stages.selectors.exploration import ReserveExplorationSlots
from decision_service.stages.selectors.top_k_category_cap import TopKWithCategoryCap
from decision_service.stages.sources.ann import AnnCandidates
from decision_service.stages.sources.popular import PopularCandidates


@dataclass(frozen=True)
class RecommendationPipeline:
    user_state: UserStateLoader
    sources: tuple[CandidateSource, ...]  # merged in this order; first source wins a tie
    filters: tuple[Filter, ...]  # before hydration, cheapest first
    hydrator: FeatureHydrator
    post_filters: tuple[Filter, ...]  # need hydrated features
    scorer: Scorer
    selector: Selector
    side_effects: tuple[SideEffect, ...] = ()  # after the answer is built; enqueue only
    retrieval_max_rounds: int = 3  # retrieval rounds (1 + refills) while filters leave < num_items


def recommendation_pipeline(
    config: ServiceConfig,
    store: AsyncOnlineStore,
    side_effects: tuple[SideEffect, ...] = (),
) -> RecommendationPipeline:
    return RecommendationPipeline(
        user_state=LoadUserState(store),
        sources=(
            AnnCandidates(config.ann_candidates, config.max_candidates_per_source),
            PopularCandidates(
                config.popular_candidates,
                config.popular_fallback_candidates,
                config.max_candidates_per_source,
            ),
        ),
        filters=(CategoryAllowList(), RequestExclusions(), PreviouslySeen()),
        hydrator=CandidateFeatures(store),
        post_filters=(OutOfStock(),),
        scorer=LightGbmRanker(),
        selector=ReserveExplorationSlots.wrap(
            TopKWithCategoryCap(config.max_items_per_category), config.exploration_share
        ),
        side_effects=side_effects,
        retrieval_max_rounds=config.retrieval_max_rounds,
    )
