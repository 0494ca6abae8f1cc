"""A model version's feature profile: the training distribution of every model input and of
the model's scores, stored IN the version (``feature_profile.json``) so drift can be measured
against exactly what that version learned from (offline/watch/drift.py).

Written by every publish site into the staging directory before ``ModelRegistry.publish``, so
the manifest's sizes and checksums cover it. Old versions have none (``load`` -> None).

Per model input column (named as the decision log names it):

* ``edges``: interior cut points, ascending: the training values' quantiles at 1/bins ..
  (bins-1)/bins, taken as observed values (``method="lower"``) and deduplicated, so a
  discrete feature gets one bin per value it takes (up to ``bins``). Bin ``i`` holds
  ``edges[i-1] < x <= edges[i]``; the first and last bins are open (``x <= edges[0]``,
  ``x > edges[-1]``): ``len(edges) + 1`` value bins.
* ``proportions``: the share of ALL profiled rows in each value bin; ``missing``: the share
  of non-finite values (NaN, +-inf), the extra bin. ``sum(proportions) + missing == 1``.
* ``default`` / ``default_share``: the column's declared default and the share of rows at it
  or missing (None when no default is known).
* ``rows``: rows profiled (a seeded sample of at most ``max_rows``), ``mean``: over finite ones.

``score``: the same histogram of the model's score on its training / validation rows, on the
scale the service logs (recommendation ``scores``, fraud ``fraud_probability``, conversion's
calibrated ``probability``); None when the publish site had none.

Precision: the logs store model inputs and scores as float32 (``LOG_DTYPE``), while a model's
outputs and a training matrix may be float64. Every value is cast to float32 before it is
binned -- training values (so quantile edges are float32 values and the shares are those of
the values as the log would hold them) and served values alike, and the edges themselves
(profiles written before this rule have float64 edges): otherwise a training value sitting on
an edge is logged rounded up, past it, into the next bin (a false "major" drift).

JSON (``FORMAT`` 1)::

    {"format": 1, "bins": 10, "rows": 100000, "source_rows": 812345,
     "features": {"u_events_7d": {"edges": [0.0, 1.0, 3.0], "proportions": [0.41, 0.2, 0.19, 0.2],
                                  "missing": 0.0, "rows": 100000, "mean": 2.7,
                                  "default": 0.0, "default_share": 0.41}, ...},
     "score": {"edges": [...], "proportions": [...], "missing": 0.0, "rows": 100000, "mean": 0.08}}
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from decision_service.models.registry import ModelVersion, RegistryError
from decision_service.models.version_store import sha256

PROFILE_FILE = "feature_profile.json"
LOG_DTYPE = np.float32
"""The precision the decision logs store features and scores at: binning happens at it."""
SHARE_TOLERANCE = 1e-6
"""How far ``sum(proportions) + missing`` may be from 1 in a stored profile."""
FORMAT = 1
DEFAULT_BINS = 10
MAX_ROWS = 100_000
"""Rows profiled at most (a seeded sample): keeps publishing fast; 10 bins need far fewer."""


@dataclass(frozen=True)
class Histogram:
    """A training distribution over quantile bins (see the module docstring for the bins)."""

    edges: tuple[float, ...]  # interior cut points, ascending, finite
    proportions: tuple[float, ...]  # len(edges) + 1 shares of all rows
    missing: float  # share of non-finite values
    rows: int
    mean: float | None = None  # over finite values; None when there are none
    default: float | None = None
    default_share: float | None = None  # share at the default or missing

    @property
    def shares(self) -> np.ndarray:
        """float64 [len(edges) + 2]: the value bins' shares, then the missing bin's."""
        return np.asarray([*self.proportions, self.missing], np.float64)

    def shares_of(self, values: np.ndarray) -> np.ndarray:
        """float64 [len(edges) + 2]: ``values`` binned like ``shares`` (zeros when empty)."""
        return bin_shares(values, self.edges)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "edges": list(self.edges),
            "proportions": list(self.proportions),
            "missing": self.missing,
            "rows": self.rows,
            "mean": self.mean,
        }
        if self.default is not None:
            out["default"] = self.default
            out["default_share"] = self.default_share
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Histogram:
        """Every field validated: edges finite and strictly ascending; ``len(edges) + 1``
        proportions; proportions, missing and default_share finite and in [0, 1]; shares
        summing to 1 (within ``SHARE_TOLERANCE``); rows an integer >= 0; mean and default
        finite or absent. On failure: ValueError naming what is malformed."""
        edges = tuple(float(e) for e in data["edges"])
        proportions = tuple(float(p) for p in data["proportions"])
        if len(proportions) != len(edges) + 1:
            raise ValueError(f"{len(proportions)} proportions for {len(edges)} edges (need edges + 1)")
        if any(b <= a for a, b in zip(edges, edges[1:], strict=False)) or not all(map(math.isfinite, edges)):
            raise ValueError("edges must be finite and strictly ascending")
        missing = float(data["missing"])
        for what, x in [*(("proportion", p) for p in proportions), ("missing", missing)]:
            if not (math.isfinite(x) and 0.0 <= x <= 1.0):
                raise ValueError(f"{what} {x!r} is not a share (finite, in [0, 1])")
        rows = data["rows"]
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
            raise ValueError(f"rows {rows!r} is not an integer >= 0")
        total = sum(proportions) + missing
        if abs(total - (1.0 if rows else 0.0)) > SHARE_TOLERANCE:  # no row profiled: all zeros
            raise ValueError(f"proportions + missing sum to {total!r}, not {1 if rows else 0} ({rows} rows)")
        out: list[float | None] = []
        for key in ("mean", "default", "default_share"):
            x = data.get(key)
            if x is not None:
                x = float(x)
                if not math.isfinite(x) or (key == "default_share" and not 0.0 <= x <= 1.0):
                    raise ValueError(f"{key} {x!r} is not finite" + (" in [0, 1]" if "share" in key else ""))
            out.append(x)
        return cls(edges, proportions, missing, rows, *out)


@dataclass(frozen=True)
class FeatureProfile:
    """What a version was trained on: a histogram per model input column and of its scores."""

    features: dict[str, Histogram]
    score: Histogram | None = None
    rows: int = 0  # rows profiled
    source_rows: int = 0  # rows the training matrix had (before sampling)
    bins: int = DEFAULT_BINS
    extra: dict[str, Any] = field(default_factory=dict)  # free notes, e.g. which rows were profiled

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "bins": self.bins,
            "rows": self.rows,
            "source_rows": self.source_rows,
            "features": {name: h.to_json() for name, h in self.features.items()},
            "score": None if self.score is None else self.score.to_json(),
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FeatureProfile:
        """On failure: ValueError for an unknown format or a malformed histogram (named)."""
        if data.get("format") != FORMAT:
            raise ValueError(f"feature profile format {data.get('format')!r}, this code reads {FORMAT}")
        features: dict[str, Histogram] = {}
        for name, h in data["features"].items():
            try:
                features[name] = Histogram.from_json(h)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"feature {name!r}: {exc}") from None
        score = data.get("score")
        try:
            score_h = None if score is None else Histogram.from_json(score)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"score: {exc}") from None
        counts = {k: data.get(k, d) for k, d in (("rows", 0), ("source_rows", 0), ("bins", DEFAULT_BINS))}
        for key, x in counts.items():
            if isinstance(x, bool) or not isinstance(x, int) or x < 0:
                raise ValueError(f"{key} {x!r} is not an integer >= 0")
        extra = dict(data.get("extra") or {})
        return cls(features, score_h, counts["rows"], counts["source_rows"], counts["bins"], extra)


def quantile_edges(values: np.ndarray, bins: int = DEFAULT_BINS) -> tuple[float, ...]:
    """Interior cut points of ``bins`` quantile bins of the finite ``values``: observed values,
    deduplicated (() for no finite value or one bin). A top edge at the training maximum is
    kept: values above everything trained on then fall in a bin that was empty.
    On failure: ValueError for ``bins`` < 1."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    v = _as_logged(values)
    v = v[np.isfinite(v)]
    if len(v) == 0 or bins == 1:
        return ()
    edges = np.unique(np.quantile(v, np.arange(1, bins) / bins, method="lower"))
    return tuple(float(e) for e in edges)


