"""The fraud use case, offline: its bootstrap, demo section and flywheel turn.

Bootstrap (``make demo``): a payments world of the workspace's preset under
``<data_dir>/fraud_world`` (the load tests read ``data/demo/fraud_world``), trained,
published and materialized by ``offline/runs/bootstrap_fraud.py``; the demo then shows a few
explained verdicts.

Flywheel: a payments world (offline/simulation/fraud_world.py) is generated for ``60 + future`` days and
cut at day 60: the past is materialized into Redis (profiles, velocity, user devices; its
end is "now") and the future is the stream of live payments, the same parties behaving by
the same generative logic (legitimate habits, account takeovers, card testing, risky
merchants) with their true fraud flags and chargeback delays. A deliberately weak start
model is published: trained on the amount alone (every other column of its full feature
row is held constant while it learns, so its trees split on ``r_amount_log`` only; the row
it declares, and so the row the service logs, is the full one its successors learn from).

Each turn: the next ``days_per_turn`` of future payments go through GetDecision over gRPC
(occurred now, in order); then, in compressed time, an approved payment that the world
charges back gets a ``chargeback`` outcome (its delay scaled so 60 days = the label
window), a reviewed one gets the analyst's verdict (``confirmed_fraud`` or
``confirmed_legit``), a declined one nothing (never settled). A charged-back card is
reissued for the user's next payments (the service block-lists the old one). After the
window the fraud training set is rebuilt from the logs, a candidate is retrained and
published if not worse, and the server hot-reloads it. ``fraud_caught`` = the share of the
turn's true fraud that was reviewed or declined.

Watching a canary (``ONLINE_METRICS``): recall at the fixed review rate is measured where
labels exist, i.e. on payments an arm did not decline, so it cannot see an arm that declines
more; the gated guards ``fraud_flag_share`` and ``fraud_decline_share`` (lower is better,
over every payment of the arm) compare the arms on one population and roll such a canary back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import grpc
import lightgbm as lgb
import numpy as np
import pyarrow as pa
from google.protobuf.timestamp_pb2 import Timestamp

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.features.definitions import FRAUD_MODEL_FEATURES
from decision_service.features.redis_store import add_to_block_list, connect
from decision_service.models.registry import ModelRegistry, ModelVersion
from offline.features.fraud_features import FraudHistory
from offline.loop.publish_gate import roc_auc
from offline.loop.retrain import (
    FRAUD_RETRAIN_LGBM,
    FraudRetrainConfig,
    FraudRetrainResult,
    fraud_training_rows,
    publish_fraud,
    retrain_fraud,
)
from offline.loop.training_set import (
    FRAUD_LABEL,
    FRAUD_VERDICTS,
    LabelWindow,
    TrainingSetReport,
    build_fraud_training_set,
)
from offline.runs.bootstrap_fraud import bootstrap_fraud, materialize_fraud
from offline.simulation.fraud_world import FraudWorld, fraud_preset, generate_fraud_world
from offline.simulation.world import DAY_MS
from offline.training.train_fraud import FraudTrainConfig, build_neighbour_index
from offline.use_cases.base import Learned, OnlineMetric, ShadowMetric, Workspace

USE_CASE = "fraud"
WORLD_DIR = "fraud_world"
"""The payments world's folder in the workspace (``<data_dir>/fraud_world``)."""
CURRENCY = {"GB": "GBP", "US": "USD", "PL": "PLN", "SE": "SEK"}

PAST_DAYS = 60
FLYWHEEL_FRAUD_LABEL = LabelWindow("fraud", ("chargeback", "confirmed_fraud"), 2.0)
"""The chargeback window of the simulation: 60 days compressed into 2 s."""
FRAUD_BOOST = 3.0
"""Fraud rates of the world x this: enough fraud per turn to learn from and to measure."""
_ACTIONS = {
    pb.FRAUD_ACTION_APPROVE: "APPROVE",
    pb.FRAUD_ACTION_REVIEW: "REVIEW",
    pb.FRAUD_ACTION_DECLINE: "DECLINE",
}


