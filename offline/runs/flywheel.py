"""`make flywheel`: decide, collect, organize, learn, reload, and again: the loop, turned.

Setup: a synthetic world is generated and bootstrapped (embeddings, FAISS index, features
in Redis), then a deliberately weak ranker trained on popularity only is published, so the
first turn serves roughly "what is popular". A real gRPC server runs as its own process
with exploration slots (logged propensities) and hot reload on.

Each turn: simulated users (drawn by their true activity) ask for recommendations over
gRPC and respond by their TRUE tastes (offline.simulation.world.click_probability /
purchase_probability) through RecordOutcome; after the label windows close the
training set is rebuilt from the Parquet decision and outcome logs, a candidate ranker is
trained and evaluated against the serving one on the same held-out decisions, published if
not worse (index rebuilt, features re-materialized), and the server hot-reloads it.

Windows are seconds here (the simulation compresses time); production uses the
training-set defaults (click 30 min, purchase 24 h). The last output line is one JSON
object with a row per turn, for scripts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import lightgbm as lgb
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.devtools.local_redis import LocalRedis
from decision_service.devtools.server_process import ServerProcess
from decision_service.features.definitions import ITEM
from decision_service.models.registry import ModelRegistry, ModelVersion
from offline.features.feature_history import HISTORY_DIR
from offline.features.materialize import load_serving_state
from offline.loop.retrain import RetrainConfig, publish, retrain
from offline.loop.training_set import LabelWindow, build_training_set
from offline.runs.flywheel_fraud import (
    FLYWHEEL_FRAUD_LABEL,
    FraudStream,
    learn_fraud,
    run_fraud_turn,
    setup_fraud,
)
from offline.simulation.world import World, click_probability, load_truth, purchase_probability

USE_CASE = "recommendation"
FLYWHEEL_LABELS = (LabelWindow("click", ("click",), 2.0), LabelWindow("purchase", ("purchase",), 5.0))
"""Label windows of the simulation (seconds: simulated users answer at once)."""


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
        "model_version": max(versions, key=versions.get) if versions else None,
        "decisions": n,
        "outcomes": outcomes,
        "shown": shown,
        "clicks": clicks,
        "purchases": purchases,
        "ctr": round(clicks / max(shown, 1), 4),
    }


def wait_for_version(stub: pb_grpc.DecisionServiceStub, version: str, timeout_s: float = 30.0) -> bool:
    """Polls with an unknown user (popular fallback) until the server answers with ``version``."""
    deadline = time.monotonic() + timeout_s
    request = pb.GetDecisionRequest(
        recommendation=pb.RecommendationRequest(user_id="flywheel-probe", num_items=1)
    )
    while time.monotonic() < deadline:
        if stub.GetDecision(request, timeout=5).model_version == version:
            return True
        time.sleep(0.2)
    return False



def run_flywheel(
    world_dir: Path,
    registry_dir: Path,
    redis_url: str,
    work_dir: Path,
    turns: int = 4,
    decisions: int = 800,
    num_items: int = 10,
    exploration_share: float = 0.2,
    seed: int = 0,
    threads: int = 2,
    fraud: FraudStream | None = None,
) -> list[dict[str, Any]]:
    """Runs ``turns`` turns against a bootstrapped world; returns one row per turn. With
    ``fraud`` (offline/runs/flywheel_fraud.py), each turn also streams payments and learns fraud."""
    registry = ModelRegistry(registry_dir)
    logs = work_dir / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    weak = publish_popularity_model(registry, world_dir, threads)
    print(f"published the weak starting model {weak.name} (popularity only)", flush=True)
    env = dict(
        DS_EXPLORATION_SHARE=str(exploration_share),
        DS_MODEL_RELOAD_INTERVAL_S="0.5",
        DS_LOG_FLUSH_INTERVAL_S="0.5",
        DS_LOG_DIR=str(logs),
        DS_LOG_LEVEL="WARNING",
    )
    server = ServerProcess(registry_dir, redis_url, env=env).start()
    rows: list[dict[str, Any]] = []
    try:
        channel = grpc.insecure_channel(server.address)
        stub = pb_grpc.DecisionServiceStub(channel)
        world = World.load(world_dir)
        sim = Simulation(world, world_dir, seed)
        cfg = RetrainConfig(threads=threads)
        for turn in range(turns):
            t0 = time.perf_counter()
            row: dict[str, Any] = {"turn": turn, **run_turn(stub, sim, decisions, num_items)}
            if fraud is not None:
                row.update(run_fraud_turn(stub, fraud))
            # let the click (and chargeback) windows close, the logs flush
            time.sleep(max(FLYWHEEL_LABELS[0].window_s, FLYWHEEL_FRAUD_LABEL.window_s) + 0.6)
            fraud_published = None
            if fraud is not None:
                f_report, f_result, note = learn_fraud(
                    logs, work_dir / "training" / f"fraud-turn-{turn}.parquet", registry_dir, threads
                )
                fraud_published = f_result.version if f_result else None
                row.update(
                    fraud_training_rows=f_report.rows,
                    fraud_offline_metric=f_result.current.get("auc") if f_result else None,
                    fraud_candidate_metric=f_result.candidate.get("auc") if f_result else None,
                    fraud_published=fraud_published,
                )
                print(f"turn {turn}: fraud {f_report.summary()}", flush=True)
                line = f_result.summary() if f_result else f"fraud not retrained: {note}"
                print(f"turn {turn}: {line}", flush=True)
            out = work_dir / "training" / f"turn-{turn}.parquet"
            _, report = build_training_set(logs, out, FLYWHEEL_LABELS, history_root=world_dir / HISTORY_DIR)
            result = retrain(out, registry_dir, cfg, world_dir=world_dir, redis_url=redis_url)
            row.update(
                training_rows=report.rows,
                labelled=report.decisions_labelled,
                immature=report.decisions_immature,
                offline_metric=result.current.get(f"ndcg@{cfg.k}"),
                candidate_metric=result.candidate.get(f"ndcg@{cfg.k}"),
                published=result.version,
            )
            row.setdefault("fraud_caught", None)
            print(f"turn {turn}: {report.summary()}", flush=True)
            print(f"turn {turn}: {result.summary()}", flush=True)
            if result.version and turn < turns - 1 and not wait_for_version(stub, result.version):
                print(f"turn {turn}: the server did not pick up {result.version} in time", flush=True)
            if fraud_published and turn < turns - 1:
                time.sleep(1.2)  # reload polls every 0.5 s; the next turn reports the version it met
            row["seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            print_row(row, header=turn == 0)
        channel.close()
    finally:
        try:
            server.terminate(timeout_s=30)
        except subprocess.TimeoutExpired:
            server.kill()
    return rows


def run_fresh(
    data_dir: Path,
    redis_url: str,
    preset_name: str = "tiny",
    turns: int = 4,
    decisions: int = 1000,
    exploration_share: float = 0.2,
    threads: int = 2,
    fraud_days_per_turn: float = 1.5,
) -> list[dict[str, Any]]:
    """Generates and bootstraps a world under ``data_dir`` (features into ``redis_url``,
    overwriting its keys of the same ids), and a payments world with a weak fraud model
    (``fraud_days_per_turn`` > 0), then runs the flywheel on them."""
    from offline.runs.bootstrap import bootstrap
    from offline.simulation.world import generate_world, preset

    started = time.perf_counter()
    shutil.rmtree(data_dir, ignore_errors=True)
    world_dir, registry_dir = data_dir / "world", data_dir / "registry"
    generate_world(preset(preset_name), world_dir)
    bootstrap(world_dir, registry_dir, redis_url=redis_url, threads=threads)
    print(f"world {preset_name} bootstrapped in {time.perf_counter() - started:.0f} s", flush=True)
    fraud = None
    if fraud_days_per_turn > 0:
        fraud, weak = setup_fraud(
            data_dir, registry_dir, redis_url, preset_name, fraud_days_per_turn, turns, threads
        )
        print(
            f"payments world {preset_name}: {len(fraud.future):,} future payments; published the weak "
            f"fraud model {weak.name} (amount only) in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
    return run_flywheel(
        world_dir,
        registry_dir,
        redis_url,
        data_dir,
        turns,
        decisions,
        exploration_share=exploration_share,
        threads=threads,
        fraud=fraud,
    )


COLUMNS = (
    ("turn", 4),
    ("model_version", 13),
    ("decisions", 9),
    ("outcomes", 8),
    ("training_rows", 13),
    ("offline_metric", 14),
    ("ctr", 7),
    ("fraud_caught", 12),
    ("published", 9),
    ("fraud_model_version", 19),
    ("fraud_offline_metric", 20),
    ("fraud_published", 15),
)


def print_row(row: dict[str, Any], header: bool = False) -> None:
    if header:
        print("  ".join(f"{name:>{w}}" for name, w in COLUMNS), flush=True)

    def fmt(v: Any, w: int) -> str:
        if v is None:
            return f"{'null':>{w}}"
        return f"{v:>{w}.4f}" if isinstance(v, float) else f"{v!s:>{w}}"

    print("  ".join(fmt(row.get(name), w) for name, w in COLUMNS), flush=True)


def summary_json(rows: list[dict[str, Any]]) -> str:
    keys = (
        "turn",
        "model_version",
        "decisions",
        "outcomes",
        "training_rows",
        "offline_metric",
        "ctr",
        "fraud_caught",
        "fraud_model_version",
        "fraud_offline_metric",
    )
    return json.dumps({"turns": [{k: r.get(k) for k in keys} for r in rows]})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m offline.runs.flywheel", description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DS_DATA_DIR", "data")) / "flywheel")
    ap.add_argument("--preset", default="tiny", help="world size: tiny or small")
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--decisions", type=int, default=1000, help="decisions per turn")
    ap.add_argument("--exploration", type=float, default=0.2, help="share of slots explored")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--fraud-days", type=float, default=1.5, help="days of live payments per turn (0 = no fraud)"
    )
    args = ap.parse_args(argv)

    started = time.perf_counter()
    local = None if os.environ.get("REDIS_URL") else LocalRedis().start()
    redis_url = os.environ.get("REDIS_URL") or local.url  # type: ignore[union-attr]
    try:
        rows = run_fresh(
            args.data_dir,
            redis_url,
            args.preset,
            args.turns,
            args.decisions,
            args.exploration,
            args.threads,
            args.fraud_days,
        )
    finally:
        if local is not None:
            local.stop()
    print(f"\nflywheel: {len(rows)} turns in {time.perf_counter() - started:.0f} s")
    for i, row in enumerate(rows):
        print_row(row, header=i == 0)
    print(summary_json(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
