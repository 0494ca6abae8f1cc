"""The recommendation pipeline: the ordered stages of each kind, each with its failure policy
declared here (``ON_FAILURE``, read by the executor through ``RecommendationPipeline.steps``).

field         on failure                                      flagged
user_state    late / store down -> an unknown user:           user_context:{deadline_exceeded |
              popular candidates                              store_timeout | store_unavailable}
sources       raises -> that source is skipped, the others    candidates:{source}_failed
              serve (each source)
filters       per filter:                                     filters:{filter}_failed
                category_allow_list  raises -> the request fails (the caller restricted it)
                request_exclusions   raises -> the request fails (the caller relies on it)
                previously_seen      raises -> skipped (a seen item may be shown again)
hydrator      late / store down -> the declared defaults      features:{deadline_exceeded |
              (status UNAVAILABLE)                            store_timeout | store_unavailable}
post_filters  per filter: out_of_stock raises -> skipped      filters:out_of_stock_failed
scorer        raises, or a wrong / non-finite score ->        scoring:model_error
              retrieval order
selector      raises -> the request fails

Not failure policy but flow, so in the executor: what a stage served rather than how it
failed (an unknown user ``user_context:unknown_user``, an invalid embedding, INVALID / missing
/ non-finite feature values ``features:...``), refill rounds when the filters left fewer than
num_items candidates, scoring without any feature (``scoring:features_unavailable``: retrieval
order) and a short list (``selection:short_list``). Side effects:
``engine.StageBook.run_side_effects``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from decision_service.config import ServiceConfig
from decision_service.engine import DEGRADE, FAIL, OnFailure, declared_steps
from decision_service.features.store import FeatureReads
from decision_service.stages.base import (
    CandidateSource,
    FeatureHydrator,
    Filter,
    Scorer,
    Selector,
    SideEffect,
    UserStateLoader,
)
from decision_service.stages.filters import out_of_stock
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

# Each stage's failure policy, by pipeline field (the table above); filters: by filter name.
ON_FAILURE: Mapping[str, OnFailure | Mapping[str, OnFailure]] = {
    "user_state": OnFailure(DEGRADE, "user_context", "an unknown user: popular candidates"),
    "sources": OnFailure(DEGRADE, "candidates", "the source is skipped, the others serve"),
    "filters": {
        "category_allow_list": OnFailure(FAIL),
        "request_exclusions": OnFailure(FAIL),
        "previously_seen": OnFailure(DEGRADE, "filters", "skipped: a seen item may be shown again"),
    },
    "hydrator": OnFailure(DEGRADE, "features", "the declared defaults (status UNAVAILABLE)"),
    "post_filters": {
        "out_of_stock": OnFailure(DEGRADE, "filters", "skipped"),
    },
    "scorer": OnFailure(DEGRADE, "scoring", "the retrieval order"),
    "selector": OnFailure(FAIL),
}
STAGES = ("user_state", "sources", "filters", "hydrator", "post_filters", "scorer", "selector")


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
    on_failure: Mapping[str, OnFailure | Mapping[str, OnFailure]] = field(
        default_factory=lambda: ON_FAILURE, repr=False
    )
    # field -> its stage (tuple fields: each stage) with the declared policy, built (and
    # checked) with the pipeline: ``engine.Step`` or a tuple of them
    steps: Mapping[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        stages: dict[str, Any] = {name: getattr(self, name) for name in STAGES}
        object.__setattr__(self, "steps", declared_steps(stages, self.on_failure))


def recommendation_pipeline(
    config: ServiceConfig,
    store: FeatureReads,
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
        post_filters=(OutOfStock(),) if out_of_stock.applies() else (),
        scorer=LightGbmRanker(),
        selector=ReserveExplorationSlots.wrap(
            TopKWithCategoryCap(config.max_items_per_category), config.exploration_share
        ),
        side_effects=side_effects,
        retrieval_max_rounds=config.retrieval_max_rounds,
    )
