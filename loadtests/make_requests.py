"""Writes realistic GetDecision requests from a synthetic world as JSON lines (ghz / loadgen data).

Users are drawn in proportion to their activity (busy users ask more often), with a small
share of never-seen users (popular fallback) and some requests with exclusions or a
category allow-list, as product backends send them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from google.protobuf import json_format

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service.features.definitions import CATEGORIES
from offline.simulation.world import World

SURFACES = ("home", "pdp", "cart", "search")
DEVICES = ("ios", "android", "web")


def recommendation_requests(
    world: World, n: int, num_items: int = 20, seed: int = 0
) -> list[pb.GetDecisionRequest]:
    rng = np.random.default_rng(seed)
    activity = np.bincount(world.event_user, minlength=world.n_users).astype(np.float64) + 1.0
    users = rng.choice(world.n_users, size=n, p=activity / activity.sum())
    out = []
    for i, u in enumerate(users):
        user_id = f"new-visitor-{i}" if rng.random() < 0.01 else str(world.user_ids[u])
        rec = pb.RecommendationRequest(
            user_id=user_id,
            num_items=num_items,
            context=pb.RequestContext(
                surface=SURFACES[int(rng.integers(len(SURFACES)))],
                device=DEVICES[int(rng.integers(len(DEVICES)))],
                locale="en-GB",
            ),
        )
        if rng.random() < 0.2:
            rec.exclude_item_ids.extend(str(world.item_ids[j]) for j in rng.integers(0, world.n_items, 3))
        if rng.random() < 0.1:
            rec.allowed_categories.append(CATEGORIES[int(rng.integers(len(CATEGORIES)))])
        out.append(pb.GetDecisionRequest(request_id=f"load-{i}", recommendation=rec))
    return out


def write_jsonl(requests: list[pb.GetDecisionRequest], path: str | Path) -> None:
    """One request per line: the Python load generator's input."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in requests:
            f.write(json_format.MessageToJson(r, indent=None) + "\n")


def write_ghz_array(requests: list[pb.GetDecisionRequest], path: str | Path) -> None:
    """A JSON array of requests: ghz sends them round-robin (``--data-file``)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write("[\n" + ",\n".join(json_format.MessageToJson(r, indent=None) for r in requests) + "\n]\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m loadtests.make_requests", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--world", default="data/world")
    ap.add_argument("--out", default="loadtests/data/recommendations.jsonl")
    ap.add_argument("--ghz-out", default="loadtests/data/recommendations.json", help="JSON array for ghz")
    ap.add_argument("-n", type=int, default=10_000)
    ap.add_argument("--num-items", type=int, default=20)
    args = ap.parse_args(argv)
    requests = recommendation_requests(World.load(args.world), args.n, args.num_items)
    write_jsonl(requests, args.out)
    write_ghz_array(requests, args.ghz_out)
    print(f"wrote {args.n} requests to {args.out} and {args.ghz_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
