"""Drift and health of the loop, per use case, from the decision and outcome logs.

* **Feature drift**: per (version, feature) the values the version was served with (decision
  log rows whose ``model_version`` is that version) against the training distribution stored
  in the version (``feature_profile.json``, offline/watch/profile.py), as PSI over the
  profile's bins plus its missing bin: ok < 0.1 <= moderate < 0.25 <= major (the usual
  credit-scoring thresholds). A version without a profile (published before profiles) is
  named in ``LoopHealth.notes``.
* **Scores**: a histogram of the served scores per version and rollout arm (``arm`` column;
  a log without it is all "live"), over the version's training score bins (PSI against them)
  or, without a profile, over deciles of every served score of the use case.
* **Statuses**: per feature group, the share of rows served with each FeatureStatus.
* **Labels**: the share of decisions older than the use case's longest label window
  (``matured``: their labels are final), the share with a label outcome, and the delay
  outcome time - decision time of those outcomes (p50, p90).

Everything about a log is read from its schema and metadata, never from the use case's name:
  feature vectors   a metadata key naming a list column, whose value is the JSON list of the
                    vector's column names (recommendation ``user_features``, ``item_features``,
                    ``cross_features``: groups "user", "item", "cross"), or the pair
                    ``feature_names`` + ``features`` (fraud, conversion: group = use case)
  candidates        a log with a ``ranks`` list column holds one list entry per candidate;
                    its list columns are read per candidate, of the SHOWN candidates (rank > 0:
                    the rows the loop's training sets hold) unless ``candidates="scored"``
  statuses          integer columns named ``*status`` (a fixed-size list: one group per value);
                    group names from the metadata entry of the same name ("user, merchant,
                    device: present, ...") or the column name (``user_feature_status``: "user")
  score             the first column of ``SCORE_COLUMNS`` the log has; rows with a ``scored``
                    flag set to false (the model could not score) are left out of it; NaN / inf
                    scores are counted (``ScoreDistribution.non_finite``), left out of the
                    histogram and mean, and fall in PSI's missing bin (as a feature's do)
The label windows are the use case's declared outcome types (decision_service.use_cases).

Binning is at the log's float32 precision on both sides (offline/watch/profile.py). A version
whose profile cannot be read or used (missing although the manifest lists it, failing its
checksum, an invalid field) is a note; the other versions are still measured.

CLI: ``python -m offline.watch.drift --logs DIR --registry DIR [--use-case NAME]`` prints the
tables (every use case with decisions under DIR by default); ``--json`` prints the results.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from decision_service.domain.features import FeatureStatus
from decision_service.models.registry import ModelRegistry, RegistryError
from decision_service.storage import is_remote
from offline.engines import Engine, open_engine
from offline.watch import profile as profiles
from offline.watch.logfiles import decision_files, outcome_files
from offline.watch.results import LIVE, FeatureDrift, LabelHealth, LoopHealth, ScoreDistribution, StatusShare

PSI_EPS = 1e-4
"""Floor of a bin's share in ``psi``: an empty bin counts as 0.01 % (finite PSI)."""
MODERATE_PSI = 0.1
MAJOR_PSI = 0.25
OK, MODERATE, MAJOR = "ok", "moderate", "major"

SCORE_COLUMNS: tuple[str, ...] = ("scores", "probability", "fraud_probability")
"""The model's output column of a decision log: the first of these the log has
(recommendation per candidate, conversion's calibrated probability, fraud's)."""
RANKS = "ranks"
MAX_ROWS = 200_000
"""Served rows read per version at most (a deterministic hash sample beyond that)."""
_SEP = "\x1f"


def psi(expected_props: Sequence[float], actual_props: Sequence[float], eps: float = PSI_EPS) -> float:
    """Population stability index of ``actual`` against ``expected`` over the same bins:
    ``sum((a - e) * ln(a / e))`` over bins, each share floored at ``eps`` first (an empty bin
    on either side then gives a large but finite term). Shares are used as given (each side
    should sum to 1); 0 when the two are equal, symmetric in the two arguments, >= 0.

    On failure: ValueError when the lengths differ, there is no bin, a share is negative or
    non-finite, or ``eps`` is not > 0."""
    e = np.asarray(expected_props, np.float64).reshape(-1)
    a = np.asarray(actual_props, np.float64).reshape(-1)
    if len(e) != len(a):
        raise ValueError(f"{len(e)} expected shares against {len(a)} actual shares")
    if len(e) == 0:
        raise ValueError("no bins")
    if not (np.isfinite(e).all() and np.isfinite(a).all()) or (e < 0).any() or (a < 0).any():
        raise ValueError("shares must be finite and >= 0")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    e, a = np.maximum(e, eps), np.maximum(a, eps)
    return float(np.sum((a - e) * np.log(a / e)))


