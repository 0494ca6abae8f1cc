"""The offline half of the use-case seam: what a use case gives the demo and the flywheel.

The online half (``decision_service.use_cases.UseCase``) serves, logs and attributes; this
half bootstraps a use case on the synthetic shop, shows it in ``make demo``, and turns it in
``make flywheel``: decide + collect (``turn``), organize + learn (``learn``: training set
from the logs, retrain, publish gate), and reports the version the server then serves.
``offline/runs/demo.py`` and ``offline/runs/flywheel.py`` iterate over
``offline.use_cases.OFFLINE_USE_CASES`` and name no use case.

Shared by every use case of one run: a ``Workspace`` (one registry, one Redis, one synthetic
shop world, generated and bootstrapped ONCE by the runner before any hook of a use case:
``offline.runs.workspace.new_workspace`` -> ``offline/runs/bootstrap.py``: users, items,
events, their features and embeddings in Redis, the FAISS index, and the recommendation
ranker published as CURRENT, which the server needs to start; so the recommendation
``bootstrap`` adds nothing). A use case keeps its own files under ``ws.dir(name)`` (the
fraud payments world stays at ``<data_dir>/fraud_world``, where the load tests read it).

The flywheel's row of a turn: ``turn``, every use case's ``turn`` fields, then per learn
step ``<name>_training_rows``, ``<name>_offline_metric`` (``Learned.current``),
``<name>_candidate_metric``, ``<name>_published`` and ``Learned.extra`` (which may override
them); its table and JSON summary show the ``columns`` each use case declares. A use case's
settings (``--set <name>.<field>=<value>`` in the flywheel) are the fields of its frozen
dataclass, when it is one.

Watching a rollout (offline/watch/online.py, offline/watch/shadow.py, which name no use case)
reads two declarations of each use case, class constants (``ClassVar``, not settings):

* ``online_metrics``: the ``OnlineMetric`` s a canary is judged on, per arm, on MATURED
  decisions only (decided at least the metric's label window before "now"). The first
  metric with ``gate=True`` heads the report; every gated one must be non-inferior for a
  PROMOTE, any one confidently worse means ROLLBACK; ``gate=False`` ones are reported only.
  A metric is SQL over one decision log row plus ``positives`` (see ``OnlineMetric``) and one
  statistic: a ``rate`` (sum of ``hits`` / sum of ``units``), ``recall_at_rate``, ``auc``
  or ``log_loss`` of a per-decision ``score`` against ``positives > 0``.
* ``shadow_metric``: a ``ShadowMetric``: where the served scores are in the decision log
  (lined up with the shadow log's ``shadow_scores``), the matured labelled rows the
  publish gate would evaluate on, and the gate's headline metric over them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:  # annotations only
    import numpy as np
    import pyarrow as pa


@dataclass(frozen=True)
class Workspace:
    """Where one demo or flywheel run works."""

    data_dir: Path  # the run's folder
    registry_dir: Path  # the model registry the server reads (every use case publishes here)
    redis_url: str  # the online store the server reads
    world_dir: Path  # the synthetic shop world (offline.simulation.world), bootstrapped
    preset: str = "small"  # world size: tiny, small, bench
    threads: int = 2
    seed: int = 0

    def dir(self, name: str) -> Path:
        """A use case's own folder in this run (created)."""
        path = self.data_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class Learned:
    """What one learn step (training set -> retrain -> publish gate) did."""

    training_rows: int  # labelled rows the candidate was trained and evaluated on
    metric: str  # the gate's headline metric, e.g. "ndcg@10", "auc"
    current: float | None  # CURRENT's value on the held-out rows (None: nothing to compare)
    candidate: float | None  # the candidate's value on the same rows
    published: str | None  # the new version, or None when the gate refused / nothing to learn
    lines: list[str] = field(default_factory=list)  # what to print (report and gate summary)
    extra: dict[str, Any] = field(default_factory=dict)  # more row fields (see the module doc)


STATISTICS = ("rate", "recall_at_rate", "auc", "log_loss")
"""What an ``OnlineMetric`` computes per arm (offline/watch/online.py)."""


