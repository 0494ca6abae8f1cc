"""`make demo PROJECT=DIR` / `make example-movielens`: a project's recommendations end to end.

validate the sources -> bootstrap (embeddings, features, index, ranker; publish) and
materialize into a private Redis -> serve over gRPC (a separate process) -> real GetDecision
calls -> per-stage timings -> the offline metrics on the project's time-ordered split: the
ranker against popularity and embedding-only retrieval (NDCG@k, recall@k) with the margins.

Redis: $REDIS_URL when set (its data is overwritten), else a private redis-server on a free
port, stopped at the end. Exit 1 when validation fails or the ranker does not beat both
baselines on NDCG@k.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import grpc
import numpy as np

from decision_service import project as projects


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, required=True)
    ap.add_argument("--timing-requests", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    project = projects.use(args.project)
    return run(project, args.timing_requests, args.threads)


def metrics_table(manifest: dict) -> tuple[list[str], dict[str, float]]:
    """The lines of the offline metrics table and the ranker's NDCG margins over the baselines.

    The headline is what the server ranks: each held-out user's retrieved candidates (ANN +
    popular), ordered by the ranker, by popularity, by the embedding dot product (= the ANN
    order: embedding-only retrieval) or at random, against the user's positives after the
    split. A second column adds the positives retrieval missed to the candidates (an upper
    bound of ranking alone; every order gains from it). Margins are on the headline."""
    m = manifest["metrics"]
    k = next(key.split("@")[1] for key in m if key.startswith("model_ndcg@"))
    w = manifest["training"]["window_days"]
    lines = [
        f"  split: the ranker learns the events of days {w[0]:g}-{w[1]:g} from features as of day {w[0]:g}; "
        f"every order is evaluated on {m.get('retrieved_only_eval_users', '?')} users' "
        f"{m.get('relevance', 'events')} after day {w[1]:g}, with features, embeddings, index and "
        f"popularity as of day {w[1]:g} (as served)"
        if m.get("evaluated_as_of") == "T2"
        else f"  split: features and embeddings as of day {w[0]:g}; the ranker learns the events of days "
        f"{w[0]:g}-{w[1]:g}; evaluated on the events after day {w[1]:g} with the same state",
        f"  {'order':<20} {'NDCG@' + k:>8} {'recall@' + k:>9}   {'with missed positives added':>28}",
    ]
    for name, label in (
        ("model", "ranker (LightGBM)"),
        ("popularity", "popularity"),
        ("embedding", "embedding-only"),
        ("random", "random"),
    ):
        ndcg, recall = m[f"retrieved_only_{name}_ndcg@{k}"], m[f"retrieved_only_{name}_recall@{k}"]
        upper = f"{m[f'{name}_ndcg@{k}']:>13.4f} {m[f'{name}_recall@{k}']:>9.4f}"
        lines.append(f"  {label:<20} {ndcg:>8.4f} {recall:>9.4f}   {upper}")
    margins = {}
    for base in ("popularity", "embedding"):
        gain = m[f"retrieved_only_model_ndcg@{k}"] - m[f"retrieved_only_{base}_ndcg@{k}"]
        rel = gain / max(m[f"retrieved_only_{base}_ndcg@{k}"], 1e-9)
        recall = m[f"retrieved_only_model_recall@{k}"] - m[f"retrieved_only_{base}_recall@{k}"]
        lines.append(f"  ranker vs {base:<11} NDCG@{k} {gain:+.4f} ({rel:+.0%}), recall@{k} {recall:+.4f}")
        margins[base] = gain
    return lines, margins


def run(project: projects.Project, timing_requests: int = 200, threads: int = 2) -> int:
    from decision_service._generated.decision.v1 import decision_service_pb2 as pb
    from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
    from decision_service.devtools.local_redis import LocalRedis
    from decision_service.devtools.server_process import ServerProcess
    from decision_service.features import definitions
    from decision_service.models.registry import ModelRegistry
    from offline.cli import _validate, ranker_config
    from offline.features.interactions import load_interactions
    from offline.runs.bootstrap import bootstrap_world
    from offline.runs.demo import show_timings
    from offline.runs.workspace import section
    from offline.use_cases.recommendation import show_requests

    started = time.perf_counter()
    section(f"1. validate the sources of {project.name} ({project.directory})")
    report = _validate(project)
    print(report.summary())
    if report.errors:
        print("validation failed: nothing was bootstrapped", file=sys.stderr)
        return 1
    local = None if os.environ.get("REDIS_URL") else LocalRedis().start()
    redis_url = os.environ.get("REDIS_URL") or local.url  # type: ignore[union-attr]
    server = None
    try:
        section("2. bootstrap: features, embeddings, index, ranker, publish, materialize")
        world, loaded = load_interactions(definitions.INTERACTIONS, project.data_dir, project.name)
        print(
            f"  {loaded.users:,} users, {loaded.items:,} items, {loaded.events:,} events "
            f"({loaded.positives:,} positive: {', '.join(definitions.INTERACTIONS.positive)}), "
            f"{len(definitions.CATEGORIES)} categories learned"
        )
        version = bootstrap_world(
            world,
            project.state_dir,
            project.registry_dir,
            redis_url,
            ranker_config(project, world, threads),
            threads=threads,
            verbose=True,
            project=project.name,
        )

        section("3. gRPC server")
        logs = project.state_dir / "logs"
        server = ServerProcess(
            project.registry_dir,
            redis_url,
            env={projects.ENV: str(project.directory), "DS_LOG_DIR": str(logs)},
        ).start()
        channel = grpc.insecure_channel(server.address)
        stub = pb_grpc.DecisionServiceStub(channel)
        print(f"serving {project.name} on {server.address} (health SERVING); decision logs -> {logs}")

        section("4. GetDecision: recommendations")
        show_requests(stub, world)

        section(f"5. per-stage timings over {timing_requests} requests (server-side ms; client round trip)")
        users = np.random.default_rng(0).choice(world.user_ids, size=timing_requests)
        show_timings(
            stub,
            [
                pb.GetDecisionRequest(recommendation=pb.RecommendationRequest(user_id=str(u), num_items=10))
                for u in users
            ],
        )
        channel.close()
        code = server.terminate(timeout_s=30)
        print(f"server exited with code {code}")

        section("6. offline metrics on the time-ordered split")
        current = ModelRegistry(project.registry_dir).current("recommendation")
        print(f"  model version {current.name} (published by this run: {version.name})")
        lines, margins = metrics_table(current.manifest)
        print("\n".join(lines))
        beaten = all(gain > 0 for gain in margins.values())
        print(f"\n{project.name} finished in {time.perf_counter() - started:.0f} s")
        if not beaten:
            print("the ranker does not beat both baselines on NDCG", file=sys.stderr)
        return 0 if code == 0 and beaten else 1
    finally:
        if server is not None:
            server.kill()
        if local is not None:
            local.stop()


if __name__ == "__main__":
    sys.exit(main())
