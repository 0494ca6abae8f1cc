"""Times one USER + ITEM snapshot of a world: the declared groups through the compiler ("new")
or the hand-written numpy oracle of tests/offline/shop_reference.py ("old"), with peak RSS.

    python -m loadtests.bench_snapshot new --world /tmp/bench_world
"""

from __future__ import annotations

import argparse
import resource
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m loadtests.bench_snapshot", description=__doc__.splitlines()[0]
    )
    ap.add_argument("which", choices=("old", "new"))
    ap.add_argument("--world", required=True, help="world directory (python -m offline.simulation.world)")
    args = ap.parse_args(argv)
    from offline.simulation.world import World

    world = World.load(args.world)
    t0 = time.perf_counter()
    if args.which == "old":
        from tests.offline.shop_reference import reference_features

        users, items = reference_features(world, world.now_ms)
    else:
        from offline.features.snapshot import compute_snapshot

        snap = compute_snapshot(world, world.now_ms)
        users, items = snap.users, snap.items
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.which}: {seconds:.1f} s, peak RSS {peak:,.0f} MB, users {users.shape}, items {items.shape}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
