"""Recommendation requests, candidates and decisions (pure data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from decision_service.domain.decision import Decision, RequestContext  # noqa: F401 - re-exported


@dataclass(frozen=True)
class RecommendationRequest:
    request_id: str
    user_id: str
    num_items: int
    exclude_item_ids: frozenset[str] = frozenset()
    allowed_categories: frozenset[int] = frozenset()  # category indices; empty = all
    context: RequestContext = RequestContext()


class CandidateSource(IntEnum):
    """Values match decision.v1.CandidateSource."""

    ANN = 1
    POPULAR = 2
    EXPLORATION = 3


@dataclass
class Candidates:
    """A columnar batch of candidate items (catalog rows), kept in retrieval order.

    Columnar because a request carries hundreds of candidates: numpy columns cost
    microseconds where per-candidate objects cost a millisecond.
    """

    rows: np.ndarray  # int64 catalog rows
    sources: np.ndarray  # uint8 CandidateSource
    retrieval_scores: np.ndarray  # float32, higher = better within a source

    @classmethod
    def empty(cls) -> Candidates:
        return cls(np.empty(0, np.int64), np.empty(0, np.uint8), np.empty(0, np.float32))

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, keep: np.ndarray) -> Candidates:
        """The candidates at a boolean mask or index array, order preserved."""
        return Candidates(self.rows[keep], self.sources[keep], self.retrieval_scores[keep])

    @classmethod
    def merge(cls, batches: list[Candidates]) -> Candidates:
        """Concatenates sources in priority order; a row already present keeps its first source."""
        batches = [b for b in batches if len(b)]
        if not batches:
            return cls.empty()
        rows = np.concatenate([b.rows for b in batches])
        _, first = np.unique(rows, return_index=True)
        keep = np.sort(first)
        return cls(
            rows[keep],
            np.concatenate([b.sources for b in batches])[keep],
            np.concatenate([b.retrieval_scores for b in batches])[keep],
        )


@dataclass(frozen=True)
class RankedItem:
    item_id: str
    score: float
    rank: int
    source: CandidateSource
    category: str
    propensity: float = 1.0


@dataclass
class RecommendationDecision(Decision):
    items: list[RankedItem] = field(kw_only=True)