# --- make demo ---------------------------------------------------------------------------


def bootstrap_fraud_world(data_dir: Path, registry_dir: Path, redis_url: str, preset: str = "small") -> Path:
    world_dir = data_dir / WORLD_DIR
    generate_fraud_world(fraud_preset(preset), world_dir)
    bootstrap_fraud(world_dir, registry_dir, redis_url=redis_url, verbose=True)
    return world_dir


def same_time_of_day(world_ms: int) -> int:
    """The latest moment (within the last day) at the same UTC time of day as ``world_ms``:
    hour of day is a model feature, so the replayed payment keeps its original one."""
    day_ms = 86_400_000
    now = time.time_ns() // 1_000_000
    at = now - now % day_ms + world_ms % day_ms
    return at - day_ms if at > now else at


def show_fraud_checks(stub: pb_grpc.DecisionServiceStub, world_dir: Path, redis_url: str) -> None:
    world = FraudWorld.load(world_dir)
    legit_user = int(world.user[world.pattern == 0][0])
    ring_device = str(world.device_ids[world.device[world.pattern == 1][0]])

    def payment(title: str, user: int, at_ms: int | None = None, **fields: object) -> None:
        occurred = Timestamp()
        if at_ms is None:
            occurred.GetCurrentTime()
        else:
            occurred.FromMilliseconds(at_ms)
        rows = (world.user == user) & (world.pattern == 0)
        home = str(world.user_home[user])
        values: dict[str, object] = {
            "transaction_id": f"demo-{time.time_ns()}",
            "user_id": str(world.user_ids[user]),
            "amount_minor": 3_000,
            "currency": CURRENCY.get(home, "EUR"),
            "merchant_id": str(world.merchant_ids[0]),
            "merchant_category": "5411",
            "country": home,
            "device_id": str(world.device_ids[world.device[rows][0]]) if rows.any() else "d-new",
            "ip_address": "81.2.69.160",
            "channel": pb.CHANNEL_APP,
            "occurred_at": occurred,
            "payment_instrument_id": f"card-{user}",
        }
        values.update(fields)
        request = pb.GetDecisionRequest(fraud_check=pb.FraudCheckRequest(**values))  # type: ignore[arg-type]
        print(f"\n## {title}")
        try:
            reply = stub.GetDecision(request, timeout=2.0)
        except grpc.RpcError as err:
            print(f"  -> {err.code().name}: {err.details()}")
            return
        f = reply.fraud
        degraded = ", ".join(f"{d.stage}:{d.reason}" for d in reply.degraded) or "none"
        action = pb.FraudAction.Name(f.action).removeprefix("FRAUD_ACTION_")
        print(f"  {action}  risk {f.risk_score}/99  p(fraud) {f.fraud_probability:.3f}  degraded: {degraded}")
        for rule in f.fired_rules:
            print(f"    rule   {rule.code:<26} {rule.description}")
        for reason in f.reasons:
            print(f"    reason {reason.code:<26} {reason.feature} ({reason.contribution:+.2f})")

    payment("an everyday payment from the user's own device, at home", legit_user)
    ato = int(np.flatnonzero(world.pattern == 1)[-1])  # the world's latest account takeover
    payment(
        "an account takeover from the synthetic world: new device, abroad, far above the usual amount",
        int(world.user[ato]),
        at_ms=same_time_of_day(int(world.occurred_ms[ato])),
        device_id=str(world.device_ids[world.device[ato]]),
        ip_address=str(world.device_ip[world.device[ato]]),
        country=str(world.country[ato]),
        amount_minor=int(world.amount_minor[ato]),
        currency=str(world.currency[ato]),
        merchant_id=str(world.merchant_ids[world.merchant[ato]]),
        merchant_category=str(world.merchant_mcc[world.merchant[ato]]),
        channel=int(world.channel[ato]),
    )
    payment(
        "a device shared by many fraud victims, abroad, far above the usual amount",
        legit_user + 1,
        device_id=ring_device,
        country="NG",
        amount_minor=90_000,
        currency="EUR",
        merchant_category="5732",
    )
    add_to_block_list(connect(redis_url), "device", "d-stolen-demo")
    payment("a block-listed device", legit_user + 2, device_id="d-stolen-demo")
    payment("over the hard amount limit", legit_user + 3, amount_minor=2_500_000, currency="EUR")
    payment("bad input: malformed IP address", legit_user, ip_address="999.1.1")


