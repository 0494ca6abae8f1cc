"""The conversion use case offline: bootstrap, demo section, flywheel turn and learn step.

Works on the shared shop world (the workspace's ``world_dir``: its users' USER features are
in Redis after the shared bootstrap). Sessions and whether they convert are simulated by
offline.simulation.conversion from the world's hidden truth; the service sees only the USER
profile and the request.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import grpc
import numpy as np
import pyarrow as pa
from google.protobuf.timestamp_pb2 import Timestamp

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.features.conversion import PROFILE_COLUMNS, REQUEST_COLUMNS
from decision_service.features.definitions import USER
from decision_service.models.registry import ModelRegistry, ModelVersion
from decision_service.use_cases.conversion import NAME
from offline.features.materialize import load_serving_state
from offline.loop.publish_gate import binary_rows, roc_auc
from offline.loop.retrain_conversion import (
    CONVERSION_LABEL,
    OUTAGE_REASONS,
    ConversionRetrainConfig,
    build_conversion_training_set,
    retrain_conversion,
)
from offline.loop.training_set import LabelWindow
from offline.simulation.conversion import Sessions, conversion_probability, sample_sessions
from offline.simulation.world import WorldTruth, load_truth
from offline.training.train_conversion import (
    ConversionTrainConfig,
    evaluate,
    fit_conversion,
    publish_conversion,
)
from offline.use_cases.base import Learned, OnlineMetric, ShadowMetric, Workspace

FLYWHEEL_LABEL = LabelWindow("converted", ("converted",), 2.0)
"""The simulation's label window (seconds: simulated users convert at once)."""
_ACTION = {0: "-", 1: "TARGET", 2: "SKIP"}


def history_table(
    truth: WorldTruth, users: np.ndarray, sessions: Sessions, rng: np.random.Generator
) -> pa.Table:
    """Simulated past scores: the USER rows of ``users`` (snapshot rows, world order) + each
    session's request features, labelled by the world's conversion probability."""
    profile = users[sessions.user][:, [USER.slot(c) for c in PROFILE_COLUMNS]]
    request = sessions.request_matrix()
    y = rng.random(len(sessions)) < conversion_probability(truth, sessions)
    n = len(sessions)
    cols: dict[str, Any] = {
        "decision_id": pa.array([f"h{i:09d}" for i in range(n)]),
        "decided_at": pa.array(np.arange(n, dtype=np.int64) * 1000).cast(pa.timestamp("ms", tz="UTC")),
        "converted": pa.array(y),
    }
    for j, c in enumerate(PROFILE_COLUMNS):
        cols[c] = pa.array(profile[:, j])
    for j, c in enumerate(REQUEST_COLUMNS):
        cols[c] = pa.array(request[:, j])
    return pa.table(cols)


def request_of(user_id: str, s: Sessions, i: int, threshold: float | None = None) -> pb.GetDecisionRequest:
    req = pb.ConversionRequest(
        user_id=user_id,
        context=pb.RequestContext(surface=str(s.surface[i]), device=str(s.device[i])),
        cart_items=int(s.cart_items[i]),
        cart_value=float(s.cart_value[i]),
        session_page_views=int(s.page_views[i]),
        session_seconds=float(s.session_s[i]),
    )
    if threshold is not None:
        req.threshold = threshold
    return pb.GetDecisionRequest(conversion=req)


@dataclass
class ConversionFlywheel:
    """The state of conversion in a flywheel run."""

    ws: Workspace
    truth: WorldTruth
    user_ids: np.ndarray
    rng: np.random.Generator
    per_turn: int
    threads: int
    scored: list[tuple[float, bool]] = field(default_factory=list)


# --- watching a rollout (offline/watch/) ----------------------------------------------

