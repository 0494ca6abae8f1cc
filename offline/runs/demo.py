"""`make demo`: the recommendation decision end to end, from nothing.

Generates the small synthetic world, runs the bootstrap jobs (embeddings, FAISS index,
features into Redis, LightGBM ranker, registry version), starts the gRPC server as its own
process, sends real GetDecision calls through the generated stub, prints the answers and
per-stage timings, and shuts everything down (SIGTERM, exit 0).

Redis: $REDIS_URL when set (its data is overwritten with the demo's features), else a
private redis-server on a free port that is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.devtools.local_redis import LocalRedis
from decision_service.devtools.server_process import ServerProcess
from decision_service.features.definitions import CATEGORIES
from decision_service.server.servicer import DEBUG_TIMINGS_HEADER, TIMINGS_TRAILER
from offline.runs.bootstrap import bootstrap
from offline.runs.demo_fraud import bootstrap_fraud_world, show_fraud_checks
from offline.runs.flywheel import run_fresh, summary_json
from offline.simulation.world import World, generate_world, preset

SOURCE = {1: "ann", 2: "popular", 3: "explore"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DS_DATA_DIR", "data")) / "demo")
    parser.add_argument("--preset", default="small", help="world size: tiny, small or bench")
    parser.add_argument("--timing-requests", type=int, default=300)
    parser.add_argument("--flywheel-decisions", type=int, default=400, help="decisions per flywheel turn")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    shutil.rmtree(args.data_dir, ignore_errors=True)
    world_dir, registry_dir = args.data_dir / "world", args.data_dir / "registry"

    banner(f"1. Synthetic world ({args.preset})")
    info = generate_world(preset(args.preset), world_dir)
    print({k: info[k] for k in ("n_users", "n_items", "n_events") if k in info})

    local = None if os.environ.get("REDIS_URL") else LocalRedis().start()
    redis_url = os.environ.get("REDIS_URL") or local.url  # type: ignore[union-attr]
    server = None
    try:
        banner("2. Bootstrap jobs: embeddings, FAISS index, features -> Redis, LightGBM ranker")
        bootstrap(world_dir, registry_dir, redis_url=redis_url, verbose=True)
        banner("2b. Fraud bootstrap: payments world, LightGBM + neighbour index, profiles -> Redis")
        fraud_world_dir = bootstrap_fraud_world(args.data_dir, registry_dir, redis_url)

        banner("3. gRPC server")
        server = ServerProcess(registry_dir, redis_url).start()
        channel = grpc.insecure_channel(server.address)
        stub = pb_grpc.DecisionServiceStub(channel)
        print(f"serving on {server.address} (health SERVING)")

        world = World.load(world_dir)
        show_requests(stub, world)
        banner("4b. GetDecision: fraud checks")
        show_fraud_checks(stub, fraud_world_dir, redis_url)
        show_timings(stub, world, args.timing_requests)

        banner("6. Shutdown")
        channel.close()
        code = server.terminate(timeout_s=30)
        print(f"server exited with code {code}")

        banner("7. The flywheel, short (tiny world): weak model -> users respond -> retrain -> reload")
        # A tiny world of its own: there a popularity-only start is clearly weak (on the small
        # world ANN candidates are already personal, so popularity among them is not).
        rows = run_fresh(args.data_dir / "flywheel", redis_url, "tiny", turns=2,
                         decisions=args.flywheel_decisions, fraud_days_per_turn=1.0)
        print(summary_json(rows))
        print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
        return 0 if code == 0 else 1
    finally:
        if server is not None:
            server.kill()  # no-op after a clean terminate
        if local is not None:
            local.stop()


def show_requests(stub: pb_grpc.DecisionServiceStub, world: World) -> None:
    banner("4. GetDecision")
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
    call(
        stub,
        f"same user, only categories [{fav}, books]",
        user_id=user,
        num_items=6,
        allowed_categories=[fav, "books"],
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
    request = pb.GetDecisionRequest(recommendation=pb.RecommendationRequest(**fields))
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


def show_timings(stub: pb_grpc.DecisionServiceStub, world: World, n: int) -> None:
    banner(f"5. Per-stage timings over {n} requests (server-side ms; client round trip)")
    rng = np.random.default_rng(0)
    stages: dict[str, list[float]] = {}
    total: list[float] = []
    for user in rng.choice(world.user_ids, size=n):
        request = pb.GetDecisionRequest(
            recommendation=pb.RecommendationRequest(user_id=str(user), num_items=20)
        )
        start = time.perf_counter()
        _, call_ = stub.GetDecision.with_call(request, timeout=2.0, metadata=((DEBUG_TIMINGS_HEADER, "1"),))
        total.append((time.perf_counter() - start) * 1000)
        for key, value in call_.trailing_metadata() or ():
            if key == TIMINGS_TRAILER:
                for part in value.split(";"):
                    name, ms = part.split("=")
                    stages.setdefault(name, []).append(float(ms))
    print(f"  {'stage':<22} {'median':>8} {'p99':>8}")
    for name, values in stages.items():
        print(f"  {name:<22} {statistics.median(values):>8.3f} {np.percentile(values, 99):>8.3f}")
    print(f"  {'client round trip':<22} {statistics.median(total):>8.3f} {np.percentile(total, 99):>8.3f}")



def banner(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)))


if __name__ == "__main__":
    sys.exit(main())
