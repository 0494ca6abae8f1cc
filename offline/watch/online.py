"""Online evaluation of a rollout: each arm's online metrics with 95 % intervals, and the canary
promotion rule.

A canary serves a stable-hash share of USERS (every decision log row carries ``arm`` = "live"
or "canary" and ``model_version``; files written before arms existed lack ``arm``: read as
"live"). Each use case declares its online metrics (``online_metrics`` of its offline hooks,
offline/use_cases/base.py ``OnlineMetric``); this module computes them and names no use case.

Matured decisions only. A decision counts for a metric once its label window has closed:
``decided_at + window <= now``; its outcomes are those that *occurred* in
``[decided_at - OUTCOME_CLOCK_SKEW_MS, decided_at + window]`` and were *received* by ``now``
(the training set's rules, offline/loop/training_set.py). ``now_ms`` defaults to the newest
time in the logs (the latest decision or received outcome), not the wall clock, so a report
over copied or replayed logs reads the same; the flywheel compresses time (its windows are
seconds), so ``window_s`` overrides every metric's declared (production) window.

Intervals (95 %, two-sided):
  * a proportion of decisions (every unit 1, every hit 0/1): Wilson score interval, and for
    canary - live Newcombe's hybrid score interval (method 10) from the two Wilson intervals;
  * anything else (clicks per served item, purchases per decision, recall at a review
    rate, AUC, log-loss): percentile bootstrap over USERS, the randomisation unit (users are
    resampled with replacement, all their decisions with them: correlated decisions of one
    user widen the interval as they should); canary - live from independent resamples of
    the two arms (disjoint users). ``bootstrap`` replicates, seeded.

The canary rule (``CanaryRule``), per gated metric, on the difference canary - live turned
into an *improvement* interval [lo, hi] (the difference when higher is better, its negation
when lower is better) and the tolerance t >= 0 (absolute, in the metric's units; the
metric's declared one unless the rule overrides it):
  * either arm has fewer than ``min_decisions`` matured decisions: undecided (too few);
  * a bootstrapped metric where either arm has fewer than ``min_positives`` positives
    (``positives_of``: a recall's positive labels, an AUC's / log-loss's rarer class, a
    bootstrapped rate's hits): undecided ("too few positives") -- a handful of positives
    collapses the bootstrap to a near-zero-width interval. Wilson / Newcombe proportions
    stay valid with few or no hits and are not bounded so (a guard share of 0 is evidence);
  * more than ``MAX_UNDEFINED_SHARE`` of the bootstrap resamples undefined (NaN, e.g. a
    resample with no positive): undecided -- they are counted (``Interval.undefined``),
    never silently dropped from the percentiles;
  * hi < -t: WORSE (the canary loses more than the tolerance, with 95 % confidence);
  * lo >= -t: NON-INFERIOR;
  * else undecided.
PROMOTE when every gated metric is non-inferior; ROLLBACK when any is worse, or when the
rule is ``final`` (the canary's time is up) and one is still undecided; WAIT otherwise.
Rolling back on "hi < -t" (not "hi < 0") keeps the two outcomes exclusive: a canary shown
to lose less than the tolerance is exactly what non-inferiority accepts. Both arms are
compared over the canary's period only (its first to its last decision), so a trend in
time does not favour either. Caveat: re-checking a 95 % interval after every batch
("peeking") raises the false-decision rate; ``min_decisions`` limits how early it can fire.

Scores that are NaN or inf are left out of every score statistic and counted
(``ArmMetric.excluded``; shadow.py and drift.py do the same), never ranked or averaged.
Decisions but no outcome log: ``arm_metrics`` (and shadow.py's ``compare_shadow``) raise
``NoOutcomesError`` (a ValueError: every decision would read as a negative), the verdict is
WAIT with that reason. An unreadable log file is a ``LogFileError`` naming it
(offline/watch/logfiles.py); the CLI prints it as one line and exits 1.

CLI: ``python -m offline.watch.online --logs DIR --registry DIR [--use-case NAME]
[--now-ms MS] [--window 2s] [--min-decisions N] [--min-positives N] [--final]``: per use
case, the arm metrics with intervals, the canary verdicts and the shadow comparisons; exit 0
(1 with one line on stderr for an unreadable log file or an unknown use case).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from offline.engines import open_engine
from offline.engines.base import Engine
from offline.loop.publish_gate import flag_count, log_loss, recall_at_rate, roc_auc
from offline.loop.training_set import OUTCOME_CLOCK_SKEW_MS
from offline.use_cases.base import OnlineMetric
from offline.watch.logfiles import (
    LogFileError,
    NoOutcomesError,
    decision_files,
    outcome_files,
    require_outcomes,
)
from offline.watch.results import CANARY, LIVE, PROMOTE, ROLLBACK, WAIT, ArmMetric, CanaryVerdict, Interval

Z95 = 1.959963984540054
"""The standard normal's 97.5 % quantile."""
DEFAULT_BOOTSTRAP = 1000
DEFAULT_MIN_POSITIVES = 20
MAX_UNDEFINED_SHARE = 0.01
"""A bootstrap interval with more than this share of undefined replicates (a resample with no
positive, say) is not an interval: its bounds are NaN (undecided), not the percentiles of the
replicates that happened to be defined (those are biased towards resamples rich in positives)."""
_CELLS = 2_000_000  # bootstrap: replicates x rows computed at once (memory: a few x 16 MB)
_FEATURE_COLUMNS = ("user_features", "item_features", "cross_features", "features", "feature_names")
"""Logged feature vectors: never read by a metric, left out of the working copy of the rows."""


