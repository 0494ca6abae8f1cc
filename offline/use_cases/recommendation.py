"""The recommendation use case, offline: its demo section and its flywheel turn.

Bootstrap: nothing of its own. The shared shop bootstrap (``offline/runs/bootstrap.py``,
run once per workspace by ``offline.runs.workspace.new_workspace``) already trains the
LightGBM ranker and publishes it with the FAISS index as CURRENT, and the server does not
start without a recommendation version.

Flywheel start: a deliberately weak ranker trained on popularity only is published, so the
first turn serves roughly "what is popular" (on the tiny world a popularity-only start is
clearly weak; on the small one ANN candidates are already personal). Each turn: simulated
users (drawn by their true activity) ask for recommendations over gRPC and respond by
their TRUE tastes (offline.simulation.world.click_probability / purchase_probability)
through RecordOutcome; after the click window the training set is rebuilt from the Parquet
decision and outcome logs, a candidate ranker is trained and evaluated against the serving
one on the same held-out decisions, published if not worse (index rebuilt, features
re-materialized), and the server hot-reloads it.

Windows are seconds here (the simulation compresses time); production uses the
training-set defaults (click 30 min, purchase 24 h).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import grpc
import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf.timestamp_pb2 import Timestamp

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.features.definitions import CATEGORIES, ITEM
from decision_service.models.registry import ModelRegistry, ModelVersion
from offline.features.feature_history import HISTORY_DIR
from offline.features.materialize import load_serving_state
from offline.loop.retrain import RetrainConfig, ips_ranking_metrics, publish, relevance, retrain
from offline.loop.training_set import LabelWindow, build_training_set, recommendation_labels
from offline.simulation.world import World, click_probability, load_truth, purchase_probability
from offline.use_cases.base import Learned, OnlineMetric, ShadowMetric, Workspace

USE_CASE = "recommendation"
SOURCE = {1: "ann", 2: "popular", 3: "explore"}
FLYWHEEL_LABELS = (LabelWindow("click", ("click",), 2.0), LabelWindow("purchase", ("purchase",), 5.0))
"""Label windows of the simulation (seconds: simulated users answer at once)."""


# --- make demo ---------------------------------------------------------------------------


def show_requests(stub: pb_grpc.DecisionServiceStub, world: World) -> None:
    counts = np.bincount(world.event_user, minlength=world.n_users)
    user = str(world.user_ids[int(np.argsort(-counts)[len(counts) // 20])])  # an active user
    print_taste(world, user)
    first = call(
        stub,
        "home page",
        user_id=user,
        num_items=10,
        context=pb.RequestContext(surface="home", device="web", locale="en-GB"),
    )
    top = first.recommendation.items[0]
    call(
        stub,
        f"same user, excluding {top.item_id} (e.g. already in the cart)",
        user_id=user,
        num_items=10,
        exclude_item_ids=[top.item_id],
    )
    fav = top.category
    other = next(c for c in CATEGORIES if c != fav)
    call(
        stub,
        f"same user, only categories [{fav}, {other}]",
        user_id=user,
        num_items=6,
        allowed_categories=[fav, other],
    )
    call(
        stub,
        "a user the service has never seen (popular fallback, flagged)",
        user_id="new-visitor-1",
        num_items=5,
    )
    try:
        call(stub, "bad input: num_items=0", user_id=user, num_items=0)
    except grpc.RpcError as err:
        print(f"  -> {err.code().name}: {err.details()}")


def call(stub: pb_grpc.DecisionServiceStub, title: str, **fields: object) -> pb.GetDecisionResponse:
    print(f"\n## {title}")
    request = pb.GetDecisionRequest(recommendation=pb.RecommendationRequest(**fields))  # type: ignore[arg-type]
    response = stub.GetDecision(request, timeout=2.0)
    degraded = ", ".join(f"{d.stage}:{d.reason}" for d in response.degraded) or "none"
    print(f"  decision {response.decision_id}  model {response.model_version}  degraded: {degraded}")
    print(f"  {'rank':>4}  {'item':<10} {'category':<12} {'source':<8} {'score':>8}")
    for item in response.recommendation.items:
        print(
            f"  {item.rank:>4}  {item.item_id:<10} {item.category:<12} "
            f"{SOURCE.get(item.source, '?'):<8} {item.score:>8.4f}"
        )
    return response


def print_taste(world: World, user_id: str) -> None:
    row = int(np.flatnonzero(world.user_ids == user_id)[0])
    cats = world.item_category[world.event_item[world.event_user == row]]
    top = Counter(CATEGORIES[int(c)] for c in cats).most_common(4)
    print(
        f"\nuser {user_id}: {len(cats)} past interactions; top categories "
        + ", ".join(f"{name} ({n})" for name, n in top)
    )


# --- make flywheel -----------------------------------------------------------------------


def publish_popularity_model(registry: ModelRegistry, world_dir: Path, threads: int = 2) -> ModelVersion:
    """A weak ranker trained on popularity only (one feature), published as CURRENT."""
    snap, _ = load_serving_state(world_dir)
    pop = snap.items[snap.item_listed, ITEM.slot("i_popularity_pct")].astype(np.float32)
    model = lgb.train(
        {"objective": "regression", "num_leaves": 7, "verbosity": -1, "num_threads": threads, "seed": 1},
        lgb.Dataset(pop[:, None], pop, feature_name=["i_popularity_pct"]),
        num_boost_round=20,
    )
    cfg = RetrainConfig(columns=("i_popularity_pct",), threads=threads)
    return publish(
        registry, model, cfg, {}, {}, {"kind": "popularity only (flywheel start)"}, registry.current(USE_CASE)
    )


class Simulation:
    """Simulated users: who visits, and how they respond to what they are shown."""

    def __init__(self, world: World, world_dir: Path, seed: int) -> None:
        self.world = world
        self.truth = load_truth(world_dir)
        _, emb = load_serving_state(world_dir)
        known = np.abs(emb.users).sum(axis=1) > 0
        weight = self.truth.user_activity.astype(np.float64) * known
        self.p_user = weight / weight.sum()
        self.rng = np.random.default_rng(seed)

    def users(self, n: int) -> np.ndarray:
        return self.rng.choice(len(self.p_user), size=n, p=self.p_user)

    def respond(self, user: int, item_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        items = np.asarray([int(i[1:]) for i in item_ids], np.int64)
        if not len(items):
            return np.zeros(0, bool), np.zeros(0, bool)
        click = self.rng.random(len(items)) < click_probability(self.truth, user, items)
        buy = click & (self.rng.random(len(items)) < purchase_probability(self.truth, user, items))
        return click, buy


def run_turn(stub: pb_grpc.DecisionServiceStub, sim: Simulation, n: int, num_items: int) -> dict[str, Any]:
    shown = clicks = purchases = outcomes = 0
    versions: dict[str, int] = {}
    for user in sim.users(n):
        user_id = str(sim.world.user_ids[user])
        reply = stub.GetDecision(
            pb.GetDecisionRequest(
                recommendation=pb.RecommendationRequest(user_id=user_id, num_items=num_items)
            ),
            timeout=5,
        )
        versions[reply.model_version] = versions.get(reply.model_version, 0) + 1
        ids = [i.item_id for i in reply.recommendation.items]
        click, buy = sim.respond(int(user), ids)
        shown += len(ids)
        clicks += int(click.sum())
        purchases += int(buy.sum())
        now = Timestamp()
        now.GetCurrentTime()
        batch = [
            pb.Outcome(decision_id=reply.decision_id, item_id=i, type="click", occurred_at=now)
            for i, c in zip(ids, click, strict=True)
            if c
        ]
        batch += [
            pb.Outcome(decision_id=reply.decision_id, item_id=i, type="purchase", occurred_at=now)
            for i, b in zip(ids, buy, strict=True)
            if b
        ]
        if batch:
            stub.RecordOutcome(pb.RecordOutcomeRequest(outcomes=batch), timeout=5)
            outcomes += len(batch)
    return {
        "model_version": max(versions, key=versions.get) if versions else None,  # type: ignore[arg-type]
        "decisions": n,
        "outcomes": outcomes,
        "shown": shown,
        "clicks": clicks,
        "purchases": purchases,
        "ctr": round(clicks / max(shown, 1), 4),
    }


@dataclass
class RecommendationFlywheel:
    """What ``turn`` and ``learn`` work on (returned by ``start``)."""

    ws: Workspace
    sim: Simulation
    decisions: int  # per turn
    num_items: int
    retrain: RetrainConfig


# --- watching a rollout (offline/watch/) ----------------------------------------------

SERVED = "len(list_filter(ranks, lambda r: r > 0))"
"""SQL over a decision log row: how many items the decision showed (rank > 0)."""
SERVED_ITEMS = "list_filter(item_ids, lambda x, i: ranks[i] > 0)"
"""SQL over a decision log row: the ids of the items it showed."""
SHADOW_K = 10


def _window_s(outcome: str, default_s: float) -> float:
    """The project's label window of ``outcome`` (seconds), else ``default_s``."""
    return next((lw.window_s for lw in recommendation_labels() if lw.name == outcome), default_s)


