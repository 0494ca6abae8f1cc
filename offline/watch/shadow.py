"""Shadow vs live on the same decisions: score correlation, rank agreement, and the publish
gate's headline metric of each on the matured decisions.

A shadow version scores served decisions off the answer path; the shadow log
(``<log_root>/shadow/use_case=<name>/date=/hour=/*.parquet``,
decision_service/decision_log/shadow_log.py) holds one row per scored decision, its
``shadow_scores`` lined up with the decision log's served scores of that decision. What
"the served scores" are, the candidates' order, the matured labelled rows and the gate's
metric are the use case's declaration (``shadow_metric``, offline/use_cases/base.py
``ShadowMetric``): this module names no use case.

Per (served version, shadow version):
  * ``decisions``: decisions with a shadow score lined up with the logged ones
    (``misaligned``: shadow rows left out because their score count differs from the
    decision log's, or their decision is not in the decision log);
  * ``score_correlation``: Pearson over every (decision, candidate) pair of scores;
  * ``rank_agreement``: per-candidate scores: the mean over decisions of
    |top-k(live) & top-k(shadow)| / min(k, candidates) (ties broken by candidate order);
    one score per decision: Spearman over decisions. ``spearman``: per-candidate, the mean
    per-decision Spearman over candidates (decisions with >= 2 candidates and non-constant
    scores on both sides); else the same as ``rank_agreement``;
  * ``live_metric`` / ``shadow_metric``: the gate's metric of the served scores and of the
    shadow's on the same matured labelled rows (the use case's training-set code decides
    which rows are matured and what the labels are, as of ``now_ms``); None when no row of
    these decisions has matured or it cannot be measured (e.g. no positive);
  * ``skipped``: decisions the served version made during the shadow's period (its first to
    its last scored decision) that have no row of this shadow (queue full, time budget,
    errors);
  * ``non_finite``: decisions left out because a live or a shadow score is NaN or inf (every
    watch statistic leaves non-finite scores out and counts them, offline/watch/online.py).

Decisions and a shadow log but no outcome log: ``NoOutcomesError`` (a ValueError), not a gate
metric on all-negative labels. An unreadable log file: ``LogFileError`` naming it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.stats import rankdata

from offline.use_cases.base import ShadowMetric
from offline.watch import logfiles
from offline.watch.logfiles import decision_files, require_outcomes
from offline.watch.online import _engine, log_now_ms
from offline.watch.results import ShadowComparison


def shadow_files(log_root: str | Path, use_case: str) -> list[Path]:
    """The shadow log's Parquet files of ``use_case``, sorted (object-store roots mirrored
    locally, as the training set does)."""
    return logfiles.shadow_files(log_root, use_case)


def shadow_metric_of(use_case: str) -> ShadowMetric | None:
    """The ``shadow_metric`` the offline use case declares (None: none). On failure:
    ValueError for an unknown use case."""
    from offline.use_cases import by_name

    return getattr(by_name(use_case), "shadow_metric", None)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _top_k_overlap(live: np.ndarray, shadow: np.ndarray, k: int) -> float:
    n = len(live)
    if n == 0:
        return float("nan")
    kk = min(k, n)
    top_live = np.argsort(-live, kind="stable")[:kk]
    top_shadow = np.argsort(-shadow, kind="stable")[:kk]
    return len(np.intersect1d(top_live, top_shadow)) / kk


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return _pearson(rankdata(a), rankdata(b))


def _nan_to_none(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _nanmean(values: Sequence[float]) -> float:
    arr = np.asarray([v for v in values if not math.isnan(v)], np.float64)
    return float(arr.mean()) if len(arr) else float("nan")


def compare_shadow(
    log_root: str | Path,
    use_case: str,
    now_ms: int | None = None,
    *,
    window_s: float | None = None,
    metric: ShadowMetric | None = None,
) -> list[ShadowComparison]:
    """Every shadow version of ``use_case`` against the version that served the same decisions.

    ``log_root``: holds ``decisions/``, ``outcomes/`` and ``shadow/`` (local or an object-store
    URI). ``now_ms``: labels as of this time (ms since the epoch; default the newest decision
    or received outcome in the logs). ``window_s``: every label window in seconds (default
    the production windows; the flywheel's are compressed). ``metric``: default the use
    case's declared ``shadow_metric``.

    Returns one ``ShadowComparison`` per (served version, shadow version), by served then
    shadow version; empty without a shadow log or a declaration. Correlations are NaN when
    undefined (fewer than 2 pairs, constant scores).
    On failure: ValueError for an unknown use case; ``NoOutcomesError`` (a ValueError) when
    there is a shadow to compare but no outcome log; ``LogFileError`` naming an unreadable log
    file; what the use case's training-set code raises for malformed logs.
    """
    sm = shadow_metric_of(use_case) if metric is None else metric
    s_files = shadow_files(log_root, use_case)
    d_files = decision_files(log_root, use_case)
    if sm is None or not s_files or not d_files:
        return []
    require_outcomes(log_root, use_case)
    now = now_ms if now_ms is not None else log_now_ms(log_root, use_case)
    items = f"({sm.items})" if sm.items else "null::varchar[]"
    with _engine() as eng:
        s = eng.register_parquet("shadow", s_files)
        d = eng.register_parquet("decisions", d_files)
        sv = eng.materialize(
            "s",
            f"""select decision_id, shadow_model_version as shadow_version, shadow_scores,
                       epoch_ms(decided_at) as decided_ms, model_version as s_version
                from {s}
                qualify row_number() over (
                    partition by decision_id, shadow_model_version order by decided_at) = 1""",
        )
        dv = eng.materialize(
            "d",
            f"""select decision_id, model_version, epoch_ms(decided_at) as decided_ms,
                       ({sm.live_scores})::float[] as live_scores, {items} as items
                from {d}
                qualify row_number() over (partition by decision_id order by decided_at) = 1""",
        )
        pairs = eng.sql(
            f"""select s.decision_id, coalesce(d.model_version, s.s_version) as live_version,
                       s.shadow_version, d.live_scores, s.shadow_scores, d.items,
                       d.decision_id is not null as logged
                from {sv} s left join {dv} d on d.decision_id = s.decision_id
                order by live_version, shadow_version, s.decided_ms, s.decision_id"""
        )
        skipped = {
            (r["live_version"], r["shadow_version"]): int(r["n"])
            for r in eng.sql(
                f"""with g as (
                        select coalesce(d.model_version, s.s_version) as live_version, s.shadow_version,
                               min(s.decided_ms) as first_ms, max(s.decided_ms) as last_ms
                        from {sv} s left join {dv} d on d.decision_id = s.decision_id group by all
                    )
                    select g.live_version, g.shadow_version, count(*) as n
                    from g join {dv} d on d.model_version = g.live_version
                         and d.decided_ms between g.first_ms and g.last_ms
                    where not exists (select 1 from {sv} x
                                      where x.decision_id = d.decision_id
                                        and x.shadow_version = g.shadow_version)
                    group by all"""
            ).to_pylist()
        }
    labelled = sm.labelled(log_root, int(now), window_s) if now is not None else None
    out = []
    keys = list(
        dict.fromkeys(
            zip(
                pairs.column("live_version").to_pylist(),
                pairs.column("shadow_version").to_pylist(),
                strict=True,
            )
        )
    )
    for live_version, shadow_version in keys:
        mask = pc.and_(
            pc.equal(pairs.column("live_version"), live_version),
            pc.equal(pairs.column("shadow_version"), shadow_version),
        )
        out.append(
            _compare(
                use_case, sm, pairs.filter(mask), labelled, str(live_version), str(shadow_version),
                skipped.get((live_version, shadow_version), 0),
            )
        )  # fmt: skip
    return out


def _compare(
    use_case: str,
    sm: ShadowMetric,
    rows: pa.Table,
    labelled: pa.Table | None,
    live_version: str,
    shadow_version: str,
    skipped: int,
) -> ShadowComparison:
    ids: list[str] = []
    live: list[np.ndarray] = []
    shadow: list[np.ndarray] = []
    items: list[list[str] | None] = []
    misaligned = non_finite = 0
    for r in rows.to_pylist():
        a, b = r["live_scores"], r["shadow_scores"]
        if not r["logged"] or a is None or b is None or len(a) != len(b) or not len(a):
            misaligned += 1
            continue
        la = np.asarray([np.nan if x is None else x for x in a], np.float64)
        lb = np.asarray([np.nan if x is None else x for x in b], np.float64)
        if not (np.isfinite(la).all() and np.isfinite(lb).all()):
            non_finite += 1
            continue
        ids.append(r["decision_id"])
        live.append(la)
        shadow.append(lb)
        items.append(r["items"])
    flat_live = np.concatenate(live) if live else np.zeros(0)
    flat_shadow = np.concatenate(shadow) if shadow else np.zeros(0)
    correlation = _pearson(flat_live, flat_shadow)
    if sm.items:
        agreement = _nanmean([_top_k_overlap(a, b, sm.top_k) for a, b in zip(live, shadow, strict=True)])
        spearman = _nanmean([_spearman(a, b) for a, b in zip(live, shadow, strict=True) if len(a) >= 2])
    else:
        agreement = spearman = _spearman(flat_live, flat_shadow)
    live_metric = shadow_metric = None
    matured = 0
    if labelled is not None and labelled.num_rows and ids:
        live_metric, shadow_metric, matured = _gate_metric(sm, labelled, ids, live, shadow, items)
    return ShadowComparison(
        use_case=use_case,
        live_version=live_version,
        shadow_version=shadow_version,
        decisions=len(ids),
        score_correlation=correlation,
        rank_agreement=agreement,
        metric=sm.name,
        live_metric=live_metric,
        shadow_metric=shadow_metric,
        matured_decisions=matured,
        skipped=skipped,
        spearman=_nan_to_none(spearman),
        misaligned=misaligned,
        non_finite=non_finite,
    )


def _gate_metric(
    sm: ShadowMetric,
    labelled: pa.Table,
    ids: list[str],
    live: list[np.ndarray],
    shadow: list[np.ndarray],
    items: list[list[str] | None],
) -> tuple[float | None, float | None, int]:
    """The gate's metric of the served and the shadow scores on the matured labelled rows of
    these decisions; (live, shadow, matured decisions)."""
    index = {d: i for i, d in enumerate(ids)}
    decision = labelled.column("decision_id").to_pylist()
    has_items = sm.items is not None and "item_id" in labelled.column_names
    item_ids = labelled.column("item_id").to_pylist() if has_items else [None] * len(decision)
    label = labelled.column("label").to_numpy(zero_copy_only=False).astype(np.float64)
    weight = (
        labelled.column("weight").to_numpy(zero_copy_only=False).astype(np.float64)
        if "weight" in labelled.column_names
        else np.ones(len(decision))
    )
    positions: dict[int, dict[str, int]] = {}
    keep, groups, live_s, shadow_s = [], [], [], []
    for row, (d_id, item) in enumerate(zip(decision, item_ids, strict=True)):
        i = index.get(d_id)
        if i is None:
            continue
        if has_items:
            where = positions.get(i)
            if where is None:
                where = positions[i] = {x: j for j, x in enumerate(items[i] or [])}
            j = where.get(item)
            if j is None:
                continue
        else:
            j = 0
        keep.append(row)
        groups.append(i)
        live_s.append(live[i][j])
        shadow_s.append(shadow[i][j])
    if not keep:
        return None, None, 0
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    y, w = label[keep], weight[keep]
    return (
        _nan_to_none(sm.evaluate(y, w, g, np.asarray(live_s))),
        _nan_to_none(sm.evaluate(y, w, g, np.asarray(shadow_s))),
        int(g.max()) + 1,
    )


def format_shadow(rows: Sequence[ShadowComparison]) -> list[str]:
    """A readable table of shadow comparisons (one line each)."""
    if not rows:
        return ["  no shadow in the logs"]

    def f(x: float | None) -> str:
        return "n/a" if x is None or math.isnan(x) else f"{x:.4f}"

    lines = [
        f"  {'live':<10} {'shadow':<10} {'decisions':>9} {'skipped':>7} {'pearson':>8} {'rank agr':>8} "
        f"{'spearman':>8}  {'metric':<8} {'live':>7} {'shadow':>7} {'matured':>8}"
    ]
    for c in rows:
        lines.append(
            f"  {c.live_version:<10} {c.shadow_version:<10} {c.decisions:>9} {c.skipped:>7} "
            f"{f(c.score_correlation):>8} {f(c.rank_agreement):>8} {f(c.spearman):>8}  {c.metric:<8} "
            f"{f(c.live_metric):>7} {f(c.shadow_metric):>7} {c.matured_decisions:>8}"
        )
    for c in rows:
        if c.non_finite:
            lines.append(
                f"  {c.live_version} / {c.shadow_version}: {c.non_finite} left out (NaN / inf score)"
            )
    return lines


__all__ = ["compare_shadow", "format_shadow", "shadow_files", "shadow_metric_of"]