# --- make flywheel -----------------------------------------------------------------------


def split_world(world: FraudWorld, at_ms: int) -> tuple[FraudWorld, np.ndarray]:
    """(the world before ``at_ms`` as a world of its own, row indices of the rest in time order)."""
    past = np.flatnonzero(world.occurred_ms < at_ms)
    columns = (
        "txn_ids", "user", "merchant", "device", "amount_minor", "currency", "country", "channel",
        "occurred_ms", "is_fraud", "pattern", "chargeback_ms",
    )  # fmt: skip
    days = int(round((at_ms - world.start_ms) / DAY_MS))
    sliced = replace(
        world,
        config=replace(world.config, days=days),
        directory=None,  # a slice is not the files it came from: save it to read it
        **{c: getattr(world, c)[past] for c in columns},
    )
    return sliced, np.flatnonzero(world.occurred_ms >= at_ms)


def publish_amount_only_model(
    registry: ModelRegistry, history: FraudHistory, threads: int = 2
) -> ModelVersion:
    """The weak start: a LightGBM model that learned from the amount alone (see the module doc).

    Its feature profile covers ``r_amount_log`` only, the one input it learned from (the
    others were zeros in training: their drift would say nothing about this model)."""
    from offline.watch import profile as feature_profile

    w = history.world
    cfg = FraudTrainConfig(threads=threads)
    cut = w.now_ms - int(cfg.maturity_days * DAY_MS)
    rows = np.flatnonzero((w.occurred_ms >= w.day_ms(cfg.train_start_day)) & (w.occurred_ms < cut))
    y = (w.chargeback_ms[rows] >= 0) & (w.chargeback_ms[rows] <= w.now_ms)
    columns = FRAUD_MODEL_FEATURES
    x = np.zeros((len(rows), len(columns)), np.float32)
    amount = columns.index("r_amount_log")
    x[:, amount] = history.model_matrix(rows, ("r_amount_log",))[:, 0]
    model = lgb.train(
        {
            "objective": "binary",
            "num_leaves": 7,
            "min_data_in_leaf": 50,
            "learning_rate": 0.1,
            "num_threads": threads,
            "seed": 1,
            "deterministic": True,
            "verbosity": -1,
        },
        lgb.Dataset(x, y.astype(np.float32), feature_name=list(columns)),
        num_boost_round=30,
    )
    neighbours = build_neighbour_index(history, w.now_ms, cfg, columns)
    medians = {c: float(v) for c, v in zip(columns, np.median(x, axis=0), strict=True)}
    minima = {c: float(v) for c, v in zip(columns, np.min(x, axis=0), strict=True)}
    sample = x[feature_profile.sample_rows(len(x))]
    profile = feature_profile.build_profile(
        sample[:, [amount]],
        ("r_amount_log",),
        np.asarray(model.predict(sample, num_threads=threads), np.float64),
        source_rows=len(x),
        extra={"rows": "the training payments; only the input the model learned from"},
    )
    return publish_fraud(
        registry,
        model,
        neighbours,
        medians,
        {"training": {"kind": "amount only (flywheel start)"}, "feature_minima": minima},
        profile=profile,
    )


