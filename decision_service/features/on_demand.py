"""On-demand (user x item) cross features: ONE implementation, used online and offline.

The project declares each USER_ITEM feature's computation (features/cross.py); this module
turns the declarations into one vectorised function at import. The serving hydrator calls
it with one user row broadcast over the candidates; the offline training-set job calls it
with row-aligned user and item matrices. Same code, so no skew.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from decision_service.features import cross
from decision_service.features.definitions import ITEM, USER, USER_ITEM

_Column = Callable[["_Batch"], np.ndarray]


class _Batch:
    """One call's inputs, with the embedding products and category ranks computed once."""

    def __init__(self, user: np.ndarray, user_emb: np.ndarray, items: np.ndarray, item_emb: np.ndarray):
        self.n = len(items)
        self.user = np.atleast_2d(user)
        self.user_emb = np.atleast_2d(user_emb)
        self.items = items
        self.item_emb = item_emb
        self._dot: np.ndarray | None = None
        self._affinity: dict[tuple[str, str], tuple[np.ndarray, ...]] = {}

    def dot(self) -> np.ndarray:
        if self._dot is None:
            self._dot = np.einsum(
                "ij,ij->i", self.item_emb, np.broadcast_to(self.user_emb, self.item_emb.shape)
            )
        return self._dot

    def user_column(self, slot: int) -> np.ndarray:
        return np.broadcast_to(self.user[:, slot], (self.n,))

    def affinity(self, shares: str, category: str) -> tuple[np.ndarray, ...]:
        """(known category, share, rank, user has history) per row."""
        key = (shares, category)
        if key not in self._affinity:
            size = USER.feature(shares).size
            lo = USER.columns.index(USER.feature(shares).column_names()[0])
            cat = self.items[:, ITEM.slot(category)].astype(np.int64)
            known = (cat >= 0) & (cat < size)
            safe = np.where(known, cat, 0)
            if len(self.user) == 1:  # serving: one user, so rank its categories once, then look up
                row = self.user[0, lo : lo + size]
                share = row[safe]
                rank = (row[None, :] > row[:, None]).sum(axis=1)[safe]
                history = np.full(self.n, row.sum() > 0)
            else:
                shares_m = self.user[:, lo : lo + size]
                share = np.take_along_axis(shares_m, safe[:, None], axis=1)[:, 0]
                rank = (shares_m > share[:, None]).sum(axis=1)
                history = shares_m.sum(axis=1) > 0  # no history: every category ties at rank 0
            self._affinity[key] = (known, share, rank, history)
        return self._affinity[key]


def _column(spec: object, default: float, name: str) -> _Column:
    """The function computing one declared cross feature; ValueError naming it if unusable."""
    try:
        if isinstance(spec, cross.EmbeddingDot):
            return lambda b: b.dot()
        if isinstance(spec, cross.EmbeddingCosine):
            return lambda b: (
                b.dot()
                / np.maximum(np.linalg.norm(b.item_emb, axis=1) * np.linalg.norm(b.user_emb, axis=1), 1e-6)
            )
        if isinstance(spec, cross.CategoryShare | cross.CategoryRank):
            USER.feature(spec.shares), ITEM.slot(spec.category)  # noqa: B018 -- names checked now
            if isinstance(spec, cross.CategoryShare):
                return lambda b: np.where(
                    b.affinity(spec.shares, spec.category)[0], b.affinity(spec.shares, spec.category)[1], 0.0
                )

            def rank(b: _Batch) -> np.ndarray:
                known, _, r, history = b.affinity(spec.shares, spec.category)
                return np.where(known & history, r, default)

            return rank
        if isinstance(spec, cross.RatioOf):
            i, u = ITEM.slot(spec.item), USER.slot(spec.user)
            return lambda b: b.items[:, i] / np.maximum(b.user_column(u), spec.floor)
        if isinstance(spec, cross.ZScoreOf):
            i, m, s = ITEM.slot(spec.item), USER.slot(spec.mean), USER.slot(spec.std)
            return lambda b: (b.items[:, i] - b.user_column(m)) / np.maximum(b.user_column(s), spec.floor)
        if isinstance(spec, cross.Python):
            return lambda b: np.asarray(spec.fn(b.user, b.user_emb, b.items, b.item_emb), np.float64)
    except KeyError as exc:
        raise ValueError(f"cross feature {name!r}: {exc.args[0]}") from None
    raise ValueError(f"cross feature {name!r}: compute must be one of features/cross.py, got {spec!r}")


def _plan() -> list[_Column]:
    plan = []
    for f in USER_ITEM.features:
        if f.size != 1:
            raise ValueError(f"cross feature {f.name!r}: vector cross features are not supported")
        plan.append(_column(f.compute, f.default, f.name))
    return plan


_PLAN = _plan()


def user_item_features(
    user: np.ndarray, user_emb: np.ndarray, items: np.ndarray, item_emb: np.ndarray
) -> np.ndarray:
    """Computes USER_ITEM columns for n (user, item) pairs.

    ``user`` is [user width] (broadcast) or [n, user width]; ``user_emb`` is [d] or [n, d];
    ``items`` is [n, item width]; ``item_emb`` is [n, d]. Returns float32 [n, len(USER_ITEM.columns)].
    """
    batch = _Batch(user, user_emb, items, item_emb)
    out = np.empty((batch.n, len(_PLAN)), dtype=np.float32)
    for j, column in enumerate(_PLAN):
        out[:, j] = column(batch)
    return out