def psi_level(value: float) -> str:
    """ "ok" below 0.1, "moderate" below 0.25, else "major" (NaN: "major")."""
    if value < MODERATE_PSI:
        return OK
    if value < MAJOR_PSI:
        return MODERATE
    return MAJOR


# ---------------------------------------------------------------------------------------------
# What a decision log file holds, from its schema


@dataclass(frozen=True)
class Block:
    """Feature values in a log: one vector column (``names`` from the metadata) or the
    ``features`` column named per row by ``feature_names`` (``names`` None)."""

    group: str
    column: str
    names: tuple[str, ...] | None
    per_candidate: bool


@dataclass(frozen=True)
class StatusColumn:
    column: str
    groups: tuple[str, ...]  # one per value (a scalar column: one)
    per_candidate: bool


@dataclass(frozen=True)
class LogLayout:
    blocks: tuple[Block, ...]
    statuses: tuple[StatusColumn, ...]
    score: str | None
    score_per_candidate: bool
    candidates: bool  # one list entry per candidate (a ``ranks`` column)
    scored_flag: bool  # a ``scored`` column says whether the model scored


def _is_var_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def _leaf(t: pa.DataType) -> pa.DataType:
    while hasattr(t, "value_type"):
        t = t.value_type
    return t


def _json_names(text: str) -> tuple[str, ...] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def _status_groups(column: str, described: str | None, width: int) -> tuple[str, ...]:
    if described and ":" in described:
        head = [p.strip() for p in described.split(":", 1)[0].split(",")]
        if len(head) == width and all(head):
            return tuple(head)
    base = re.sub(r"(_feature)?_status$", "", column) or column
    return (base,) if width == 1 else tuple(f"{base}[{i}]" for i in range(width))


def log_layout(schema: pa.Schema, use_case: str) -> LogLayout:
    """What ``schema`` (a decision log file's, with its metadata) holds: see the module doc."""
    meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    names = set(schema.names)
    candidates = RANKS in names and _is_var_list(schema.field(RANKS).type)
    blocks: list[Block] = []
    for key, text in meta.items():
        if key not in names:
            continue
        t = schema.field(key).type
        cols = _json_names(text)
        if cols is None or not hasattr(t, "value_type") or not pa.types.is_floating(_leaf(t)):
            continue
        group = key[: -len("_features")] if key.endswith("_features") else key
        blocks.append(Block(group, key, cols, candidates and _is_var_list(t)))
    if {"feature_names", "features"} <= names:
        blocks.append(Block(use_case, "features", None, False))
    statuses: list[StatusColumn] = []
    for f in schema:
        if not f.name.endswith("status") or not pa.types.is_integer(_leaf(f.type)):
            continue
        per_candidate = candidates and _is_var_list(f.type)
        width = f.type.list_size if pa.types.is_fixed_size_list(f.type) else 1
        if _is_var_list(f.type) and not per_candidate:
            continue  # a list of unknown meaning
        statuses.append(StatusColumn(f.name, _status_groups(f.name, meta.get(f.name), width), per_candidate))
    score = next((c for c in SCORE_COLUMNS if c in names), None)
    score_per_candidate = bool(score) and candidates and _is_var_list(schema.field(score).type)
    return LogLayout(
        tuple(blocks), tuple(statuses), score, score_per_candidate, candidates, "scored" in names
    )


# ---------------------------------------------------------------------------------------------
# Loop health