def payment_request(w: FraudWorld, i: int, transaction_id: str, card: str) -> pb.GetDecisionRequest:
    """Payment ``i`` of the world as a fraud check occurring now (a project's payments without
    devices: no device id or IP address)."""
    now = Timestamp()
    now.GetCurrentTime()
    d = int(w.device[i])
    return pb.GetDecisionRequest(
        fraud_check=pb.FraudCheckRequest(
            transaction_id=transaction_id,
            user_id=str(w.user_ids[w.user[i]]),
            merchant_id=str(w.merchant_ids[w.merchant[i]]),
            amount_minor=int(w.amount_minor[i]),
            currency=str(w.currency[i]),
            country=str(w.country[i]),
            occurred_at=now,
            merchant_category=str(w.merchant_mcc[w.merchant[i]]),
            device_id=str(w.device_ids[d]) if d >= 0 else "",
            ip_address=str(w.device_ip[d]) if d >= 0 else "",
            channel=int(w.channel[i]),
            payment_instrument_id=card,
        )
    )


@dataclass
class FraudStream:
    """The live payments of the world's future, and the simulated world's answers to verdicts."""

    world: FraudWorld  # the full world (past + future)
    future: np.ndarray  # row indices, time order
    days_per_turn: float
    label: LabelWindow = FLYWHEEL_FRAUD_LABEL
    run: str = field(default_factory=lambda: f"{time.time_ns():x}")
    card_generation: dict[int, int] = field(default_factory=dict)
    cursor_ms: int = 0

    def __post_init__(self) -> None:
        self.cursor_ms = int(self.world.occurred_ms[self.future[0]]) if len(self.future) else 0

    def next_rows(self) -> np.ndarray:
        t = self.world.occurred_ms[self.future]
        end = self.cursor_ms + int(self.days_per_turn * DAY_MS)
        rows = self.future[(t >= self.cursor_ms) & (t < end)]
        self.cursor_ms = end
        return rows

    def card(self, user: int) -> str:
        return f"c{user:07d}-{self.card_generation.get(user, 0)}"

    def request(self, i: int) -> pb.GetDecisionRequest:
        w = self.world
        return payment_request(w, i, f"fw-{self.run}-{w.txn_ids[i]}", self.card(int(w.user[i])))

    def outcomes(self, i: int, decision_id: str, action: str, decided_ms: int) -> list[pb.Outcome]:
        """What the world reports later about a verdict (see the module doc)."""
        w = self.world

        def at(ms: int) -> Timestamp:
            ts = Timestamp()
            ts.FromMilliseconds(min(ms, int(time.time() * 1000)))
            return ts

        if action == "REVIEW":
            kind = "confirmed_fraud" if w.is_fraud[i] else "confirmed_legit"
            return [pb.Outcome(decision_id=decision_id, type=kind, occurred_at=at(decided_ms + 50))]
        if action == "APPROVE" and w.chargeback_ms[i] >= 0:
            delay_days = (w.chargeback_ms[i] - w.occurred_ms[i]) / DAY_MS
            scaled = int(delay_days / PAST_DAYS * self.label.window_ms)
            self.card_generation[int(w.user[i])] = self.card_generation.get(int(w.user[i]), 0) + 1
            charged = at(decided_ms + scaled)
            value = float(w.amount_minor[i])
            return [pb.Outcome(decision_id=decision_id, type="chargeback", value=value, occurred_at=charged)]
        return []


def setup_fraud(
    data_dir: Path,
    registry_dir: Path,
    redis_url: str,
    preset: str = "tiny",
    days_per_turn: float = 1.5,
    turns: int = 4,
    threads: int = 2,
) -> tuple[FraudStream, ModelVersion]:
    """Generates the world, materializes its past, publishes the weak model; returns the stream."""
    boost = {
        k: getattr(fraud_preset(preset), k) * FRAUD_BOOST
        for k in ("ato_per_user_day", "card_tests_per_user_day", "risky_merchant_frauds_per_user_day")
    }
    cfg = fraud_preset(preset, days=PAST_DAYS + int(np.ceil(days_per_turn * turns)) + 1, **boost)
    world = generate_fraud_world(cfg)
    past, future = split_world(world, world.day_ms(PAST_DAYS))
    past.save(data_dir / WORLD_DIR)
    history = FraudHistory(past)
    materialize_fraud(history, redis_url)
    weak = publish_amount_only_model(ModelRegistry(registry_dir), history, threads)
    return FraudStream(world, future, days_per_turn), weak


