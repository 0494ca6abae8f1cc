"""What the watch jobs return: plain, frozen data (no I/O), drawn by the report and printed by
the CLI and the flywheel.

Conventions: times are ms since the epoch (UTC); ``arm`` is ``"live"`` (CURRENT) or
``"canary"``; a metric's ``Interval`` is a two-sided 95 % confidence interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LIVE = "live"
CANARY = "canary"
PROMOTE = "promote"
ROLLBACK = "rollback"
WAIT = "wait"  # not enough matured evidence either way yet


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95 % confidence interval over ``n`` units (decisions)."""

    estimate: float
    low: float
    high: float
    n: int
    undefined: int = 0  # bootstrap: replicates where the statistic was undefined (e.g. no positive)


@dataclass(frozen=True)
class ArmMetric:
    """One online metric of one arm (or one version) on matured decisions."""

    use_case: str
    metric: str  # e.g. "ctr", "purchases_per_decision", "fraud_caught_at_review_rate"
    arm: str  # LIVE or CANARY
    version: str
    value: Interval
    higher_is_better: bool = True
    users: int = 0  # distinct users behind ``value.n`` decisions (the randomisation unit)
    method: str = ""  # how the interval was computed: "wilson" or "bootstrap over users"
    window_s: float | None = None  # the label window a decision had to clear to count
    excluded: int = 0  # matured decisions in scope left out for a non-finite (NaN, inf) score
    positives: int = 0  # the evidence count the canary rule's min_positives checks (see online.py)


@dataclass(frozen=True)
class CanaryVerdict:
    """The promotion rule's answer for a canary: PROMOTE, ROLLBACK or WAIT, and why."""

    use_case: str
    live_version: str
    canary_version: str
    metric: str
    difference: Interval  # canary - live (in the metric's direction: > 0 is better when higher_is_better)
    action: str  # PROMOTE, ROLLBACK or WAIT
    reason: str
    arms: tuple[ArmMetric, ...] = ()
    checks: tuple[tuple[str, Interval], ...] = ()  # every gated metric: (name, canary - live)


@dataclass(frozen=True)
class ShadowComparison:
    """A shadow version against the live one on the same decisions."""

    use_case: str
    live_version: str
    shadow_version: str
    decisions: int  # decisions with a shadow score
    score_correlation: float  # Pearson over every (decision, candidate) score pair
    rank_agreement: float  # recommendation: mean top-k overlap; else Spearman over decisions
    metric: str  # the publish gate's headline metric, e.g. "ndcg@10", "auc"
    live_metric: float | None  # on the matured decisions (None: none matured yet)
    shadow_metric: float | None
    matured_decisions: int = 0
    skipped: int = 0  # decisions of the period the shadow did not score (load, errors)
    spearman: float | None = None  # per item: mean per-decision Spearman; else = rank_agreement
    misaligned: int = 0  # shadow rows whose score count differs from the decision log's (left out)
    non_finite: int = 0  # decisions left out because a live or shadow score is NaN / inf


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's served distribution against its training distribution (the version's
    feature profile): PSI over the profile's bins."""

    use_case: str
    version: str
    group: str  # the feature group / log vector it is read from, e.g. "user", "item", "fraud"
    feature: str
    psi: float
    level: str  # "ok" (< 0.1), "moderate" (< 0.25) or "major"
    served: int  # values compared
    default_share: float  # share of served values equal to the declared default / missing
    training_default_share: float | None = None  # the same share in the profile (None: unknown)


@dataclass(frozen=True)
class ScoreDistribution:
    """The served scores of one version (and arm): a histogram over fixed edges."""

    use_case: str
    version: str
    arm: str
    edges: tuple[float, ...]
    counts: tuple[int, ...]
    mean: float
    psi: float | None = None  # against the version's training scores (None: no profile)
    level: str | None = None  # "ok", "moderate" or "major" (as FeatureDrift), None without a profile
    training_mean: float | None = None
    non_finite: int = 0  # served scores that are NaN / inf: left out of counts and mean, in PSI's missing bin


@dataclass(frozen=True)
class StatusShare:
    """Share of served rows of a feature group with a given status (present / missing /
    stale / invalid / unavailable / default)."""

    use_case: str
    group: str
    status: str
    share: float
    rows: int  # rows of the group with this status
    total: int = 0  # rows of the group (the share's denominator)


@dataclass(frozen=True)
class LabelHealth:
    """How far labels lag decisions, and how many decisions have matured."""

    use_case: str
    decisions: int
    matured_share: float  # decisions older than the longest label window (their labels are final)
    labelled_share: float  # decisions with at least one outcome
    delay_p50_s: float | None  # outcome time - decision time, over labelled outcomes
    delay_p90_s: float | None


@dataclass(frozen=True)
class LoopHealth:
    """Drift and health of the loop for one use case."""

    use_case: str
    drift: tuple[FeatureDrift, ...] = ()
    scores: tuple[ScoreDistribution, ...] = ()
    statuses: tuple[StatusShare, ...] = ()
    labels: LabelHealth | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)  # e.g. "v0003 has no feature profile"
