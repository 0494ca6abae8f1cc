"""Declarations of on-demand (user x candidate item) cross features.

A project's USER_ITEM on-demand group (features.py) gives each feature a ``compute=`` from
this module; features/on_demand.py turns the declarations into ONE vectorised function that
the serving hydrator and the offline training-set job both call, so there is no skew.

  EmbeddingDot, EmbeddingCosine   the user and item embeddings' dot product / cosine
  CategoryShare, CategoryRank     the user's (vector) share of the item's category, and that
                                  category's rank among the user's (0 = top)
  RatioOf, ZScoreOf               an item value relative to a user value (price / the user's
                                  mean price; (price - mean) / std)
  Python                          any registered function of (user, user_emb, items, item_emb)

Names refer to features of the user group (``user``/``shares``/``mean``/``std``) and of the
item group (``item``/``category``). Nothing here reads data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EmbeddingDot:
    """Dot product of the user and item embeddings."""


@dataclass(frozen=True)
class EmbeddingCosine:
    """Cosine similarity of the user and item embeddings (norms floored at 1e-6)."""


@dataclass(frozen=True)
class CategoryShare:
    """The user's share (``shares``, a vector feature of the user group indexed by category)
    of the item's ``category`` (a categorical item feature); 0 for an unknown category."""

    shares: str
    category: str


@dataclass(frozen=True)
class CategoryRank:
    """Rank of the item's category among the user's ``shares`` (0 = the user's top); the
    feature's default for an unknown category or a user without history."""

    shares: str
    category: str


@dataclass(frozen=True)
class RatioOf:
    """item value / max(user value, ``floor``)."""

    item: str
    user: str
    floor: float = 1e-3


@dataclass(frozen=True)
class ZScoreOf:
    """(item value - user ``mean``) / max(user ``std``, ``floor``)."""

    item: str
    mean: str
    std: str
    floor: float = 1.0


CrossFunction = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Python:
    """A registered function ``fn(user, user_emb, items, item_emb) -> float [n]``: ``user``
    is [1 or n, user width], ``user_emb`` [1 or n, d], ``items`` [n, item width], ``item_emb``
    [n, d] (rows broadcast when 1). The same function runs online and offline."""

    fn: CrossFunction


CrossCompute = EmbeddingDot | EmbeddingCosine | CategoryShare | CategoryRank | RatioOf | ZScoreOf | Python