def run_fraud_turn(stub: pb_grpc.DecisionServiceStub, stream: FraudStream) -> dict[str, Any]:
    """The turn's payments through GetDecision, then the world's outcomes via RecordOutcome."""
    rows = stream.next_rows()
    w = stream.world
    versions: dict[str, int] = {}
    actions: list[str] = []
    outcomes: list[pb.Outcome] = []
    decided: list[tuple[int, str, str, int]] = []
    for i in rows.tolist():
        reply = stub.GetDecision(stream.request(i), timeout=5)
        action = _ACTIONS[reply.fraud.action]
        versions[reply.model_version] = versions.get(reply.model_version, 0) + 1
        actions.append(action)
        decided.append((i, reply.decision_id, action, int(time.time() * 1000)))
    for i, decision_id, action, at_ms in decided:
        outcomes += stream.outcomes(i, decision_id, action, at_ms)
    for start in range(0, len(outcomes), 500):
        stub.RecordOutcome(pb.RecordOutcomeRequest(outcomes=outcomes[start : start + 500]), timeout=10)
    fraud = w.is_fraud[rows]
    flagged = np.asarray([a != "APPROVE" for a in actions], bool)
    return {
        "fraud_model_version": max(versions, key=versions.get) if versions else None,
        "payments": int(len(rows)),
        "fraud": int(fraud.sum()),
        "fraud_outcomes": len(outcomes),
        "fraud_caught": round(float(flagged[fraud].mean()), 4) if fraud.any() else None,
        "flagged_share": round(float(flagged.mean()), 4) if len(rows) else None,
    }


def learn_fraud(
    logs: Path, out: Path, registry_dir: Path, threads: int = 2, make_current: bool = True
) -> tuple[TrainingSetReport, FraudRetrainResult | None, str]:
    """Rebuilds the fraud training set from the logs and retrains; (report, result, note)."""
    _, report = build_fraud_training_set(logs, out, FLYWHEEL_FRAUD_LABEL)
    cfg = FraudRetrainConfig(
        threads=threads, lgbm=replace(FRAUD_RETRAIN_LGBM, min_data_in_leaf=10), make_current=make_current
    )
    try:
        return report, retrain_fraud(out, registry_dir, cfg), ""
    except ValueError as exc:  # e.g. no positive yet: wait for more data
        return report, None, str(exc)


@dataclass
class FraudFlywheel:
    """What ``turn`` and ``learn`` work on (returned by ``start``)."""

    ws: Workspace
    stream: FraudStream


# --- watching a rollout (offline/watch/) ----------------------------------------------

_REVIEW_RATE = FraudRetrainConfig().review_rate  # the gate's: 5 % of payments flagged

