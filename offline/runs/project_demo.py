"""`make demo PROJECT=DIR` / `make example-movielens` / `make example-payments`: a project end to end.

validate the sources -> bootstrap each served use case (recommendation: embeddings, features,
index, ranker; fraud: profiles, velocity, neighbours, model) and materialize into a private
Redis -> serve over gRPC (a separate process) -> real GetDecision calls -> per-stage timings
-> the offline metrics on the project's time-ordered split: the ranker against popularity
and embedding-only retrieval (NDCG@k, recall@k), the fraud model against the rules-only
baseline (ROC AUC, average precision), with the margins.

Redis: $REDIS_URL when set (its data is overwritten), else a private redis-server on a free
port, stopped at the end. Exit 1 when validation fails or the ranker does not beat both
baselines on NDCG@k or the fraud model does not beat the rules.
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
    """validate -> per served use case (recommendation, fraud): bootstrap into a private
    Redis -> one server for the project -> real GetDecision calls and timings -> the offline
    metrics against the baselines. 0 when every model beats its baselines and the server
    exits cleanly."""
    from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
    from decision_service.devtools.local_redis import LocalRedis
    from decision_service.devtools.server_process import ServerProcess
    from offline.cli import BOOTSTRAPPED, _validate
    from offline.runs.workspace import section

    use_cases = [u for u in BOOTSTRAPPED if project.serves(u)]
    if not use_cases:
        print(f"project {project.name} serves none of {BOOTSTRAPPED}", file=sys.stderr)
        return 1
    started = time.perf_counter()
    section(f"1. validate the sources of {project.name} ({project.directory})")
    report = _validate(project)
    print(report.summary())
    if report.errors:
        print("validation failed: nothing was bootstrapped", file=sys.stderr)
        return 1
    from offline.features.vocabulary import persist_learned

    persist_learned()  # the server process reads the stored vocabularies
    local = None if os.environ.get("REDIS_URL") else LocalRedis().start()
    redis_url = os.environ.get("REDIS_URL") or local.url  # type: ignore[union-attr]
    server = None
    try:
        demos = [
            (RecommendationDemo if u == "recommendation" else FraudDemo)(project, redis_url, threads)
            for u in use_cases
        ]
        for d in demos:
            section(f"2. bootstrap {d.use_case}: {d.steps}")
            d.bootstrap()

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

        for d in demos:
            section(f"4. GetDecision: {d.use_case}")
            d.show_requests(stub)
            section(f"5. {d.use_case}: per-stage timings over {timing_requests} requests (server-side ms)")
            d.show_timings(stub, timing_requests)
        channel.close()
        code = server.terminate(timeout_s=30)
        print(f"server exited with code {code}")

        beaten = True
        for d in demos:
            section(f"6. {d.use_case}: offline metrics on the time-ordered split")
            beaten &= d.show_metrics()
        print(f"\n{project.name} finished in {time.perf_counter() - started:.0f} s")
        return 0 if code == 0 and beaten else 1
    finally:
        if server is not None:
            server.kill()
        if local is not None:
            local.stop()


class RecommendationDemo:
    use_case = "recommendation"
    steps = "features, embeddings, index, ranker, publish, materialize"

    def __init__(self, project: projects.Project, redis_url: str, threads: int) -> None:
        from decision_service.features import definitions
        from offline.features.interactions import load_interactions

        self.project, self.redis_url, self.threads = project, redis_url, threads
        self.world, loaded = load_interactions(definitions.INTERACTIONS, project.data_dir, project.name)
        print(
            f"  {loaded.users:,} users, {loaded.items:,} items, {loaded.events:,} events "
            f"({loaded.positives:,} positive: {', '.join(definitions.INTERACTIONS.positive)}), "
            f"{len(definitions.CATEGORIES)} categories learned"
        )

    def bootstrap(self) -> None:
        from offline.cli import ranker_config
        from offline.runs.bootstrap import bootstrap_world

        self.version = bootstrap_world(
            self.world,
            self.project.state_dir,
            self.project.registry_dir,
            self.redis_url,
            ranker_config(self.project, self.world, self.threads),
            threads=self.threads,
            verbose=True,
            project=self.project.name,
        )

    def show_requests(self, stub) -> None:  # stub: DecisionServiceStub
        from offline.use_cases.recommendation import show_requests

        show_requests(stub, self.world)

    def show_timings(self, stub, n: int) -> None:
        from decision_service._generated.decision.v1 import decision_service_pb2 as pb
        from offline.runs.demo import show_timings

        users = np.random.default_rng(0).choice(self.world.user_ids, size=n)
        show_timings(
            stub,
            [
                pb.GetDecisionRequest(recommendation=pb.RecommendationRequest(user_id=str(u), num_items=10))
                for u in users
            ],
        )

    def show_metrics(self) -> bool:
        """Prints the table; True when the ranker beats both baselines on NDCG."""
        from decision_service.models.registry import ModelRegistry

        current = ModelRegistry(self.project.registry_dir).current(self.use_case)
        print(f"  model version {current.name} (published by this run: {self.version.name})")
        lines, margins = metrics_table(current.manifest)
        print("\n".join(lines))
        beaten = all(gain > 0 for gain in margins.values())
        if not beaten:
            print("the ranker does not beat both baselines on NDCG", file=sys.stderr)
        return beaten


class FraudDemo:
    use_case = "fraud"
    steps = "profiles, velocity, neighbours, model, publish, materialize"

    def __init__(self, project: projects.Project, redis_url: str, threads: int) -> None:
        from decision_service.features import definitions
        from offline.features.payments import load_payments

        self.project, self.redis_url, self.threads = project, redis_url, threads
        self.fraud = definitions.FRAUD
        self.world, loaded = load_payments(self.fraud, project.data_dir, project.name)
        print(f"  {loaded.summary()}")
        if self.fraud.note():
            print("  " + self.fraud.note().replace("\n", "\n  "))

    def bootstrap(self) -> None:
        from offline.cli import fraud_config
        from offline.runs.bootstrap_fraud import bootstrap_fraud

        cfg = fraud_config(self.project, self.world, self.threads)
        self.version = bootstrap_fraud(
            self.world, self.project.registry_dir, self.redis_url, cfg, verbose=True
        )

    def _requests(self, rows: np.ndarray, prefix: str) -> list:
        from offline.use_cases.fraud import payment_request

        w = self.world
        return [
            payment_request(w, int(i), f"{prefix}-{time.time_ns()}-{j}", f"card-{w.user[i]}")
            for j, i in enumerate(rows)
        ]

    def show_requests(self, stub) -> None:
        """The latest labelled fraud and the latest payment without a label, replayed now."""
        from decision_service._generated.decision.v1 import decision_service_pb2 as pb
        from decision_service.features.currencies import CURRENCIES

        w = self.world
        examples = [
            ("the latest payment labelled fraud, replayed now", np.flatnonzero(w.is_fraud)[-1:]),
            ("the latest payment not labelled fraud, replayed now", np.flatnonzero(~w.is_fraud)[-1:]),
        ]
        for title, rows in examples:
            request = self._requests(rows, "demo")[0]
            reply = stub.GetDecision(request, timeout=5.0)
            f = reply.fraud
            degraded = ", ".join(f"{d.stage}:{d.reason}" for d in reply.degraded) or "none"
            action = pb.FraudAction.Name(f.action).removeprefix("FRAUD_ACTION_")
            t = request.fraud_check
            amount = t.amount_minor / 10 ** CURRENCIES[t.currency][0]
            print(f"\n## {title}: {t.user_id} pays {amount:,.2f} {t.currency} at {t.merchant_id}")
            p_fraud = f"p(fraud) {f.fraud_probability:.3f}"
            print(f"  {action}  risk {f.risk_score}/99  {p_fraud}  degraded: {degraded}")
            for reason in f.reasons:
                print(f"    reason {reason.code:<26} {reason.feature} ({reason.contribution:+.2f})")

    def show_timings(self, stub, n: int) -> None:
        from offline.runs.demo import show_timings

        rows = np.random.default_rng(0).choice(self.world.n, size=n)
        show_timings(stub, self._requests(rows, "timing"))

    def show_metrics(self) -> bool:
        """Prints model vs the rules-only baseline; True when the model beats it on both."""
        from decision_service.models.registry import ModelRegistry

        current = ModelRegistry(self.project.registry_dir).current(self.use_case)
        m, tr = current.manifest["metrics"], current.manifest["training"]
        print(f"  model version {current.name} (published by this run: {self.version.name})")
        (a, b), (c, d) = tr["window_days"], m["eval_window_days"]
        print(
            f"  split: trained on the payments of days {a:g}-{b:g} with the labels reported by day "
            f"{tr['labels_as_of_day']:g}; evaluated on {m['eval_rows']:,} payments of days {c:g}-{d:g} "
            f"({m['eval_positives']:,} fraud)"
        )
        print(f"  {'':<20} {'ROC AUC':>8} {'avg precision':>14}")
        print(f"  {'model (LightGBM)':<20} {m['model_auc']:>8.4f} {m['model_average_precision']:>14.4f}")
        print(f"  {'rules only':<20} {m['rules_auc']:>8.4f} {m['rules_average_precision']:>14.4f}")
        gain_auc = m["model_auc"] - m["rules_auc"]
        gain_ap = m["model_average_precision"] - m["rules_average_precision"]
        print(f"  model vs rules       AUC {gain_auc:+.4f}, average precision {gain_ap:+.4f}")
        left_out = current.manifest.get("left_out") or {}
        if left_out:
            names = ", ".join(left_out)
            print(f"  {len(left_out)} standard features left out (the table lacks their columns): {names}")
        beaten = gain_auc > 0 and gain_ap > 0
        if not beaten:
            print("the fraud model does not beat the rules-only baseline", file=sys.stderr)
        return beaten


if __name__ == "__main__":
    sys.exit(main())
