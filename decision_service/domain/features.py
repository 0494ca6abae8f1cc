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
    INVALID = 3  # stored value has the wrong layout: the default was served
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