_SCORED = "coalesce(scored, true) and probability is not null"
ONLINE_METRICS = (
    OnlineMetric(
        "auc",
        "ROC AUC of the arm's served probability against converted within the label window "
        "(the publish gate's headline metric, on the arm's own matured traffic)",
        CONVERSION_LABEL.outcome_types,
        CONVERSION_LABEL.window_s,
        statistic="auc",
        score="probability",
        scope=_SCORED,
        tolerance=0.01,
    ),
    OnlineMetric(
        "log_loss",
        "log-loss of the served probability (calibration: a threshold acts on it); lower is better",
        CONVERSION_LABEL.outcome_types,
        CONVERSION_LABEL.window_s,
        statistic="log_loss",
        score="probability",
        scope=_SCORED,
        higher_is_better=False,
        tolerance=0.01,
    ),
    OnlineMetric(
        "unscored_share",
        "share of the arm's decisions its model could not score (the base rate was answered), "
        "over ALL its decisions: AUC and log-loss only see the scored ones; lower is better",
        CONVERSION_LABEL.outcome_types,
        CONVERSION_LABEL.window_s,
        hits="(not coalesce(scored, true) or probability is null)::int",
        higher_is_better=False,
        tolerance=0.01,
    ),
    OnlineMetric(
        "target_share",
        "share of the arm's decisions with a threshold that it TARGETed (reported, not gated: "
        "the caller's threshold acts on the probability, whose calibration log-loss gates; a "
        "better model legitimately targets other users)",
        CONVERSION_LABEL.outcome_types,
        CONVERSION_LABEL.window_s,
        hits="(action = 'TARGET')::int",
        scope="action in ('TARGET', 'SKIP')",
        tolerance=0.02,
        gate=False,
    ),
)
"""A canary is gated on what the publish gate checks, AUC and log-loss, on matured online
labels (the score has no online effect on whether the user converts, so a conversion RATE
would not differ between arms; how well each arm predicts it does); intervals by the
bootstrap over users. Their scope is the SCORED decisions, so a canary whose model fails
to score (answering the base rate) would be judged on its few successes: the gated guard
``unscored_share`` (over all decisions, at most live + 1 point) sees it. ``target_share``
is reported only (see its description)."""


def shadow_labelled_rows(log_root: str | Path, as_of_ms: int, window_s: float | None) -> pa.Table:
    """The rows the conversion publish gate evaluates on: the conversion training set as of
    ``as_of_ms`` (window ``window_s``, default 7 days), rows served from an outage left out
    as the retrain does; ``label`` 0/1, ``weight`` 1."""
    label = CONVERSION_LABEL if window_s is None else LabelWindow("converted", ("converted",), window_s)
    table, _ = build_conversion_training_set(log_root, None, label, as_of_ms)
    table = binary_rows(table, label.name, exclude_degraded=False)
    if "flags" in table.column_names:
        healthy = [
            not any(f.split(":", 1)[-1] in OUTAGE_REASONS for f in flags or ())
            for flags in table.column("flags").to_pylist()
        ]
        table = table.filter(pa.array(healthy, pa.bool_()))
    y = table.column(label.name).to_numpy(zero_copy_only=False).astype(np.float64)
    return pa.table({"decision_id": table.column("decision_id"), "label": y, "weight": np.ones(len(y))})


def shadow_auc(labels: np.ndarray, weights: np.ndarray, groups: np.ndarray, scores: np.ndarray) -> float:
    """The gate's ROC AUC (weights and groups unused: one row per score)."""
    return roc_auc(labels > 0, scores)


SHADOW_METRIC = ShadowMetric("auc", "[probability]", shadow_labelled_rows, shadow_auc)