def _as_logged(values: np.ndarray | Sequence[float]) -> np.ndarray:
    """float64 [n] holding ``values`` at the log's precision (cast to ``LOG_DTYPE`` and back:
    exact, so comparisons and quantiles see what the log would hold)."""
    with np.errstate(over="ignore"):  # beyond float32: inf, i.e. missing, as in the log
        return np.asarray(values, np.float64).reshape(-1).astype(LOG_DTYPE).astype(np.float64)


def bin_index(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """int [n]: the value bin of each (finite) value, both sides at the log's precision (see
    the module docstring): the one binning rule of profiles, drift and score histograms."""
    return np.searchsorted(_as_logged(edges), _as_logged(values), side="left")


def bin_shares(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """float64 [len(edges) + 2]: shares of ``values`` per value bin (right-closed, see the
    module docstring), then the share of non-finite values. All zeros for no values."""
    v = _as_logged(values)
    out = np.zeros(len(edges) + 2, np.float64)
    if len(v) == 0:
        return out
    finite = np.isfinite(v)
    idx = bin_index(v[finite], edges)
    out[: len(edges) + 1] = np.bincount(idx, minlength=len(edges) + 1)
    out[-1] = len(v) - int(finite.sum())
    return out / len(v)


def histogram(values: np.ndarray, bins: int = DEFAULT_BINS, default: float | None = None) -> Histogram:
    """The training histogram of one column (quantile edges from ``values`` themselves), all at
    the log's precision (module docstring)."""
    v = _as_logged(values)
    edges = quantile_edges(v, bins)
    shares = bin_shares(v, edges)
    finite = v[np.isfinite(v)]
    default_share = None
    if default is not None:
        default_share = float(np.mean(at_default(v, default) | ~np.isfinite(v))) if len(v) else 0.0
    return Histogram(
        edges,
        tuple(float(s) for s in shares[:-1]),
        float(shares[-1]),
        int(len(v)),
        float(finite.mean()) if len(finite) else None,
        None if default is None else float(default),
        default_share,
    )


def at_default(values: np.ndarray, default: float) -> np.ndarray:
    """bool [n]: ``values`` equal to ``default``, both at the log's precision."""
    return _as_logged(values) == _as_logged([default])[0]


def sample_rows(n: int, max_rows: int = MAX_ROWS, seed: int = 0) -> np.ndarray:
    """int64 row indexes, ascending: all ``n`` rows, or a seeded sample of ``max_rows``."""
    if n <= max_rows:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False)).astype(np.int64)