ONLINE_METRICS = (
    OnlineMetric(
        "ctr",
        "clicks per served item: distinct served items clicked within the click window / items "
        "served (decisions that showed nothing do not count)",
        ("click",),
        _window_s("click", 30 * 60.0),
        units=SERVED,
        items=SERVED_ITEMS,
        scope=f"{SERVED} > 0",
        tolerance=0.005,
    ),
    OnlineMetric(
        "purchases_per_decision",
        "distinct served items bought within the purchase window, per decision that showed "
        "items (reported, not gated: purchases are too sparse to bound a canary's loss in time)",
        ("purchase",),
        _window_s("purchase", 24 * 3600.0),
        items=SERVED_ITEMS,
        scope=f"{SERVED} > 0",
        tolerance=0.01,
        gate=False,
    ),
)
"""A canary is gated on CTR per served item (a ratio: interval by the bootstrap over users,
as one user's clicks are correlated) and reports purchases per decision."""


def shadow_labelled_rows(log_root: str | Path, as_of_ms: int, window_s: float | None) -> pa.Table:
    """The rows the publish gate evaluates on: the training set's shown items of decisions
    whose every label window has closed by ``as_of_ms`` (windows: the project's, or all
    ``window_s``), with ``label`` = relevance (click + purchase, as the retrain's NDCG) and
    ``weight`` = the retrain's clipped inverse propensity."""
    cfg = RetrainConfig(columns=())
    labels = tuple(
        lw if window_s is None else LabelWindow(lw.name, lw.outcome_types, window_s)
        for lw in recommendation_labels()
    )
    table, _ = build_training_set(log_root, None, labels, as_of_ms, columns=[])
    matured = pc.is_valid(table.column(labels[0].name))
    for lw in labels[1:]:
        matured = pc.and_(matured, pc.is_valid(table.column(lw.name)))
    table = table.filter(matured)
    propensity = table.column("propensity").to_numpy(zero_copy_only=False).astype(np.float64)
    return pa.table(
        {
            "decision_id": table.column("decision_id"),
            "item_id": table.column("item_id"),
            "label": pa.array(relevance(table, cfg.gain_labels)),
            "weight": pa.array(1.0 / np.maximum(propensity, 1.0 / cfg.ips_clip)),
        }
    )


