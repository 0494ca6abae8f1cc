"""Types of the declarative feature registry, and the fingerprints derived from it.

A feature group is stored in the online store as one packed float32 vector per entity, in
the declared feature order; a vector feature (``size > 1``) occupies ``size`` consecutive
slots. On-demand features are computed at request time (and identically offline) from
stored groups. The model's feature order is a list of registry names, checked on load.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from decision_service.features.cross import CrossCompute
from decision_service.features.declarative import Compute, GroupSource


@dataclass(frozen=True)
class Reason:
    """The stable, human-readable reason code a feature maps to when it drives a decision.

    ``low_code`` / ``low_text`` name the reason when the feature's value is *below* its
    training median (e.g. a very small amount, typical of card testing); empty = same as high.
    """

    code: str
    text: str
    low_code: str = ""
    low_text: str = ""

    def pick(self, low: bool) -> tuple[str, str]:
        """(code, text) for a value below (``low``) or at/above the median."""
        if low and self.low_code:
            return self.low_code, self.low_text or self.text
        return self.code, self.text


def reads_low(value: float, median: float, minimum: float = float("-inf")) -> bool:
    """Whether a reason should name ``value`` as low: below the training median, or AT the
    median when that is also the training minimum (an empty cart, no chargeback, a visit
    today: most rows sit at 0, and "high" would be wrong). ``minimum`` -inf: not recorded."""
    return value < median or (value == median and value <= minimum)


@dataclass(frozen=True)
class Feature:
    """One named feature. ``size > 1`` declares a fixed-length vector (e.g. per-category shares).

    ``reason`` is the reason code reported when this feature is a top contributor to a
    decision (fraud); it does not change the storage layout. ``compute`` declares how the
    value is computed from the group's source (features/declarative.py), or for a cross
    feature from the user and item rows (features/cross.py); None: computed by
    code of its own, e.g. embeddings or request-time features).
    """

    name: str
    description: str
    default: float = 0.0
    size: int = 1
    categorical: bool = False
    reason: Reason | None = None
    compute: Compute | CrossCompute | None = None

    def column_names(self) -> list[str]:
        """Names of the scalar columns this feature expands to, in storage order."""
        if self.size == 1:
            return [self.name]
        width = len(str(self.size - 1))
        return [f"{self.name}_{i:0{width}d}" for i in range(self.size)]


@dataclass(frozen=True)
class FeatureGroup:
    """Features of one entity kind, stored together as one packed vector per entity."""

    name: str
    entity: str
    features: tuple[Feature, ...]
    max_age_s: float
    description: str = ""
    source: GroupSource | None = None  # where declared ``compute``s read from

    @cached_property
    def columns(self) -> list[str]:
        return [col for f in self.features for col in f.column_names()]

    @cached_property
    def width(self) -> int:
        return len(self.columns)

    @cached_property
    def defaults(self) -> np.ndarray:
        return np.array([f.default for f in self.features for _ in range(f.size)], dtype=np.float32)

    @cached_property
    def fingerprint(self) -> str:
        """Short hash of the layout; part of the Redis key so a layout change never misparses."""
        layout = [(f.name, f.size, f.default) for f in self.features]
        return _short_hash([self.name, self.entity, layout])

    def slot(self, column: str) -> int:
        return self.columns.index(column)

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"feature group {self.name!r} has no feature {name!r}")


@dataclass(frozen=True)
class OnDemandGroup:
    """Features computed from stored groups at request time (and by offline jobs alike)."""

    name: str
    inputs: tuple[str, ...]
    features: tuple[Feature, ...]
    description: str = ""

    @cached_property
    def columns(self) -> list[str]:
        return [col for f in self.features for col in f.column_names()]

    @cached_property
    def defaults(self) -> np.ndarray:
        """Declared defaults per column (served in place of a non-finite computed value)."""
        return np.array([f.default for f in self.features for _ in range(f.size)], dtype=np.float32)


@dataclass(frozen=True)
class FeatureRegistry:
    """Every stored and on-demand feature group of the service."""

    groups: tuple[FeatureGroup, ...]
    on_demand: tuple[OnDemandGroup, ...] = field(default=())

    def group(self, name: str) -> FeatureGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(f"no feature group {name!r}")

    @cached_property
    def servable_columns(self) -> dict[str, str]:
        """Every column a model may use, mapped to the group that provides it."""
        out: dict[str, str] = {}
        for g in (*self.groups, *self.on_demand):
            for col in g.columns:
                if col in out:
                    raise ValueError(f"column {col!r} is declared by {out[col]!r} and {g.name!r}")
                out[col] = g.name
        return out

    @cached_property
    def version(self) -> str:
        """Content hash of every definition; recorded in model artifacts and logs."""
        stored = [(g.name, g.fingerprint, g.max_age_s) for g in self.groups]
        derived = [(g.name, g.inputs, g.columns) for g in self.on_demand]
        return _short_hash([stored, derived])

    @cached_property
    def features_by_column(self) -> dict[str, Feature]:
        """Every servable column mapped to the feature that declares it."""
        return {
            col: f for g in (*self.groups, *self.on_demand) for f in g.features for col in f.column_names()
        }

    def missing_columns(self, wanted: list[str]) -> list[str]:
        """Columns in ``wanted`` that this registry cannot serve, in order."""
        return [c for c in wanted if c not in self.servable_columns]


def _short_hash(obj: object) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:10]