def registry_defaults(columns: Sequence[str]) -> dict[str, float]:
    """The declared default of every column the feature registry knows (others left out)."""
    from decision_service.features.definitions import REGISTRY

    known = REGISTRY.features_by_column
    return {c: float(known[c].default) for c in columns if c in known}


def build_profile(
    matrix: np.ndarray,
    columns: Sequence[str],
    scores: np.ndarray | None = None,
    *,
    defaults: Mapping[str, float] | None = None,
    bins: int = DEFAULT_BINS,
    max_rows: int = MAX_ROWS,
    seed: int = 0,
    source_rows: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> FeatureProfile:
    """The profile of a training matrix: float [rows, len(columns)] in ``columns`` order, and
    optionally ``scores`` float [rows] (the model's output on those rows, as served).

    Rows beyond ``max_rows`` are sampled (seeded). ``defaults``: column -> declared default
    (default: the feature registry's, for the columns it declares). ``source_rows``: the
    training rows the matrix was sampled from, if the caller sampled already (default: its rows).
    On failure: ValueError when the shapes disagree.
    """
    x = np.asarray(matrix)
    if x.ndim != 2 or x.shape[1] != len(columns):
        raise ValueError(f"matrix of shape {x.shape} for {len(columns)} columns")
    if scores is not None and len(scores) != len(x):
        raise ValueError(f"{len(scores)} scores for {len(x)} rows")
    defaults = registry_defaults(columns) if defaults is None else dict(defaults)
    rows = sample_rows(len(x), max_rows, seed)
    x = x[rows]
    features = {c: histogram(x[:, j], bins, defaults.get(c)) for j, c in enumerate(columns)}
    score = None if scores is None else histogram(np.asarray(scores)[rows], bins)
    return FeatureProfile(
        features,
        score,
        int(len(rows)),
        int(len(matrix) if source_rows is None else source_rows),
        bins,
        dict(extra or {}),
    )


def profile_table(
    table: pa.Table,
    columns: Sequence[str],
    score: Callable[[np.ndarray], np.ndarray] | None = None,
    *,
    defaults: Mapping[str, float] | None = None,
    bins: int = DEFAULT_BINS,
    max_rows: int = MAX_ROWS,
    seed: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> FeatureProfile:
    """``build_profile`` of a training table's ``columns`` (one numeric column each): a sample
    of at most ``max_rows`` rows is taken first, then ``score(matrix)`` (float [rows]) is called
    on it. On failure: ValueError naming the columns the table lacks."""
    from offline.loop.publish_gate import feature_matrix

    rows = sample_rows(table.num_rows, max_rows, seed)
    sample = table.take(pa.array(rows)) if len(rows) < table.num_rows else table
    x = feature_matrix(sample, columns)
    scores = None if score is None else np.asarray(score(x), np.float64).reshape(-1)
    return build_profile(
        x,
        columns,
        scores,
        defaults=defaults,
        bins=bins,
        max_rows=max_rows,
        source_rows=table.num_rows,
        extra=extra,
    )


def save(staging_dir: str | os.PathLike[str], profile: FeatureProfile) -> Path:
    """Writes ``profile`` as ``<staging_dir>/feature_profile.json`` (before publish). Returns the
    path. On failure: OSError."""
    path = Path(staging_dir) / PROFILE_FILE
    path.write_text(json.dumps(profile.to_json(), indent=1, allow_nan=False))
    return path


def load(version: ModelVersion) -> FeatureProfile | None:
    """The profile stored in ``version``; None when it has none (published before profiles).

    On failure: RegistryError (naming the version and the file) when the manifest lists the
    file but it is missing, when it fails its size or checksum, or when it cannot be parsed or
    a field is invalid (``FeatureProfile.from_json``)."""
    path = version.file(PROFILE_FILE)
    where = f"{version.use_case}/{version.name}"
    meta = version.manifest.get("files", {}).get(PROFILE_FILE)
    if not path.is_file():
        if meta is not None:
            raise RegistryError(f"{where}: {PROFILE_FILE} is listed in the manifest but missing")
        return None
    if meta is not None and (path.stat().st_size != meta["bytes"] or sha256(path) != meta["sha256"]):
        raise RegistryError(f"{where}: {PROFILE_FILE} fails its checksum")
    try:
        return FeatureProfile.from_json(json.loads(path.read_text()))
    except (KeyError, TypeError, ValueError) as exc:
        raise RegistryError(f"{where}: {PROFILE_FILE} is malformed: {exc}") from None