ONLINE_METRICS = (
    OnlineMetric(
        "fraud_recall_at_review_rate",
        "the publish gate's recall at the review rate, on the arm's own traffic: of the matured "
        "fraud (chargeback / confirmed_fraud within the window, or a confirmed_fraud verdict), "
        "the share among the top review-rate share of the arm's logged fraud_probability; "
        "declined payments left out (never settled: their label is unobserved)",
        FRAUD_LABEL.outcome_types,
        FRAUD_LABEL.window_s,
        statistic="recall_at_rate",
        score="fraud_probability",
        scope="coalesce(action, '') != 'DECLINE'",
        flag_rate=_REVIEW_RATE if _REVIEW_RATE is not None else 0.05,
        verdicts=tuple(FRAUD_VERDICTS.items()),
        tolerance=0.02,
    ),
    OnlineMetric(
        "fraud_flag_share",
        "share of the arm's payments it flagged (REVIEW or DECLINE), over ALL its decisions: the "
        "guard the recall cannot be (its scope leaves out each arm's own declines); lower is "
        "better, the canary may flag at most 2 points more than live",
        FRAUD_LABEL.outcome_types,
        FRAUD_LABEL.window_s,
        hits="(action in ('REVIEW', 'DECLINE'))::int",
        scope="action is not null",
        higher_is_better=False,
        tolerance=0.02,
    ),
    OnlineMetric(
        "fraud_decline_share",
        "share of the arm's payments it declined, over ALL its decisions (a decline loses the "
        "customer and is never labelled); lower is better, the canary may decline at most 1 point "
        "more than live",
        FRAUD_LABEL.outcome_types,
        FRAUD_LABEL.window_s,
        hits="(action = 'DECLINE')::int",
        scope="action is not null",
        higher_is_better=False,
        tolerance=0.01,
    ),
    OnlineMetric(
        "fraud_caught",
        "of the arm's matured fraud, the share it reviewed or declined (reported, not gated: it "
        "rises with whatever share an arm flags, and a declined fraud is seen only when an "
        "analyst confirms it)",
        FRAUD_LABEL.outcome_types,
        FRAUD_LABEL.window_s,
        hits="(action in ('REVIEW', 'DECLINE'))::int",
        scope="positives > 0",
        verdicts=tuple(FRAUD_VERDICTS.items()),
        tolerance=0.02,
        gate=False,
    ),
)
"""A canary is gated on fraud caught at a FIXED review rate (the gate's recall_at_rate of the
arm's scores): comparable between arms whatever thresholds they flag at; interval by the
bootstrap over users. Its scope is where labels exist -- payments the arm did NOT decline --
so each arm is measured on a population its own declines shaped, and a canary that declines
far more would look as good or better there. Hence two gated guards over ALL the arm's
payments (Wilson / Newcombe: proportions of decisions): ``fraud_flag_share`` (review +
decline, at most live + 2 points) and ``fraud_decline_share`` (at most live + 1 point: a
shift from review to decline keeps the flag share); a canary declining half the traffic is
rolled back on them. ``fraud_caught`` (what the arm's actions caught) is reported."""


def shadow_labelled_rows(log_root: str | Path, as_of_ms: int, window_s: float | None) -> pa.Table:
    """The rows the fraud publish gate evaluates on: the fraud training set as of ``as_of_ms``
    (chargeback window ``window_s``, default 60 days), its observable rows (declined and
    degraded payments left out, as the retrain does); ``label`` 0/1, ``weight`` 1."""
    label = FRAUD_LABEL
    if window_s is not None:
        label = LabelWindow(FRAUD_LABEL.name, FRAUD_LABEL.outcome_types, window_s)
    table, _ = build_fraud_training_set(log_root, None, label, as_of_ms)
    table = fraud_training_rows(table, FraudRetrainConfig())
    y = table.column(label.name).to_numpy(zero_copy_only=False).astype(np.float64)
    return pa.table({"decision_id": table.column("decision_id"), "label": y, "weight": np.ones(len(y))})


def shadow_auc(labels: np.ndarray, weights: np.ndarray, groups: np.ndarray, scores: np.ndarray) -> float:
    """The gate's ROC AUC (weights and groups unused: one row per payment)."""
    return roc_auc(labels > 0, scores)


SHADOW_METRIC = ShadowMetric("auc", "[fraud_probability]", shadow_labelled_rows, shadow_auc)


# --- the offline use case ----------------------------------------------------------------


