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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc


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


class OfflineUseCase(Protocol):
    """One use case's offline hooks. ``name`` is its online ``UseCase.name``."""

    name: str
    title: str  # the demo / flywheel banner, e.g. "conversion: will this user purchase in 7 days"
    columns: tuple[tuple[str, int], ...]  # the flywheel table's columns of this use case (key, width)
    label_wait_s: float  # seconds the flywheel waits after a turn so its (compressed) label windows close

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

    def learn(self, state: Any, logs: Path, out_dir: Path, turn: int) -> Learned:
        """Organize + learn: the training set from the decision and outcome logs under
        ``logs``, a candidate, the publish gate against CURRENT on the same held-out rows."""
        ...

    def served_version(self, stub: pb_grpc.DecisionServiceStub) -> str:
        """The model version the server answers this use case with now (one probe request)."""
        ...