@dataclass(frozen=True)
class CanaryRule:
    """The promotion rule (see the module doc).

    ``min_decisions``: matured decisions each arm needs (in the metric's scope) before the rule
    decides anything; ``min_positives``: the evidence each arm needs in a bootstrapped metric
    (``positives_of``: the positive labels of a recall, the rarer label class of an AUC or
    log-loss, the hits of a bootstrapped rate) -- a few positives collapse the bootstrap to a
    near-zero-width interval; ``tolerance``: the non-inferiority margin for every gated metric
    (None: each metric's declared ``tolerance``); ``final``: the canary's time is up, so an
    undecided canary is rolled back; ``bootstrap`` / ``seed``: the bootstrap's replicates.
    """

    min_decisions: int = 500
    tolerance: float | None = None
    final: bool = False
    bootstrap: int = DEFAULT_BOOTSTRAP
    seed: int = 0
    min_positives: int = DEFAULT_MIN_POSITIVES


# ---------------------------------------------------------------------------------------------
# Intervals


def wilson(hits: int, n: int, z: float = Z95) -> Interval:
    """Wilson score interval of the proportion ``hits / n``; NaN estimate (0..1 bounds) when n = 0."""
    if n <= 0:
        return Interval(float("nan"), 0.0, 1.0, 0)
    p = hits / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if hits <= 0 else max(0.0, centre - half)
    high = 1.0 if hits >= n else min(1.0, centre + half)
    return Interval(p, low, high, n)


def newcombe(live: Interval, canary: Interval) -> Interval:
    """Newcombe's hybrid score interval (method 10) of ``canary - live`` from two Wilson
    intervals; n = the smaller arm."""
    p1, l1, u1 = live.estimate, live.low, live.high
    p2, l2, u2 = canary.estimate, canary.low, canary.high
    d = p2 - p1
    if math.isnan(d):
        return Interval(float("nan"), -1.0, 1.0, min(live.n, canary.n))
    low = d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2)
    high = d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)
    return Interval(d, low, high, min(live.n, canary.n))


def _percentile(reps: np.ndarray, estimate: float, n: int) -> Interval:
    """The percentile interval of the bootstrap replicates ``reps``. Undefined (NaN) replicates
    are counted (``Interval.undefined``); more than ``MAX_UNDEFINED_SHARE`` of them, or a NaN
    estimate: NaN bounds (undecided). The interval is widened to hold the estimate (a skewed
    resampling distribution can leave it outside; widening only makes the rule more cautious)."""
    finite = reps[np.isfinite(reps)]
    undefined = int(len(reps) - len(finite))
    if math.isnan(estimate) or len(finite) == 0 or undefined > MAX_UNDEFINED_SHARE * len(reps):
        return Interval(estimate, float("nan"), float("nan"), n, undefined)
    low, high = np.percentile(finite, [2.5, 97.5])
    return Interval(estimate, min(float(low), estimate), max(float(high), estimate), n, undefined)