def loop_health(
    log_root: str | Path,
    registry_root: str | Path,
    use_case: str,
    now_ms: int | None = None,
    *,
    candidates: str = "shown",
    max_rows: int = MAX_ROWS,
    label_windows: Mapping[str, float] | None = None,
) -> LoopHealth:
    """Drift and health of ``use_case``'s loop from the logs under ``log_root`` (decisions/
    and outcomes/, local or an object store) and the versions in ``registry_root``.

    Only decisions made (and outcomes received) by ``now_ms`` (ms since the epoch, default
    now) count. ``candidates``: "shown" (rank > 0, default) or "scored" (every candidate the
    model scored) for logs with candidate lists. ``max_rows``: served rows per version read
    for drift and scores (a deterministic sample beyond). ``label_windows``: outcome type ->
    label window in seconds (default: the use case's declared outcome types with a window).

    Returns ``LoopHealth`` (results.py): drift sorted by version then PSI descending; scores
    by version and arm; statuses by group and FeatureStatus order; labels (None when the
    label windows are unknown); notes for versions without a profile (or with one that cannot
    be read or used), features of a profile the log lacks, and the like. On failure:
    ValueError for an unknown ``candidates``; ``LogFileError`` (a ValueError) naming an
    unreadable log file.
    """
    if candidates not in ("shown", "scored"):
        raise ValueError(f"candidates must be 'shown' or 'scored', got {candidates!r}")
    now_ms = int(time.time() * 1000) if now_ms is None else int(now_ms)
    files = decision_files(log_root, use_case)
    notes: list[str] = []
    if not files:
        return LoopHealth(use_case, notes=(f"no {use_case} decisions under {log_root}",))
    by_layout: dict[LogLayout, list[Path]] = defaultdict(list)
    arm_in: dict[LogLayout, bool] = defaultdict(bool)
    for f in files:
        schema = pq.read_schema(f)
        layout = log_layout(schema, use_case)
        by_layout[layout].append(f)
        arm_in[layout] |= "arm" in schema.names

    values: dict[tuple[str, str, str], list[np.ndarray]] = defaultdict(list)
    scores: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
    status_counts: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    with open_engine("duckdb") as eng:
        for layout, paths in by_layout.items():
            src = eng.register_parquet("decisions", paths)
            table = _served_rows(eng, src, layout, arm_in[layout], now_ms, candidates == "shown", max_rows)
            _collect_values(table, layout, values, notes)
            _collect_scores(table, layout, scores)
            _count_statuses(eng, src, layout, now_ms, candidates == "shown", status_counts)
        labels = _label_health(eng, files, log_root, use_case, now_ms, label_windows, notes)

    registry = ModelRegistry(registry_root)
    versions = sorted({v for v, _, _ in values} | {v for v, _ in scores})
    loaded: dict[str, profiles.FeatureProfile | None] = {}
    for version in versions:
        try:
            loaded[version] = profiles.load(registry.get(use_case, version))
        except (RegistryError, OSError) as exc:
            loaded[version] = None
            notes.append(f"{version}: no profile read ({exc})")
            continue
        if loaded[version] is None:
            notes.append(f"{version}: no feature profile (published before profiles): drift not measured")

    _check_profiles(use_case, values, scores, loaded, notes)

    drift = _drift(use_case, values, loaded, notes)
    score_rows = _score_distributions(use_case, scores, loaded)
    statuses = _status_shares(use_case, status_counts)
    return LoopHealth(use_case, tuple(drift), tuple(score_rows), tuple(statuses), labels, tuple(notes))


def _served_rows(
    eng: Engine, src: str, layout: LogLayout, has_arm: bool, now_ms: int, shown: bool, max_rows: int
) -> pa.Table:
    """One row per decision (or per shown / scored candidate): model_version, arm, the feature
    blocks, _score, _scored; at most ``max_rows`` per version."""
    arm = f"coalesce(arm, '{LIVE}')" if has_arm else f"'{LIVE}'"
    cols = ["model_version", f"{arm} as arm", "decision_id"]
    for b in layout.blocks:
        if b.names is None:
            cols += [f"array_to_string(feature_names, '{_SEP}') as _layout", '"features"']
        elif b.per_candidate:
            cols.append(f'unnest("{b.column}") as "{b.column}"')
        else:
            cols.append(f'"{b.column}"')
    if layout.score is None:
        cols.append("null::double as _score")
    elif layout.score_per_candidate:
        cols.append(f'unnest("{layout.score}") as _score')
    else:
        cols.append(f'"{layout.score}"::double as _score')
    cols.append("coalesce(scored, true) as _scored" if layout.scored_flag else "true as _scored")
    key = "decision_id"
    rank_filter = "true"
    if layout.candidates:
        cols.append(f"unnest({RANKS}) as _rank")
        key = "decision_id || '/' || _rank::varchar"
        if shown:
            rank_filter = "_rank > 0"
    return eng.sql(
        f"""
        with d as (
            select {", ".join(cols)} from {src}
            where epoch_ms(decided_at) <= {now_ms} and model_version is not null
        )
        select * from d where {rank_filter}
        qualify row_number() over (partition by model_version order by hash({key})) <= {int(max_rows)}
        """
    )


