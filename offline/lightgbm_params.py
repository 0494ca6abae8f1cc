"""The LightGBM settings every offline trainer shares (ranker, retrain, fraud)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from decision_service.features.definitions import REGISTRY


class TreeKnobs(Protocol):
    learning_rate: float
    num_leaves: int
    min_data_in_leaf: int
    threads: int
    seed: int


def tree_params(objective: str, knobs: TreeKnobs, **extra: Any) -> dict[str, Any]:
    """Deterministic, row-wise, lightly bagged GBDT parameters; ``extra`` adds or overrides."""
    return {
        "objective": objective,
        "learning_rate": knobs.learning_rate,
        "num_leaves": knobs.num_leaves,
        "min_data_in_leaf": knobs.min_data_in_leaf,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "num_threads": knobs.threads,
        "seed": knobs.seed,
        "deterministic": True,
        "force_row_wise": True,
        "verbosity": -1,
        **extra,
    }


def categorical_columns(columns: Iterable[str]) -> list[str]:
    """The registry columns declared categorical, in the given order."""
    return [c for c in columns if REGISTRY.features_by_column[c].categorical]