def shadow_ndcg(labels: np.ndarray, weights: np.ndarray, groups: np.ndarray, scores: np.ndarray) -> float:
    """The retrain's IPS-weighted NDCG@10 of ``scores`` re-ranking each decision's shown items."""
    return float(ips_ranking_metrics(scores, labels, weights, groups, SHADOW_K)[f"ndcg@{SHADOW_K}"])


SHADOW_METRIC = ShadowMetric(
    f"ndcg@{SHADOW_K}", "scores", shadow_labelled_rows, shadow_ndcg, items="item_ids", top_k=SHADOW_K
)


# --- the offline use case ----------------------------------------------------------------


@dataclass(frozen=True)
class RecommendationOffline:
    """Settings (``--set recommendation.<field>=<value>`` in the flywheel): ``num_items`` per
    request in a turn, ``timing_items`` per request in the demo's timing run."""

    name: str = USE_CASE
    title: str = "recommendation: what to show this user"
    columns: tuple[tuple[str, int], ...] = (
        ("model_version", 13),
        ("decisions", 9),
        ("outcomes", 8),
        ("training_rows", 13),
        ("offline_metric", 14),
        ("ctr", 7),
        ("published", 9),
    )
    label_wait_s: float = FLYWHEEL_LABELS[0].window_s  # the click window; purchases are the weaker label
    num_items: int = 10
    timing_items: int = 20
    online_metrics: ClassVar[tuple[OnlineMetric, ...]] = ONLINE_METRICS
    shadow_metric: ClassVar[ShadowMetric | None] = SHADOW_METRIC

    def bootstrap(self, ws: Workspace) -> None:
        """Nothing of its own: the shared shop bootstrap published the ranker (module doc)."""
        version = ModelRegistry(ws.registry_dir).current(self.name)
        print(f"  the ranker {version.name} was published by the shared bootstrap above")

    def demo(self, stub: pb_grpc.DecisionServiceStub, ws: Workspace) -> None:
        show_requests(stub, World.load(ws.world_dir))

    def requests(self, ws: Workspace, n: int, seed: int = 0) -> list[pb.GetDecisionRequest]:
        users = np.random.default_rng(seed).choice(World.load(ws.world_dir).user_ids, size=n)
        return [
            pb.GetDecisionRequest(
                recommendation=pb.RecommendationRequest(user_id=str(u), num_items=self.timing_items)
            )
            for u in users
        ]

    def start(self, ws: Workspace, turns: int, per_turn: int) -> RecommendationFlywheel:
        weak = publish_popularity_model(ModelRegistry(ws.registry_dir), ws.world_dir, ws.threads)
        print(f"published the weak starting model {weak.name} (popularity only)", flush=True)
        sim = Simulation(World.load(ws.world_dir), ws.world_dir, ws.seed)
        return RecommendationFlywheel(ws, sim, per_turn, self.num_items, RetrainConfig(threads=ws.threads))

    def turn(self, stub: pb_grpc.DecisionServiceStub, state: RecommendationFlywheel) -> dict[str, Any]:
        return run_turn(stub, state.sim, state.decisions, state.num_items)

    def learn(
        self, state: RecommendationFlywheel, logs: Path, out_dir: Path, turn: int, make_current: bool = True
    ) -> Learned:
        ws, cfg = state.ws, replace(state.retrain, make_current=make_current)
        out = out_dir / f"turn-{turn}.parquet"
        _, report = build_training_set(logs, out, FLYWHEEL_LABELS, history_root=ws.world_dir / HISTORY_DIR)
        key = f"ndcg@{cfg.k}"
        try:
            result = retrain(out, ws.registry_dir, cfg, world_dir=ws.world_dir, redis_url=ws.redis_url)
        except ValueError as exc:  # nothing labelled yet: wait for more data
            current = candidate = published = None
            lines = [report.summary(), f"not retrained: {exc}"]
        else:
            current, candidate = result.current.get(key), result.candidate.get(key)
            published, lines = result.version, [report.summary(), result.summary()]
        return Learned(
            training_rows=report.rows,
            metric=key,
            current=current,
            candidate=candidate,
            published=published,
            lines=lines,
            extra={  # the row names of the first flywheel (scripts read them), unprefixed
                "training_rows": report.rows,
                "labelled": report.decisions_labelled,
                "immature": report.decisions_immature,
                "offline_metric": current,
                "candidate_metric": candidate,
                "published": published,
            },
        )

    def served_version(self, stub: pb_grpc.DecisionServiceStub) -> str:
        """An unknown user (popular fallback): cheap, and logged like any decision."""
        request = pb.GetDecisionRequest(
            recommendation=pb.RecommendationRequest(user_id="flywheel-probe", num_items=1)
        )
        return str(stub.GetDecision(request, timeout=5).model_version)


RECOMMENDATION = RecommendationOffline()