def _matrix(col: pa.ChunkedArray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, float64 [n rows, width]) of the list values of ``col`` that are non-null and
    ``width`` long (other rows are left out)."""
    arr = col.combine_chunks()
    if len(arr) == 0:
        return np.zeros(0, np.int64), np.zeros((0, width))
    ok = pc.and_(pc.is_valid(arr), pc.equal(pc.list_value_length(arr), width))
    rows = np.flatnonzero(pc.fill_null(ok, False).to_numpy(zero_copy_only=False))
    kept = arr.take(pa.array(rows))
    flat = pc.list_flatten(kept).to_numpy(zero_copy_only=False).astype(np.float64)
    return rows, flat.reshape(len(rows), width)


def _collect_values(
    table: pa.Table, layout: LogLayout, out: dict[tuple[str, str, str], list[np.ndarray]], notes: list[str]
) -> None:
    versions = table.column("model_version").to_numpy(zero_copy_only=False).astype(object)
    for b in layout.blocks:
        if b.names is not None:
            rows, m = _matrix(table.column(b.column), len(b.names))
            _add(out, versions[rows], b.group, b.names, m)
            if bad := table.num_rows - len(rows):
                notes.append(f"{bad} rows of {b.column} were null or not {len(b.names)} long: left out")
            continue
        layouts = table.column("_layout").to_numpy(zero_copy_only=False).astype(object)
        features = table.column("features")
        for lay in {x for x in layouts if x}:
            names = tuple(lay.split(_SEP))
            sel = np.flatnonzero(layouts == lay)
            rows, m = _matrix(features.take(pa.array(sel)), len(names))
            _add(out, versions[sel[rows]], b.group, names, m)


def _add(
    out: dict[tuple[str, str, str], list[np.ndarray]],
    versions: np.ndarray,
    group: str,
    names: Sequence[str],
    m: np.ndarray,
) -> None:
    for v in {x for x in versions}:
        sel = versions == v
        for j, name in enumerate(names):
            out[(str(v), group, name)].append(m[sel, j])


def _collect_scores(table: pa.Table, layout: LogLayout, out: dict[tuple[str, str], list[np.ndarray]]) -> None:
    if layout.score is None:
        return
    keep = pc.and_(pc.is_valid(table.column("_score")), pc.fill_null(table.column("_scored"), True))
    t = table.filter(keep).select(["model_version", "arm", "_score"])
    versions = t.column("model_version").to_numpy(zero_copy_only=False).astype(object)
    arms = t.column("arm").to_numpy(zero_copy_only=False).astype(object)
    s = t.column("_score").to_numpy(zero_copy_only=False).astype(np.float64)
    for v, a in {(x, y) for x, y in zip(versions, arms, strict=True)}:
        out[(str(v), str(a))].append(s[(versions == v) & (arms == a)])


def _count_statuses(
    eng: Engine, src: str, layout: LogLayout, now_ms: int, shown: bool, out: dict[str, dict[int, int]]
) -> None:
    """Status counts per group: per decision for per-decision columns, per shown (scored)
    candidate for per-candidate ones; every decision made by ``now_ms`` (no sampling)."""
    when = f"epoch_ms(decided_at) <= {now_ms}"
    for s in layout.statuses:
        if s.per_candidate:
            rank = "where _rank > 0" if shown else ""
            query = f"""select _s as s, count(*) as n from (
                    select unnest("{s.column}") as _s, unnest({RANKS}) as _rank from {src} where {when}
                ) {rank} group by 1"""
            queries = [(s.groups[0], query)]
        elif len(s.groups) == 1:
            queries = [
                (s.groups[0], f'select "{s.column}" as s, count(*) as n from {src} where {when} group by 1')
            ]
        else:
            queries = [
                (g, f'select "{s.column}"[{i + 1}] as s, count(*) as n from {src} where {when} group by 1')
                for i, g in enumerate(s.groups)
            ]
        for group, query in queries:
            for row in eng.sql(query).to_pylist():
                if row["s"] is not None:
                    out[group][int(row["s"])] += int(row["n"])


def _status_name(value: int) -> str:
    try:
        return FeatureStatus(value).name.lower()
    except ValueError:
        return f"status_{value}"


def _status_shares(use_case: str, counts: dict[str, dict[int, int]]) -> list[StatusShare]:
    out = []
    for group in sorted(counts):
        total = sum(counts[group].values())
        for value in sorted({*(int(s) for s in FeatureStatus), *counts[group]}):
            n = counts[group].get(value, 0)
            out.append(
                StatusShare(use_case, group, _status_name(value), n / total if total else 0.0, n, total)
            )
    return out


def _check_profiles(
    use_case: str,
    values: dict[tuple[str, str, str], list[np.ndarray]],
    scores: dict[tuple[str, str], list[np.ndarray]],
    loaded: dict[str, profiles.FeatureProfile | None],
    notes: list[str],
) -> None:
    """A profile that loads but cannot be compared (bins that do not match: PSI refuses) is a
    note and that version is left unmeasured; the others go on."""
    for version, profile in list(loaded.items()):
        if profile is None:
            continue
        try:
            for (v, _, name), parts in values.items():
                h = profile.features.get(name)
                if v == version and h is not None:
                    psi(h.shares, h.shares_of(np.concatenate(parts)))
            if profile.score is not None:
                for (v, _), parts in scores.items():
                    if v == version:
                        psi(profile.score.shares, profile.score.shares_of(np.concatenate(parts)))
        except ValueError as exc:
            loaded[version] = None
            notes.append(f"{version}: {use_case}/{version}/{profiles.PROFILE_FILE} cannot be used ({exc})")


def _drift(
    use_case: str,
    values: dict[tuple[str, str, str], list[np.ndarray]],
    loaded: Mapping[str, profiles.FeatureProfile | None],
    notes: list[str],
) -> list[FeatureDrift]:
    out: list[FeatureDrift] = []
    for version, profile in loaded.items():
        if profile is None:
            continue
        logged = {name for v, _, name in values if v == version}
        if lacking := [f for f in profile.features if f not in logged]:
            notes.append(f"{version}: profiled features not in the log: {', '.join(lacking)}")
        for (v, group, name), parts in values.items():
            h = profile.features.get(name)
            if v != version or h is None:
                continue
            served = np.concatenate(parts)
            value = psi(h.shares, h.shares_of(served))
            missing = ~np.isfinite(served)
            at_default = missing if h.default is None else missing | profiles.at_default(served, h.default)
            out.append(
                FeatureDrift(
                    use_case,
                    version,
                    group,
                    name,
                    round(value, 6),
                    psi_level(value),
                    int(len(served)),
                    float(at_default.mean()) if len(served) else 0.0,
                    h.default_share,
                )
            )
    out.sort(key=lambda d: (d.version, -d.psi, d.group, d.feature))
    return out


def _score_distributions(
    use_case: str,
    scores: dict[tuple[str, str], list[np.ndarray]],
    loaded: Mapping[str, profiles.FeatureProfile | None],
) -> list[ScoreDistribution]:
    pooled = np.concatenate([p for parts in scores.values() for p in parts]) if scores else np.zeros(0)
    common = profiles.quantile_edges(pooled)
    out = []
    for (version, arm), parts in sorted(scores.items()):
        served = np.concatenate(parts)
        s = served[np.isfinite(served)]
        if not len(s):
            continue
        p = loaded.get(version)
        h = p.score if p is not None else None
        interior = h.edges if h is not None else common
        counts = np.bincount(profiles.bin_index(s, interior), minlength=len(interior) + 1)
        lo = min(float(s.min()), interior[0]) if interior else float(s.min())
        hi = max(float(s.max()), interior[-1]) if interior else float(s.max())
        value = None if h is None else psi(h.shares, h.shares_of(served))  # non-finite: missing bin
        out.append(
            ScoreDistribution(
                use_case,
                version,
                arm,
                (lo, *interior, hi),
                tuple(int(c) for c in counts),
                float(s.mean()),
                None if value is None else round(value, 6),
                None if value is None else psi_level(value),
                None if h is None else h.mean,
                int(len(served) - len(s)),
            )
        )
    return out


def declared_label_windows(use_case: str) -> dict[str, float] | None:
    """Outcome type -> label window (s) of ``use_case``'s declared outcome types that label
    (window > 0); None when the active project does not serve ``use_case``."""
    from decision_service.use_cases import USE_CASES

    for u in USE_CASES:
        if u.name == use_case:
            return {t.name: float(t.label_window_s) for t in u.outcome_types if t.label_window_s > 0}
    return None


def _label_health(
    eng: Engine,
    files: Sequence[Path],
    log_root: str | Path,
    use_case: str,
    now_ms: int,
    windows: Mapping[str, float] | None,
    notes: list[str],
) -> LabelHealth | None:
    windows = declared_label_windows(use_case) if windows is None else dict(windows)
    if not windows:
        notes.append(
            f"{use_case}: no label windows declared (is it served by this project?): no label health"
        )
        return None
    longest_ms = int(round(max(windows.values()) * 1000))
    d = eng.materialize(
        "d",
        f"""select decision_id, min(epoch_ms(decided_at)) as decided_ms
        from {eng.register_parquet("decisions", files)}
        where epoch_ms(decided_at) <= {now_ms} group by decision_id""",
    )
    counts = eng.sql(
        f"select count(*) as n, count(*) filter (where decided_ms + {longest_ms} <= {now_ms}) as matured "
        f"from {d}"
    ).to_pylist()[0]
    n, matured = int(counts["n"]), int(counts["matured"] or 0)
    o_files = outcome_files(log_root, use_case)
    labelled, delays = 0, np.zeros(0)
    if o_files and n:
        types = ", ".join("'" + t.replace("'", "''") + "'" for t in windows)
        joined = eng.sql(
            f"""select d.decision_id, (epoch_ms(o.occurred_at) - d.decided_ms) / 1000.0 as delay_s
            from {eng.register_parquet("outcomes", o_files)} o join {d} d on d.decision_id = o.decision_id
            where o.type in ({types}) and epoch_ms(o.received_at) <= {now_ms}"""
        )
        labelled = len(set(joined.column("decision_id").to_pylist()))
        delays = joined.column("delay_s").to_numpy(zero_copy_only=False).astype(np.float64)
    p50, p90 = (
        (float(np.quantile(delays, 0.5)), float(np.quantile(delays, 0.9))) if len(delays) else (None, None)
    )
    return LabelHealth(use_case, n, matured / n if n else 0.0, labelled / n if n else 0.0, p50, p90)


# ---------------------------------------------------------------------------------------------
# CLI

_BARS = " ▁▂▃▄▅▆▇█"


def _spark(counts: Sequence[int]) -> str:
    top = max(counts) if counts else 0
    return "".join(_BARS[math.ceil(c / top * (len(_BARS) - 1))] if top else " " for c in counts)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _secs(x: float | None) -> str:
    if x is None:
        return "n/a"
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0)):
        if abs(x) >= size:
            return f"{x / size:.1f}{unit}"
    return f"{x:.1f}s"


def format_health(h: LoopHealth, top: int | None = None) -> str:
    """The readable tables of one use case's ``LoopHealth`` (``top``: drift rows per version)."""
    lines = [f"== {h.use_case} =="]
    lines.append(
        f"feature drift: PSI of served values vs the version's training profile "
        f"(ok < {MODERATE_PSI} <= moderate < {MAJOR_PSI} <= major)"
    )
    if h.drift:
        lines.append(
            f"  {'version':<14} {'group':<10} {'feature':<28} {'PSI':>8} {'level':<9} "
            f"{'served':>9} {'default/missing':>16}"
        )
        shown: dict[str, int] = defaultdict(int)
        for d in h.drift:
            shown[d.version] += 1
            if top is not None and shown[d.version] > top:
                continue
            default = f"{_pct(d.default_share)} ({_pct(d.training_default_share)})"
            lines.append(
                f"  {d.version:<14} {d.group:<10} {d.feature:<28} {d.psi:>8.4f} {d.level:<9} "
                f"{d.served:>9,} {default:>16}"
            )
        for version, n in shown.items():
            if top is not None and n > top:
                lines.append(f"  {version:<14} ... {n - top} more features")
        levels = defaultdict(int)
        for d in h.drift:
            levels[d.level] += 1
        lines.append("  " + ", ".join(f"{k}: {levels[k]}" for k in (OK, MODERATE, MAJOR)))
    else:
        lines.append("  (nothing to compare)")
    lines.append("scores per version and arm (bins: the version's training score deciles)")
    if h.scores:
        lines.append(
            f"  {'version':<14} {'arm':<7} {'n':>9} {'mean':>9} {'train mean':>10} {'PSI':>8} "
            f"{'level':<9} histogram"
        )
        for s in h.scores:
            train = "n/a" if s.training_mean is None else f"{s.training_mean:.4f}"
            value = "n/a" if s.psi is None else f"{s.psi:.4f}"
            lines.append(
                f"  {s.version:<14} {s.arm:<7} {sum(s.counts):>9,} {s.mean:>9.4f} {train:>10} {value:>8} "
                f"{s.level or 'n/a':<9} |{_spark(s.counts)}| {s.edges[0]:.3g}..{s.edges[-1]:.3g}"
            )
    else:
        lines.append("  (no scores logged)")
    lines.append("feature status shares (rows served)")
    if h.statuses:
        names = list(dict.fromkeys(s.status for s in h.statuses))
        lines.append(f"  {'group':<14} " + " ".join(f"{n:>11}" for n in names) + f" {'rows':>10}")
        by_group: dict[str, dict[str, StatusShare]] = defaultdict(dict)
        for s in h.statuses:
            by_group[s.group][s.status] = s
        for group, row in by_group.items():
            total = next(iter(row.values())).total
            lines.append(
                f"  {group:<14} "
                + " ".join(f"{_pct(row[n].share) if n in row else '':>11}" for n in names)
                + f" {total:>10,}"
            )
    else:
        lines.append("  (no status columns)")
    lines.append("labels")
    if h.labels is not None:
        lb = h.labels
        lines.append(
            f"  decisions {lb.decisions:,}; matured {_pct(lb.matured_share)}; labelled "
            f"{_pct(lb.labelled_share)}; outcome delay p50 {_secs(lb.delay_p50_s)}, "
            f"p90 {_secs(lb.delay_p90_s)}"
        )
    else:
        lines.append("  n/a")
    lines += [f"note: {n}" for n in h.notes]
    return "\n".join(lines)


