"""The LightGBM settings every offline trainer shares (ranker, retrain, fraud).

``LightGbmSettings`` is the one place the tree knobs are declared; each trainer's config
holds one (``cfg.lgbm``) with that trainer's defaults. ``threads`` and ``seed`` stay on the
configs: they also drive FAISS, prediction and sampling, and are passed to ``params``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from decision_service.features.definitions import REGISTRY


@dataclass(frozen=True)
class LightGbmSettings:
    """Tree and boosting knobs. Change one for a config with ``dataclasses.replace``."""

    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 40
    num_boost_round: int = 300
    early_stopping_rounds: int = 30
    feature_fraction: float = 0.9
    bagging_fraction: float = 0.8
    bagging_freq: int = 1

    def params(self, objective: str, *, threads: int, seed: int, **extra: Any) -> dict[str, Any]:
        """Deterministic, row-wise, lightly bagged GBDT parameters; ``extra`` adds or overrides."""
        return {
            "objective": objective,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": self.bagging_freq,
            "num_threads": threads,
            "seed": seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
            **extra,
        }


def categorical_columns(columns: Iterable[str]) -> list[str]:
    """The registry columns declared categorical, in the given order."""
    return [c for c in columns if REGISTRY.features_by_column[c].categorical]