@dataclass(frozen=True)
class OnlineMetric:
    """One online metric of a use case, computed per (arm, model version) on matured decisions.

    Each matured decision (``decided_at + window_s <= now``; the window is overridable per
    call, e.g. the flywheel's compressed seconds) gets ``positives``: with ``items`` (SQL over
    the decision row giving a list of item ids), the number of those items with an outcome of
    ``outcome_types`` that occurred within the window; without, 1 when the decision has one
    (0 otherwise). ``verdicts`` ((outcome type, label) pairs): the latest received one overrides
    ``positives`` (1 / 0) whenever it arrived. Outcomes received after "now" are ignored.

    ``statistic``:
      * ``rate``: sum(``hits``) / sum(``units``) over the arm's decisions in ``scope`` (SQL
        over the row and ``positives``). 95 % CI: Wilson when every unit is 1 and every hit
        0/1 (a proportion of decisions), else a percentile bootstrap over users (users are
        the randomisation unit of a canary).
      * ``recall_at_rate``: the publish gate's ``recall_at_rate(positives > 0, score,
        flag_rate)``: the share of the positives among the top ``flag_rate`` of ``score``.
      * ``auc`` / ``log_loss``: the publish gate's ``roc_auc`` / ``log_loss`` of ``score``
        against ``positives > 0``.
      Score statistics: CI by the bootstrap over users.
    ``tolerance``: the canary's non-inferiority margin, in the metric's units (absolute).
    """

    name: str
    description: str
    outcome_types: tuple[str, ...]
    window_s: float
    statistic: str = "rate"
    hits: str = "positives"
    units: str = "1"
    items: str | None = None
    scope: str = "true"
    score: str | None = None
    flag_rate: float = 0.05
    verdicts: tuple[tuple[str, bool], ...] = ()
    higher_is_better: bool = True
    tolerance: float = 0.0
    gate: bool = True

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise ValueError(f"online metric {self.name!r}: statistic {self.statistic!r} not in {STATISTICS}")
        if self.statistic != "rate" and not self.score:
            raise ValueError(f"online metric {self.name!r}: a {self.statistic} needs a score expression")
        if not self.outcome_types or self.window_s < 0 or self.tolerance < 0:
            raise ValueError(
                f"online metric {self.name!r}: needs outcome types, a window >= 0 and a tolerance >= 0"
            )


@dataclass(frozen=True)
class ShadowMetric:
    """How a shadow version is compared with the served one on the same decisions.

    ``live_scores``: SQL over the decision log row giving the served scores as a list, in the
    order of the shadow log's ``shadow_scores`` (e.g. ``"scores"``, ``"[probability]"``).
    ``items``: SQL over the decision log row giving the candidates' item ids when the scores
    are per candidate (in that order; rank agreement is then the top-``top_k`` overlap of
    the two orderings of each decision's candidates); None: one score per decision (rank
    agreement is Spearman over decisions).
    ``labelled(log_root, as_of_ms, window_s)``: the matured rows the publish gate evaluates
    on, built by the use case's training-set code: columns ``decision_id``, ``item_id``
    (per-item use cases; else absent or NULL), ``label`` (float: relevance or 0/1) and
    ``weight`` (float); ``window_s`` None = the production label windows.
    ``evaluate(labels, weights, groups, scores)``: the gate's headline metric (float arrays
    [rows], ``groups`` int decision ids) -- NaN when it cannot be measured.
    """

    name: str  # e.g. "ndcg@10", "auc"
    live_scores: str
    labelled: Callable[[str | Path, int, float | None], pa.Table]
    evaluate: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], float]
    items: str | None = None
    top_k: int = 10


class OfflineUseCase(Protocol):
    """One use case's offline hooks. ``name`` is its online ``UseCase.name``."""

    name: str
    title: str  # the demo / flywheel banner, e.g. "conversion: will this user purchase in 7 days"
    columns: tuple[tuple[str, int], ...]  # the flywheel table's columns of this use case (key, width)
    label_wait_s: float  # seconds the flywheel waits after a turn so its (compressed) label windows close
    online_metrics: ClassVar[tuple[OnlineMetric, ...]]  # a canary's metrics (see the module doc)
    shadow_metric: ClassVar[ShadowMetric | None]  # shadow vs live (None: no shadow comparison)

    def bootstrap(self, ws: Workspace) -> None:
        """``make demo``, after the shared bootstrap: its own features into Redis and a trained
        model published as CURRENT (nothing when the shared bootstrap did it)."""
        ...

    def demo(self, stub: pb_grpc.DecisionServiceStub, ws: Workspace) -> None:
        """``make demo``: prints a few real GetDecision calls (and a bad-input one)."""
        ...

    def requests(self, ws: Workspace, n: int, seed: int = 0) -> list[pb.GetDecisionRequest]:
        """``n`` typical requests (the demo times them per stage)."""
        ...

    def start(self, ws: Workspace, turns: int, per_turn: int) -> Any:
        """``make flywheel``: its data and a deliberately weak starting model published as
        CURRENT; returns the state ``turn`` and ``learn`` work on."""
        ...

    def turn(self, stub: pb_grpc.DecisionServiceStub, state: Any) -> dict[str, Any]:
        """Decide + collect: one turn of simulated traffic through GetDecision, what the
        simulated world did afterwards through RecordOutcome; the turn's row fields."""
        ...

    def learn(self, state: Any, logs: Path, out_dir: Path, turn: int, make_current: bool = True) -> Learned:
        """Organize + learn: the training set from the decision and outcome logs under
        ``logs``, a candidate, the publish gate against CURRENT on the same held-out rows.
        ``make_current``: False publishes a passing candidate without moving CURRENT (the
        flywheel then rolls it out: shadow, canary, offline/runs/flywheel.py)."""
        ...

    def served_version(self, stub: pb_grpc.DecisionServiceStub) -> str:
        """The model version the server answers this use case with now (one probe request)."""
        ...