@dataclass(frozen=True)
class ConversionOffline:
    """Settings (``--set conversion.<field>=``): the simulated history behind the demo's model
    and the flywheel's weak start model."""

    name: str = NAME
    title: str = "conversion: will this user purchase within 7 days (calibrated probability, reasons, action)"
    columns: tuple[tuple[str, int], ...] = (
        ("conversion_model_version", 24),
        ("conversion_auc", 14),
        ("conversion_candidate_metric", 27),
        ("conversion_published", 20),
    )
    label_wait_s: float = FLYWHEEL_LABEL.window_s
    bootstrap_sessions: int = 20_000
    start_sessions: int = 3_000
    online_metrics: ClassVar[tuple[OnlineMetric, ...]] = ONLINE_METRICS
    shadow_metric: ClassVar[ShadowMetric | None] = SHADOW_METRIC

    def _publish_from_history(
        self, ws: Workspace, n: int, columns: tuple[str, ...], kind: str, seed: int
    ) -> ModelVersion:
        truth = load_truth(ws.world_dir)
        snap, _ = load_serving_state(ws.world_dir)
        rng = np.random.default_rng(seed)
        table = history_table(truth, snap.users, sample_sessions(truth, n, rng), rng)
        fitted = fit_conversion(table, ConversionTrainConfig(columns=columns, threads=ws.threads))
        return publish_conversion(
            ModelRegistry(ws.registry_dir), fitted, {"training": {**fitted.info, "kind": kind, "rows": n}}
        )

    def bootstrap(self, ws: Workspace) -> None:
        version = self._publish_from_history(
            ws,
            self.bootstrap_sessions,
            ConversionTrainConfig().columns,
            "simulated history (bootstrap)",
            ws.seed + 31,
        )
        m = version.manifest["training"]
        print(
            f"conversion model {version.name}: {len(version.manifest['model_features'])} features, "
            f"calibration a={m['calibration']['a']:.3f} b={m['calibration']['b']:.3f}, "
            f"base rate {version.manifest['base_rate']:.3f}"
        )

    def requests(self, ws: Workspace, n: int, seed: int = 0) -> list[pb.GetDecisionRequest]:
        truth = load_truth(ws.world_dir)
        snap, _ = load_serving_state(ws.world_dir)
        s = sample_sessions(truth, n, np.random.default_rng(seed))
        return [request_of(str(snap.user_ids[s.user[i]]), s, i) for i in range(n)]

    def demo(self, stub: pb_grpc.DecisionServiceStub, ws: Workspace) -> None:
        truth = load_truth(ws.world_dir)
        snap, _ = load_serving_state(ws.world_dir)
        active = str(snap.user_ids[int(np.argsort(-truth.user_activity)[len(truth.user_activity) // 50])])

        def call(title: str, **fields: Any) -> None:
            print(f"\n## {title}")
            reply = stub.GetDecision(
                pb.GetDecisionRequest(conversion=pb.ConversionRequest(**fields)), timeout=2.0
            )
            c = reply.conversion
            degraded = ", ".join(f"{d.stage}:{d.reason}" for d in reply.degraded) or "none"
            print(f"  decision {reply.decision_id}  model {reply.model_version}  degraded: {degraded}")
            threshold = f" (threshold {c.threshold:.2f})" if c.action else ""
            print(
                f"  P(purchase within 7 days) = {c.probability:.3f}  base rate {c.base_rate:.3f}  "
                f"action {_ACTION[c.action]}{threshold}"
            )
            for r in c.reasons:
                print(f"    {r.code:<22} {r.feature:<24} {r.contribution:+.3f}  {r.description}")

        checkout = dict(cart_items=3, cart_value=129.90, session_page_views=14, session_seconds=610)
        call(
            f"an active user ({active}) at checkout with 3 items in the cart",
            user_id=active,
            context=pb.RequestContext(surface="checkout", device="ios"),
            **checkout,
        )
        call(
            "the same user browsing the home page, empty cart",
            user_id=active,
            context=pb.RequestContext(surface="home", device="web"),
            session_page_views=2,
            session_seconds=40,
        )
        call(
            "same checkout, with a threshold of 0.3 -> an action",
            user_id=active,
            context=pb.RequestContext(surface="checkout", device="ios"),
            threshold=0.3,
            **checkout,
        )
        call(
            "a visitor the service has never seen (profile defaults, flagged)",
            user_id="new-visitor-1",
            context=pb.RequestContext(surface="pdp", device="android"),
            session_page_views=3,
            session_seconds=95,
        )
        try:
            call("bad input: cart_items=-1", user_id=active, cart_items=-1)
        except grpc.RpcError as err:
            print(f"  -> {err.code().name}: {err.details()}")

    def start(self, ws: Workspace, turns: int, per_turn: int) -> ConversionFlywheel:
        weak = self._publish_from_history(
            ws, self.start_sessions, ("c_device",), "device only (flywheel start)", ws.seed + 41
        )
        print(f"published the weak starting conversion model {weak.name} (device only)", flush=True)
        snap, _ = load_serving_state(ws.world_dir)
        return ConversionFlywheel(
            ws,
            load_truth(ws.world_dir),
            snap.user_ids,
            np.random.default_rng(ws.seed + 43),
            per_turn,
            ws.threads,
        )

    def turn(self, stub: pb_grpc.DecisionServiceStub, state: ConversionFlywheel) -> dict[str, Any]:
        s = sample_sessions(state.truth, state.per_turn, state.rng)
        p_true = conversion_probability(state.truth, s)
        converted = state.rng.random(len(s)) < p_true
        versions: dict[str, int] = {}
        served = np.zeros(len(s))
        outcomes = []
        for i in range(len(s)):
            reply = stub.GetDecision(request_of(str(state.user_ids[s.user[i]]), s, i), timeout=5)
            versions[reply.model_version] = versions.get(reply.model_version, 0) + 1
            served[i] = reply.conversion.probability
            if converted[i]:
                now = Timestamp()
                now.GetCurrentTime()
                outcomes.append(
                    pb.Outcome(
                        decision_id=reply.decision_id,
                        type="converted",
                        value=float(s.cart_value[i]),
                        occurred_at=now,
                    )
                )
        for start in range(0, len(outcomes), 500):
            stub.RecordOutcome(pb.RecordOutcomeRequest(outcomes=outcomes[start : start + 500]), timeout=10)
        online = evaluate(served, converted)
        return {
            "conversion_model_version": max(versions, key=versions.get) if versions else None,
            "conversion_decisions": len(s),
            "conversions": int(converted.sum()),
            "conversion_auc": online["auc"],
            "conversion_log_loss": online["log_loss"],
            "conversion_mean_probability": online["mean_probability"],
            "conversion_rate": online["positive_rate"],
        }

    def learn(
        self, state: ConversionFlywheel, logs: Path, out_dir: Path, turn: int, make_current: bool = True
    ) -> Learned:
        table, report = build_conversion_training_set(
            logs, out_dir / f"conversion-turn-{turn}.parquet", FLYWHEEL_LABEL
        )
        lines = [f"conversion {report.summary()}"]
        train = replace(
            ConversionTrainConfig(),
            threads=state.threads,
            lgbm=replace(ConversionTrainConfig().lgbm, min_data_in_leaf=10),
        )
        try:
            result = retrain_conversion(
                table, state.ws.registry_dir, ConversionRetrainConfig(train=train, make_current=make_current)
            )
        except ValueError as exc:
            lines.append(f"conversion not retrained: {exc}")
            return Learned(report.rows, "auc", None, None, None, lines)
        lines.append(result.summary())
        return Learned(
            report.rows,
            "auc",
            result.current.get("auc"),
            result.candidate.get("auc"),
            result.version,
            lines,
        )

    def served_version(self, stub: pb_grpc.DecisionServiceStub) -> str:
        probe = pb.GetDecisionRequest(conversion=pb.ConversionRequest(user_id="flywheel-probe"))
        return stub.GetDecision(probe, timeout=5).model_version  # type: ignore[no-any-return]


CONVERSION = ConversionOffline()