def _user_counts(n_users: int, replicates: int, rng: np.random.Generator, width: int) -> Iterator[np.ndarray]:
    """Chunks of [b, n_users] draw counts (b * ``width`` <= _CELLS): each replicate resamples
    the users with replacement."""
    p = np.full(n_users, 1.0 / n_users)
    chunk = max(1, min(replicates, _CELLS // max(width, 1)))
    for start in range(0, replicates, chunk):
        yield rng.multinomial(n_users, p, size=min(chunk, replicates - start)).astype(np.float64)


def weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC with row weights, for each row of ``weights`` [b, n] (ties count one half);
    NaN where a class has no weight, and everywhere when a score is NaN (as
    ``publish_gate.roc_auc``, which it equals for unit weights; the watch leaves non-finite
    scores out before, counting them)."""
    labels = np.asarray(labels, bool)
    if np.isnan(np.asarray(scores, np.float64)).any():
        return np.full(np.atleast_2d(weights).shape[0], np.nan)
    w = np.atleast_2d(np.asarray(weights, np.float64))
    order = np.argsort(scores, kind="stable")
    s, y, w = np.asarray(scores, np.float64)[order], labels[order], w[:, order]
    starts = np.r_[0, np.flatnonzero(s[1:] != s[:-1]) + 1] if len(s) else np.zeros(0, np.int64)
    if not len(s):
        return np.full(w.shape[0], np.nan)
    pos = np.add.reduceat(w * y, starts, axis=1)
    neg = np.add.reduceat(w * ~y, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (total_pos * total_neg)
    return np.where((total_pos > 0) & (total_neg > 0), auc, np.nan)


def weighted_recall_at_rate(
    labels: np.ndarray, scores: np.ndarray, weights: np.ndarray, rate: float, seed: int = 0
) -> np.ndarray:
    """``publish_gate.recall_at_rate`` with row weights (a row of weight w is w copies), for
    each row of ``weights`` [b, n]: the top ``flag_count(rate, total weight)`` are flagged (the
    publish gate's one definition; a row straddling the cut counts in part; ties broken at
    random as there, seeded)."""
    labels = np.asarray(labels, bool)
    w = np.atleast_2d(np.asarray(weights, np.float64))
    tie = np.random.default_rng(seed).random(len(labels))
    order = np.lexsort((tie, -np.asarray(scores, np.float64)))
    y, w = labels[order], w[:, order]
    n_flag = flag_count(rate, w.sum(axis=1))[:, None]
    before = np.cumsum(w, axis=1) - w
    flagged = np.clip(n_flag - before, 0.0, w)
    positives = (w * y).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = (flagged * y).sum(axis=1) / positives
    return np.where(positives > 0, recall, np.nan)


def weighted_log_loss(labels: np.ndarray, probabilities: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``publish_gate.log_loss`` with row weights, for each row of ``weights`` [b, n]."""
    y = np.asarray(labels, np.float64)
    p = np.clip(np.asarray(probabilities, np.float64), 1e-15, 1 - 1e-15)
    loss = -(y * np.log(p) + (1 - y) * np.log1p(-p))
    w = np.atleast_2d(np.asarray(weights, np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w * loss).sum(axis=1) / w.sum(axis=1)


# ---------------------------------------------------------------------------------------------
# One arm's rows -> its estimate, interval and bootstrap replicates


@dataclass(frozen=True)
class _Rows:
    """One arm's matured decisions in a metric's scope (numpy, one entry per decision)."""

    users: np.ndarray  # int [n]: user index 0..n_users-1
    n_users: int
    hits: np.ndarray  # float [n]
    units: np.ndarray  # float [n]
    score: np.ndarray  # float [n] (NaN: no score expression)
    label: np.ndarray  # bool [n]: positives > 0
    excluded: int = 0  # decisions in scope left out for a non-finite score

    @property
    def n(self) -> int:
        return len(self.users)


def positives_of(metric: OnlineMetric, r: _Rows) -> int:
    """The evidence behind a metric's value on one arm, which ``CanaryRule.min_positives``
    bounds: a rate's hits (sum); a recall's positive labels; an AUC's or log-loss's rarer
    label class (both classes are needed)."""
    if metric.statistic == "rate":
        return int(round(float(r.hits.sum())))
    pos = int(r.label.sum())
    if metric.statistic == "recall_at_rate":
        return pos
    return min(pos, r.n - pos)


def _proportion(metric: OnlineMetric, rows: Sequence[_Rows]) -> bool:
    """A proportion of decisions: declared one unit per decision and no item list, and every
    hit 0/1 in the data (else the bootstrap)."""
    if metric.statistic != "rate" or metric.units.strip() != "1" or metric.items:
        return False
    return all(np.all(r.units == 1) and np.all((r.hits == 0) | (r.hits == 1)) for r in rows if r.n)


def _estimate(metric: OnlineMetric, r: _Rows) -> float:
    if r.n == 0:
        return float("nan")
    if metric.statistic == "rate":
        total = r.units.sum()
        return float(r.hits.sum() / total) if total > 0 else float("nan")
    if metric.statistic == "recall_at_rate":
        return recall_at_rate(r.label, r.score, metric.flag_rate)
    if metric.statistic == "auc":
        return roc_auc(r.label, r.score)
    return log_loss(r.label, r.score)


def _replicates(metric: OnlineMetric, r: _Rows, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """The statistic on ``replicates`` resamples of the arm's users (NaN when it is empty)."""
    if r.n == 0:
        return np.full(replicates, np.nan)
    out = []
    if metric.statistic == "rate":
        h = np.bincount(r.users, r.hits, r.n_users)
        u = np.bincount(r.users, r.units, r.n_users)
        for c in _user_counts(r.n_users, replicates, rng, r.n_users):
            with np.errstate(invalid="ignore", divide="ignore"):
                out.append((c @ h) / (c @ u))
        return np.concatenate(out)
    for c in _user_counts(r.n_users, replicates, rng, r.n):
        w = c[:, r.users]
        if metric.statistic == "recall_at_rate":
            out.append(weighted_recall_at_rate(r.label, r.score, w, metric.flag_rate))
        elif metric.statistic == "auc":
            out.append(weighted_auc(r.label, r.score, w))
        else:
            out.append(weighted_log_loss(r.label, r.score, w))
    return np.concatenate(out)


def _interval(
    metric: OnlineMetric, r: _Rows, proportion: bool, replicates: int, rng: np.random.Generator
) -> tuple[Interval, np.ndarray | None, str]:
    """(interval, bootstrap replicates or None, method)."""
    if proportion and metric.statistic == "rate":
        return wilson(int(r.hits.sum()), r.n), None, "wilson"
    reps = _replicates(metric, r, replicates, rng)
    return _percentile(reps, _estimate(metric, r), r.n), reps, "bootstrap over users"


def rate_interval(
    hits: np.ndarray,
    units: np.ndarray,
    users: Sequence[str] | np.ndarray,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> Interval:
    """sum(hits) / sum(units) over decisions ([n] each, ``users`` the decision's user) with its
    95 % interval: Wilson when every unit is 1 and every hit 0/1, else the percentile
    bootstrap over users (``bootstrap`` replicates, seeded). n = decisions."""
    hits = np.asarray(hits, np.float64)
    units = np.asarray(units, np.float64)
    _, inv = np.unique(np.asarray(users).astype(str), return_inverse=True)
    rows = _Rows(
        inv, int(inv.max()) + 1 if len(inv) else 0, hits, units, np.full(len(hits), np.nan), hits > 0, 0
    )
    metric = OnlineMetric("rate", "", ("-",), 0.0)
    value, _, _ = _interval(metric, rows, _proportion(metric, [rows]), bootstrap, np.random.default_rng(seed))
    return value


# ---------------------------------------------------------------------------------------------
# Reading the logs


def _sql_list(values: Sequence[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values) or "null"


def log_now_ms(log_root: str | Path, use_case: str) -> int | None:
    """The newest time in ``use_case``'s logs: the latest decision or received outcome (ms), or
    None when there are none."""
    files = decision_files(log_root, use_case)
    o_files = outcome_files(log_root, use_case)
    if not files and not o_files:
        return None
    with _engine() as eng:
        times = []
        if files:
            src = eng.register_parquet("d", files)
            times.append(eng.sql(f"select max(epoch_ms(decided_at)) as t from {src}").column("t")[0].as_py())
        if o_files:
            src = eng.register_parquet("o", o_files)
            times.append(eng.sql(f"select max(epoch_ms(received_at)) as t from {src}").column("t")[0].as_py())
    known = [int(t) for t in times if t is not None]
    return max(known) if known else None


@contextlib.contextmanager
def _engine() -> Iterator[Engine]:
    eng = open_engine("duckdb")
    try:
        yield eng
    finally:
        eng.close()


def _metric_table(
    eng: Engine,
    log_root: str | Path,
    use_case: str,
    metric: OnlineMetric,
    now_ms: int,
    window_ms: int,
    since_ms: int | None,
    until_ms: int | None,
) -> pa.Table:
    """Per matured decision in scope: user_id, arm, version, hits, units, score, label."""
    files = decision_files(log_root, use_case)
    src = eng.register_parquet("decisions", files)
    cols = set(eng.columns(src))
    arm = "coalesce(arm, 'live')" if "arm" in cols else "'live'"
    user = "coalesce(user_id, decision_id)" if "user_id" in cols else "decision_id"
    items = f"({metric.items})" if metric.items else "null::varchar[]"
    where = [f"epoch_ms(decided_at) + {window_ms} <= {now_ms}"]
    if since_ms is not None:
        where.append(f"epoch_ms(decided_at) >= {int(since_ms)}")
    if until_ms is not None:
        where.append(f"epoch_ms(decided_at) <= {int(until_ms)}")
    heavy = [c for c in _FEATURE_COLUMNS if c in cols]
    star = f"* exclude ({', '.join(heavy)})" if heavy else "*"
    d = eng.materialize(
        "matured",
        f"""select {star}, epoch_ms(decided_at) as _decided_ms, {arm} as _arm, {user} as _user,
                   {items} as _items
            from {src}
            where {" and ".join(where)}
            qualify row_number() over (partition by decision_id order by decided_at) = 1""",
    )
    o_files = outcome_files(log_root, use_case)
    types = _sql_list(metric.outcome_types)
    verdict_types = _sql_list([t for t, _ in metric.verdicts])
    positive_verdicts = _sql_list([t for t, v in metric.verdicts if v])
    if o_files:
        o = eng.register_parquet("outcomes", o_files)
        counted = "count(distinct o.item_id)" if metric.items else "1"
        item_ok = "and list_contains(d._items, o.item_id)" if metric.items else ""
        pos = eng.materialize(
            "positives",
            f"""select o.decision_id, {counted} as n
                from {o} o join {d} d on o.decision_id = d.decision_id
                where o.type in ({types}) and epoch_ms(o.received_at) <= {now_ms}
                  and epoch_ms(o.occurred_at) <= d._decided_ms + {window_ms}
                  and epoch_ms(o.occurred_at) >= d._decided_ms - {OUTCOME_CLOCK_SKEW_MS}
                  {item_ok}
                group by o.decision_id""",
        )
        ver = eng.materialize(
            "verdicts",
            f"""select decision_id, arg_max(type, struct_pack(r := received_at, t := type)) as verdict
                from {o}
                where type in ({verdict_types}) and epoch_ms(received_at) <= {now_ms}
                group by decision_id""",
        )
    else:
        pos = eng.materialize("positives", "select null::varchar as decision_id, 0::bigint as n limit 0")
        ver = eng.materialize(
            "verdicts", "select null::varchar as decision_id, null::varchar as verdict limit 0"
        )
    score = f"({metric.score})::double" if metric.score else "null::double"
    return eng.sql(
        f"""with j as (
                select d.*, case when v.verdict is not null then (v.verdict in ({positive_verdicts}))::int
                                 else coalesce(p.n, 0) end as positives
                from {d} d left join {pos} p on p.decision_id = d.decision_id
                left join {ver} v on v.decision_id = d.decision_id
            )
            select _user as user_id, _arm as arm, model_version as version,
                   ({metric.hits})::double as hits, ({metric.units})::double as units,
                   {score} as score, positives > 0 as label
            from j
            where coalesce(({metric.scope}), false){f" and {score} is not null" if metric.score else ""}"""
    )


def _split(table: pa.Table, scored: bool = False) -> dict[tuple[str, str], _Rows]:
    """(arm, version) -> rows; user indices per group. ``scored`` (a score statistic): rows
    with a non-finite score (NaN, inf: the SQL filter lets NaN through) are left out and
    counted in ``_Rows.excluded`` -- one rule for every score statistic here (``roc_auc``
    would turn one NaN into a NaN AUC, ``recall_at_rate`` would rank it last)."""
    arms = np.asarray(table.column("arm").to_pylist(), dtype=object)
    versions = np.asarray([v if v is not None else "" for v in table.column("version").to_pylist()], object)
    users = np.asarray(table.column("user_id").to_pylist(), dtype=object)
    hits = np.nan_to_num(table.column("hits").to_numpy(zero_copy_only=False).astype(np.float64))
    units = np.nan_to_num(table.column("units").to_numpy(zero_copy_only=False).astype(np.float64))
    score = table.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    label = table.column("label").to_numpy(zero_copy_only=False).astype(bool)
    out: dict[tuple[str, str], _Rows] = {}
    for key in sorted({(str(a), str(v)) for a, v in zip(arms, versions, strict=True)}):
        group = (arms == key[0]) & (versions == key[1])
        m = group & np.isfinite(score) if scored else group
        excluded = int(group.sum() - m.sum())
        _, inv = np.unique(users[m].astype(str), return_inverse=True)
        out[key] = _Rows(
            inv, int(inv.max()) + 1 if len(inv) else 0, hits[m], units[m], score[m], label[m], excluded
        )
    return out


def _empty_rows() -> _Rows:
    z = np.zeros(0)
    return _Rows(np.zeros(0, np.int64), 0, z, z, z, np.zeros(0, bool), 0)


# ---------------------------------------------------------------------------------------------
# Public API


def online_metrics_of(use_case: str) -> tuple[OnlineMetric, ...]:
    """The ``online_metrics`` the offline use case ``use_case`` declares (may be empty).
    On failure: ValueError for an unknown use case."""
    from offline.use_cases import by_name

    return tuple(getattr(by_name(use_case), "online_metrics", ()) or ())


def _window_ms(metric: OnlineMetric, window_s: float | None) -> int:
    return int(round((metric.window_s if window_s is None else window_s) * 1000))


def _resolve_now(log_root: str | Path, use_case: str, now_ms: int | None) -> int | None:
    return int(now_ms) if now_ms is not None else log_now_ms(log_root, use_case)


def _arm_order(key: tuple[str, str]) -> tuple[int, str, str]:
    return ({LIVE: 0, CANARY: 1}.get(key[0], 2), key[0], key[1])


def arm_metrics(
    log_root: str | Path,
    use_case: str,
    now_ms: int | None = None,
    since_ms: int | None = None,
    *,
    until_ms: int | None = None,
    window_s: float | None = None,
    metrics: Sequence[OnlineMetric] | None = None,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> list[ArmMetric]:
    """Every online metric of ``use_case`` per (arm, model version), on matured decisions.

    ``log_root``: holds ``decisions/use_case=<use_case>/`` and ``outcomes/use_case=<use_case>/``
    (local or an object-store URI). ``now_ms``: ms since the epoch; default the newest
    decision / received outcome in the logs. ``since_ms`` / ``until_ms``: only decisions
    decided in [since, until] (ms). ``window_s``: every metric's label window in seconds
    (default: each one's declared production window). ``metrics``: default the use case's
    declared ``online_metrics``. ``bootstrap`` replicates (seeded by ``seed``) for the
    intervals that are not Wilson.

    Returns one ``ArmMetric`` per metric and (arm, version) with at least one matured decision
    in the metric's scope, metrics in declared order, then live before canary, versions by
    name; ``value.n`` = those decisions; ``value.estimate`` NaN when unmeasurable (e.g. no
    positive for a recall), the bounds NaN when too many bootstrap resamples were (see
    ``MAX_UNDEFINED_SHARE``); ``excluded`` = decisions left out for a non-finite score;
    ``positives`` = ``positives_of``. Empty when there are no decision logs.
    On failure: ValueError for an unknown use case or a metric expression the logs cannot
    evaluate (DuckDB's message); ``NoOutcomesError`` (a ValueError) when there are decisions
    but no outcome log (every decision would read as a negative); ``LogFileError`` (a
    ValueError) naming an unreadable log file.
    """
    metrics = online_metrics_of(use_case) if metrics is None else tuple(metrics)
    if not metrics or not decision_files(log_root, use_case):
        return []
    require_outcomes(log_root, use_case)
    now = _resolve_now(log_root, use_case, now_ms)
    if now is None:
        return []
    rng = np.random.default_rng(seed)
    out: list[ArmMetric] = []
    with _engine() as eng:
        for metric in metrics:
            wms = _window_ms(metric, window_s)
            table = _query(eng, log_root, use_case, metric, now, wms, since_ms, until_ms)
            groups = _split(table, metric.score is not None)
            proportion = _proportion(metric, list(groups.values()))
            for key in sorted(groups, key=_arm_order):
                rows = groups[key]
                value, _, method = _interval(metric, rows, proportion, bootstrap, rng)
                out.append(
                    ArmMetric(
                        use_case, metric.name, key[0], key[1], value, metric.higher_is_better,
                        users=rows.n_users, method=method, window_s=wms / 1000,
                        excluded=rows.excluded, positives=positives_of(metric, rows),
                    )
                )  # fmt: skip
    return out


def _query(
    eng: Engine,
    log_root: str | Path,
    use_case: str,
    metric: OnlineMetric,
    now_ms: int,
    window_ms: int,
    since_ms: int | None,
    until_ms: int | None,
) -> pa.Table:
    try:
        return _metric_table(eng, log_root, use_case, metric, now_ms, window_ms, since_ms, until_ms)
    except LogFileError:
        raise
    except eng.errors as exc:
        raise ValueError(
            f"online metric {metric.name!r} of {use_case}: the logs cannot evaluate it: {exc}"
        ) from None


def _improvement(metric: OnlineMetric, diff: Interval) -> tuple[float, float]:
    """The difference's interval in the metric's better direction (> 0 = the canary is better)."""
    if metric.higher_is_better:
        return diff.low, diff.high
    return -diff.high, -diff.low


@dataclass(frozen=True)
class _Check:
    status: str  # "worse", "ok" or "undecided"
    difference: Interval  # canary - live
    reason: str
    live: Interval
    canary: Interval
    method: str


def _check(
    metric: OnlineMetric, live: _Rows, canary: _Rows, rule: CanaryRule, rng: np.random.Generator
) -> _Check:
    """One gated metric's part of the rule (module doc)."""
    proportion = _proportion(metric, [live, canary])
    live_i, live_reps, method = _interval(metric, live, proportion, rule.bootstrap, rng)
    canary_i, canary_reps, _ = _interval(metric, canary, proportion, rule.bootstrap, rng)
    if live_reps is None or canary_reps is None:
        diff = newcombe(live_i, canary_i)
    else:
        diff = _percentile(
            canary_reps - live_reps, canary_i.estimate - live_i.estimate, min(live.n, canary.n)
        )
    tol = metric.tolerance if rule.tolerance is None else rule.tolerance
    lo, hi = _improvement(metric, diff)
    name = metric.name
    span = f"{name} canary-live {diff.estimate:+.4f} [{diff.low:+.4f}, {diff.high:+.4f}] (tolerance {tol:g})"
    bootstrapped = live_reps is not None and canary_reps is not None
    pos_live, pos_canary = positives_of(metric, live), positives_of(metric, canary)
    undefined = diff.undefined
    if min(live.n, canary.n) < rule.min_decisions:
        status, why = (
            "undecided",
            f"{name}: too few matured decisions "
            f"(live {live.n}, canary {canary.n}; need {rule.min_decisions})",
        )
    elif bootstrapped and min(pos_live, pos_canary) < rule.min_positives:
        status, why = (
            "undecided",
            f"{name}: too few positives (live {pos_live}, canary {pos_canary}; need {rule.min_positives})",
        )
    elif bootstrapped and undefined > MAX_UNDEFINED_SHARE * rule.bootstrap:
        status, why = (
            "undecided",
            f"{name}: {undefined} of {rule.bootstrap} bootstrap resamples undefined "
            f"(e.g. no positive in an arm; more than {MAX_UNDEFINED_SHARE:.0%}): interval not reliable",
        )
    elif any(math.isnan(x) for x in (diff.estimate, lo, hi)):
        status, why = "undecided", f"{name}: not measurable yet (e.g. no positive outcome in an arm)"
    elif hi < -tol:
        status, why = "worse", f"{span}: worse beyond the tolerance"
    elif lo >= -tol:
        status, why = "ok", f"{span}: non-inferior"
    else:
        status, why = "undecided", f"{span}: the interval straddles -tolerance"
    return _Check(status, diff, why, live_i, canary_i, method)


def canary_verdict(
    log_root: str | Path,
    use_case: str,
    live_version: str,
    canary_version: str,
    rule: CanaryRule = CanaryRule(),
    now_ms: int | None = None,
    *,
    window_s: float | None = None,
    metrics: Sequence[OnlineMetric] | None = None,
) -> CanaryVerdict:
    """The promotion rule (module doc) for ``canary_version`` (arm "canary") against
    ``live_version`` (arm "live") of ``use_case``, over the canary's period in the logs.

    ``now_ms`` / ``window_s`` / ``metrics``: as ``arm_metrics``; only metrics with ``gate``
    decide. Returns a ``CanaryVerdict``: ``metric`` / ``difference`` = the deciding gated
    metric (the worse one for ROLLBACK, the first undecided one for WAIT / a final ROLLBACK,
    the first gated one for PROMOTE), ``difference`` = canary - live with its 95 % interval,
    ``checks`` every gated metric's difference, ``arms`` both arms' values of every gated
    metric. No canary decision in the logs: WAIT (ROLLBACK when ``rule.final``). Decisions
    but no outcome log (nothing labelled: every metric would read all-negative): WAIT with
    that reason (ROLLBACK when ``rule.final``), no metric computed.
    On failure: ValueError for an unknown use case, no gated metric, or a metric the logs
    cannot evaluate; ``LogFileError`` naming an unreadable log file.
    """
    metrics = online_metrics_of(use_case) if metrics is None else tuple(metrics)
    gated = [m for m in metrics if m.gate]
    if not gated:
        raise ValueError(f"{use_case} declares no gated online metric: nothing to judge a canary on")
    period = _canary_period(log_root, use_case, canary_version)
    now = _resolve_now(log_root, use_case, now_ms)
    if period is not None and not outcome_files(log_root, use_case):
        nan = Interval(float("nan"), float("nan"), float("nan"), 0)
        why = (
            f"no outcome log files under {log_root}/outcomes/use_case={use_case}: nothing labelled, "
            "no metric computed" + (" (final)" if rule.final else "")
        )
        return CanaryVerdict(
            use_case, live_version, canary_version, gated[0].name, nan, ROLLBACK if rule.final else WAIT, why
        )
    rng = np.random.default_rng(rule.seed)
    checks: list[tuple[OnlineMetric, _Check]] = []
    arms: list[ArmMetric] = []
    if period is not None and now is not None:
        with _engine() as eng:
            for metric in gated:
                wms = _window_ms(metric, window_s)
                groups = _split(
                    _query(eng, log_root, use_case, metric, now, wms, period[0], period[1]),
                    metric.score is not None,
                )
                live = groups.get((LIVE, live_version), _empty_rows())
                canary = groups.get((CANARY, canary_version), _empty_rows())
                check = _check(metric, live, canary, rule, rng)
                checks.append((metric, check))
                for arm, version, rows, value in (
                    (LIVE, live_version, live, check.live),
                    (CANARY, canary_version, canary, check.canary),
                ):
                    arms.append(
                        ArmMetric(
                            use_case, metric.name, arm, version, value, metric.higher_is_better,
                            users=rows.n_users, method=check.method, window_s=wms / 1000,
                            excluded=rows.excluded, positives=positives_of(metric, rows),
                        )
                    )  # fmt: skip
    if not checks:
        nan = Interval(float("nan"), float("nan"), float("nan"), 0)
        action = ROLLBACK if rule.final else WAIT
        why = f"no matured {CANARY} decision of {canary_version} in the logs" + (
            " (final)" if rule.final else ""
        )
        return CanaryVerdict(use_case, live_version, canary_version, gated[0].name, nan, action, why, ())
    worse = [c for c in checks if c[1].status == "worse"]
    undecided = [c for c in checks if c[1].status == "undecided"]
    if worse:
        deciding, action = worse[0], ROLLBACK
    elif not undecided:
        deciding, action = checks[0], PROMOTE
    else:
        deciding, action = undecided[0], ROLLBACK if rule.final else WAIT
    reason = "; ".join(c.reason for _, c in checks)
    if action == ROLLBACK and not worse:
        reason = f"final check, still undecided: {reason}"
    return CanaryVerdict(
        use_case,
        live_version,
        canary_version,
        deciding[0].name,
        deciding[1].difference,
        action,
        reason,
        tuple(arms),
        checks=tuple((m.name, c.difference) for m, c in checks),
    )


def _arm_versions(log_root: str | Path, use_case: str) -> pa.Table:
    """Per (arm, version): decisions, first and last decision time (ms)."""
    files = decision_files(log_root, use_case)
    if not files:
        return pa.table({"arm": [], "version": [], "n": [], "first_ms": [], "last_ms": []})
    with _engine() as eng:
        src = eng.register_parquet("decisions", files)
        arm = "coalesce(arm, 'live')" if "arm" in eng.columns(src) else "'live'"
        return eng.sql(
            f"""select {arm} as arm, model_version as version, count(*) as n,
                       min(epoch_ms(decided_at)) as first_ms, max(epoch_ms(decided_at)) as last_ms
                from {src} group by all order by first_ms, arm, version"""
        )


def _canary_period(log_root: str | Path, use_case: str, canary_version: str) -> tuple[int, int] | None:
    for row in _arm_versions(log_root, use_case).to_pylist():
        if row["arm"] == CANARY and row["version"] == canary_version:
            return int(row["first_ms"]), int(row["last_ms"])
    return None


def rollouts(
    log_root: str | Path, use_case: str, registry_root: str | Path | None = None
) -> list[tuple[str, str]]:
    """(live version, canary version) pairs present in ``use_case``'s decision logs, by the
    canary's first decision: every version logged on the canary arm, with the live version
    that served the live arm during the canary's period (the registry's CURRENT when it did,
    else the one with the most live decisions then). No canary: empty."""
    rows = _arm_versions(log_root, use_case).to_pylist()
    current = _current(registry_root, use_case)
    pairs = []
    for c in (r for r in rows if r["arm"] == CANARY):
        during = [
            r for r in rows
            if r["arm"] == LIVE and r["first_ms"] <= c["last_ms"] and r["last_ms"] >= c["first_ms"]
        ]  # fmt: skip
        if not during:
            during = [r for r in rows if r["arm"] == LIVE]
        if not during:
            continue
        names = [r["version"] for r in during]
        live = current if current in names else max(during, key=lambda r: r["n"])["version"]
        pairs.append((str(live), str(c["version"])))
    return pairs


def _current(registry_root: str | Path | None, use_case: str) -> str | None:
    if registry_root is None:
        return None
    from decision_service.models.registry import ModelRegistry, RegistryError

    try:
        return ModelRegistry(registry_root).current_name(use_case)
    except (RegistryError, OSError, ValueError):
        return None


def canary_verdicts(
    log_root: str | Path,
    registry_root: str | Path | None,
    use_case: str,
    rule: CanaryRule = CanaryRule(),
    now_ms: int | None = None,
    *,
    window_s: float | None = None,
) -> list[CanaryVerdict]:
    """``canary_verdict`` for every (live, canary) pair ``rollouts`` finds in the logs (the
    registry, when given, names CURRENT: the preferred live version). Empty when no decision
    was served on the canary arm or the use case gates on no metric. On failure: as
    ``canary_verdict``."""
    if not any(m.gate for m in online_metrics_of(use_case)):
        return []
    return [
        canary_verdict(log_root, use_case, live, canary, rule, now_ms, window_s=window_s)
        for live, canary in rollouts(log_root, use_case, registry_root)
    ]


# ---------------------------------------------------------------------------------------------
# CLI


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def format_arm_metrics(rows: Sequence[ArmMetric]) -> list[str]:
    """A readable table of arm metrics (one line each)."""
    if not rows:
        return ["  no matured decisions"]
    head = f"  {'metric':<28} {'arm':<7} {'version':<10} {'value':>8}  {'95% interval':<18} "
    lines = [head + f"{'decisions':>9} {'users':>7}  method"]
    for r in rows:
        v = r.value
        span = f"[{_fmt(v.low)}, {_fmt(v.high)}]"
        lines.append(
            f"  {r.metric:<28} {r.arm:<7} {r.version:<10} {_fmt(v.estimate):>8}  {span:<18} "
            f"{v.n:>9} {r.users:>7}  {r.method}"
        )
    for r in rows:
        if r.excluded:
            lines.append(f"  {r.metric} {r.arm} {r.version}: {r.excluded} left out (NaN / inf score)")
        if r.value.undefined:
            lines.append(
                f"  {r.metric} {r.arm} {r.version}: {r.value.undefined} bootstrap resamples undefined"
                + (" (interval n/a)" if math.isnan(r.value.low) else "")
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    from offline.loop.training_set import parse_duration_s
    from offline.use_cases import OFFLINE_USE_CASES

    ap = argparse.ArgumentParser(prog="python -m offline.watch.online", description=__doc__.splitlines()[0])
    ap.add_argument("--logs", required=True, help="log root (decisions/, outcomes/, shadow/ below it)")
    ap.add_argument("--registry", default=None, help="model registry root (names CURRENT)")
    ap.add_argument(
        "--use-case", action="append", default=None, help="default: every use case of the project"
    )
    ap.add_argument("--now-ms", type=int, default=None, help="default: the newest time in the logs")
    ap.add_argument(
        "--window", default=None, help="every label window, e.g. 2s (the flywheel's); default declared"
    )
    ap.add_argument("--min-decisions", type=int, default=CanaryRule.min_decisions)
    ap.add_argument(
        "--min-positives", type=int, default=CanaryRule.min_positives,
        help="positives each arm needs in a bootstrapped metric before the rule decides on it",
    )  # fmt: skip
    ap.add_argument("--tolerance", type=float, default=None, help="default: each metric's declared one")
    ap.add_argument("--final", action="store_true", help="the canary's time is up: undecided -> rollback")
    ap.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP)
    args = ap.parse_args(argv)
    window_s = parse_duration_s(args.window) if args.window else None
    rule = CanaryRule(
        args.min_decisions, args.tolerance, args.final, args.bootstrap, min_positives=args.min_positives
    )
    names = args.use_case or [uc.name for uc in OFFLINE_USE_CASES]
    try:
        for name in names:
            _print_use_case(args, name, rule, window_s)
    except (ValueError, OSError) as exc:  # LogFileError (names the file), unknown use case, ...
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _section(fn: Callable[[], list[str]]) -> list[str]:
    """A section's lines; a use case without outcomes says so in the section (not an error)."""
    try:
        return fn()
    except NoOutcomesError as exc:
        return [f"  not available: {exc}"]


def _print_use_case(args: argparse.Namespace, name: str, rule: CanaryRule, window_s: float | None) -> None:
    from offline.watch.shadow import compare_shadow, format_shadow

    print(f"== {name}")
    now = args.now_ms if args.now_ms is not None else log_now_ms(args.logs, name)
    print(
        f"  as of {now if now is not None else 'n/a (no logs)'} ms"
        + (f", windows {window_s:g} s" if window_s is not None else "")
    )
    print("-- arm metrics (matured decisions, 95 % intervals)")
    for line in _section(
        lambda: format_arm_metrics(
            arm_metrics(args.logs, name, now, window_s=window_s, bootstrap=args.bootstrap)
        )
    ):
        print(line)
    print("-- canary")
    verdicts = canary_verdicts(args.logs, args.registry, name, rule, now, window_s=window_s)
    if not verdicts:
        print("  no canary in the logs")
    for v in verdicts:
        d = v.difference
        print(
            f"  {v.canary_version} vs live {v.live_version}: {v.action.upper()} on {v.metric} "
            f"(canary-live {_fmt(d.estimate)} [{_fmt(d.low)}, {_fmt(d.high)}])"
        )
        print(f"    {v.reason}")
    print("-- shadow")
    for line in _section(lambda: format_shadow(compare_shadow(args.logs, name, now, window_s=window_s))):
        print(line)


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "CanaryRule",
    "arm_metrics",
    "canary_verdict",
    "canary_verdicts",
    "log_now_ms",
    "newcombe",
    "online_metrics_of",
    "positives_of",
    "rate_interval",
    "rollouts",
    "weighted_auc",
    "weighted_log_loss",
    "weighted_recall_at_rate",
    "wilson",
]
