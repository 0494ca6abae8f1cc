"""Feature values as served, with the status of every value."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class FeatureStatus(IntEnum):
    """Why a served value is what it is. Logged per entity and group with every decision."""

    PRESENT = 0
    MISSING = 1  # no value stored: the declared default was served
    STALE = 2  # older than the group's max age: the default was served
    INVALID = 3  # stored value has the wrong layout or a non-finite value: the default was served
    UNAVAILABLE = 4  # the store failed or ran out of time: the default was served


@dataclass(frozen=True)
class GroupValues:
    """Rows of one feature group for a batch of entities, defaults already filled in."""

    group: str
    values: np.ndarray  # float32 [n_entities, group width]
    status: np.ndarray  # uint8 [n_entities], FeatureStatus

    @property
    def n_present(self) -> int:
        return int(np.count_nonzero(self.status == FeatureStatus.PRESENT))


def usable_query_vector(vector: np.ndarray | None) -> bool:
    """True when ``vector`` can query a similarity index: every value finite, norm finite and > 0.

    A NaN makes FAISS return only ``-1`` ids, an inf poisons every score it touches, and a
    zero vector ties every item at 0: each would serve an arbitrary list as if personalised.
    """
    if vector is None or vector.size == 0:
        return False
    v = np.asarray(vector, dtype=np.float32)
    if not np.isfinite(v).all():
        return False
    with np.errstate(over="ignore"):
        squared = float(np.dot(v, v))  # float32, as the index computes: an overflow is inf
    return 0.0 < squared < float("inf")