def _logged_use_cases(log_root: str) -> list[str]:
    if not is_remote(log_root):
        found = sorted(p.name.split("=", 1)[1] for p in (Path(log_root) / "decisions").glob("use_case=*"))
        if found:
            return found
    from decision_service.use_cases import USE_CASES

    return [u.name for u in USE_CASES]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m offline.watch.drift", description=__doc__.splitlines()[0])
    ap.add_argument("--logs", default="data/logs", help="log root (decisions/ and outcomes/ below it)")
    ap.add_argument("--registry", default="data/registry", help="model registry root")
    ap.add_argument(
        "--use-case", default=None, help="one use case (default: every one with logged decisions)"
    )
    ap.add_argument("--now-ms", type=int, default=None, help="as of this time (default: now)")
    ap.add_argument(
        "--candidates",
        choices=("shown", "scored"),
        default="shown",
        help="candidate logs: the shown candidates (default) or every scored one",
    )
    ap.add_argument("--max-rows", type=int, default=MAX_ROWS, help="served rows read per version at most")
    ap.add_argument("--top", type=int, default=None, help="drift rows per version (default: all)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    names = [args.use_case] if args.use_case else _logged_use_cases(args.logs)
    try:
        results = [
            loop_health(
                args.logs, args.registry, n, args.now_ms, candidates=args.candidates, max_rows=args.max_rows
            )
            for n in names
        ]
    except (ValueError, OSError, RegistryError) as exc:  # LogFileError names the file
        text = str(exc).strip().splitlines()
        print(f"error: {text[0] if text else type(exc).__name__}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=1))
    else:
        print("\n\n".join(format_health(r, args.top) for r in results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