@dataclass(frozen=True)
class FraudOffline:
    """Settings (``--set fraud.<field>=<value>`` in the flywheel): ``days_per_turn`` of the
    payments world's future streamed per turn (its own unit: ``per_turn`` is the
    recommendation decisions' count, not the payments')."""

    name: str = USE_CASE
    title: str = "fraud: approve, review or decline this payment"
    columns: tuple[tuple[str, int], ...] = (
        ("fraud_caught", 12),
        ("fraud_model_version", 19),
        ("fraud_offline_metric", 20),
        ("fraud_published", 15),
    )
    label_wait_s: float = FLYWHEEL_FRAUD_LABEL.window_s
    days_per_turn: float = 1.5
    online_metrics: ClassVar[tuple[OnlineMetric, ...]] = ONLINE_METRICS
    shadow_metric: ClassVar[ShadowMetric | None] = SHADOW_METRIC

    def bootstrap(self, ws: Workspace) -> None:
        bootstrap_fraud_world(ws.data_dir, ws.registry_dir, ws.redis_url, ws.preset)

    def demo(self, stub: pb_grpc.DecisionServiceStub, ws: Workspace) -> None:
        show_fraud_checks(stub, ws.data_dir / WORLD_DIR, ws.redis_url)

    def requests(self, ws: Workspace, n: int, seed: int = 0) -> list[pb.GetDecisionRequest]:
        """Payments of the bootstrapped world, occurring now, each a new transaction."""
        w = FraudWorld.load(ws.data_dir / WORLD_DIR)
        rows = np.random.default_rng(seed).choice(len(w.txn_ids), size=n, replace=n > len(w.txn_ids))
        run = f"{time.time_ns():x}"
        return [
            payment_request(w, int(i), f"t-{run}-{k}", f"c{int(w.user[i]):07d}-0") for k, i in enumerate(rows)
        ]

    def start(self, ws: Workspace, turns: int, per_turn: int) -> FraudFlywheel:
        started = time.perf_counter()
        stream, weak = setup_fraud(
            ws.data_dir, ws.registry_dir, ws.redis_url, ws.preset, self.days_per_turn, turns, ws.threads
        )
        print(
            f"payments world {ws.preset}: {len(stream.future):,} future payments; published the weak "
            f"fraud model {weak.name} (amount only) in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        return FraudFlywheel(ws, stream)

    def turn(self, stub: pb_grpc.DecisionServiceStub, state: FraudFlywheel) -> dict[str, Any]:
        return run_fraud_turn(stub, state.stream)

    def learn(
        self, state: FraudFlywheel, logs: Path, out_dir: Path, turn: int, make_current: bool = True
    ) -> Learned:
        report, result, note = learn_fraud(
            logs, out_dir / f"turn-{turn}.parquet", state.ws.registry_dir, state.ws.threads, make_current
        )
        return Learned(
            training_rows=report.rows,
            metric="auc",
            current=result.current.get("auc") if result else None,
            candidate=result.candidate.get("auc") if result else None,
            published=result.version if result else None,
            lines=[
                f"fraud {report.summary()}",
                result.summary() if result else f"fraud not retrained: {note}",
            ],
        )

    def served_version(self, stub: pb_grpc.DecisionServiceStub) -> str:
        """A small payment of a user the service has never seen (a new transaction each time;
        it is logged, and labelled legitimate once its window closes, like any other)."""
        now = Timestamp()
        now.GetCurrentTime()
        request = pb.GetDecisionRequest(
            fraud_check=pb.FraudCheckRequest(
                transaction_id=f"probe-{time.time_ns()}",
                user_id="flywheel-probe",
                merchant_id="m-probe",
                amount_minor=1_000,
                currency="EUR",
                country="GB",
                occurred_at=now,
                merchant_category="5411",
                device_id="d-probe",
                ip_address="81.2.69.160",
                channel=pb.CHANNEL_APP,
                payment_instrument_id="card-probe",
            )
        )
        return str(stub.GetDecision(request, timeout=5).model_version)


FRAUD = FraudOffline()
