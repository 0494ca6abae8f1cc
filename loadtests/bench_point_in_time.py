"""Times point-in-time features at every transaction's own time (the fraud training rows): the
hand-written numpy profiles (tests/offline/fraud_reference.py, the oracle the declared groups
replaced in offline/features/fraud_features.py) against the
declared FRAUD_USER, MERCHANT and DEVICE groups through the compiler
(offline/features/compiler.py), and checks they are equal (rtol / atol 1e-5); optionally
also a snapshot of the shop's USER and ITEM groups at world now.

    DS_PROJECT=examples/synthetic python -m loadtests.bench_point_in_time \\
        --world /tmp/fraud_small [--shop-world /tmp/shop_small] [--strategy join]

A missing ``--world`` is generated (payments preset ``--preset``, "small": ~227k
transactions); so is a missing ``--shop-world`` (shop preset "small").
``--strategy join`` times the compiler's join path for every aggregate (every query row
joined to every earlier event of its entity: quadratic for a busy merchant).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def _fraud(world_dir: Path, preset: str, strategy: str, groups: list[str]) -> bool:
    from decision_service.features.definitions import DEVICE, FRAUD_USER, MERCHANT
    from offline.features import compiler
    from offline.simulation.fraud_world import FraudWorld, fraud_preset, generate_fraud_world
    from tests.offline.fraud_reference import HandWrittenProfiles

    if not (world_dir / "transactions.parquet").exists():
        t0 = time.perf_counter()
        generate_fraud_world(fraud_preset(preset), world_dir)
        print(f"generated payments world {preset!r} in {time.perf_counter() - t0:.1f} s -> {world_dir}")
    world = FraudWorld.load(world_dir)
    t0 = time.perf_counter()
    history = HandWrittenProfiles(world)
    build_s = time.perf_counter() - t0
    t = world.occurred_ms
    parties = {
        FRAUD_USER.name: (FRAUD_USER, world.user, world.user_ids, history.fraud_user),
        MERCHANT.name: (MERCHANT, world.merchant, world.merchant_ids, history.merchant),
        DEVICE.name: (DEVICE, world.device, world.device_ids, history.device),
    }
    print(f"{world.n:,} transactions; hand-written profiles built in {build_s:.2f} s")
    print(f"{'group':<12} {'entities':>9} {'max rows/entity':>16} {'numpy s':>8} {'compiler s':>11}  equal")
    ok = True
    for name in groups:
        group, index, ids, hand_written = parties[name]
        t0 = time.perf_counter()
        hand = hand_written(index, t)
        numpy_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        declared = compiler.point_in_time(group, ids[index], t, world_dir, strategy=strategy)
        compiler_s = time.perf_counter() - t0
        close = np.isclose(declared, hand, rtol=1e-5, atol=1e-5)
        bad = [
            f"{c} ({int((~close[:, j]).sum())} rows)"
            for j, c in enumerate(group.columns)
            if not close[:, j].all()
        ]
        ok &= not bad
        busiest = int(np.bincount(index).max())
        print(
            f"{name:<12} {len(np.unique(index)):>9,} {busiest:>16,} {numpy_s:>8.2f} {compiler_s:>11.2f}  "
            + ("yes" if not bad else "NO: " + ", ".join(bad))
        )
    return ok


def _shop(world_dir: Path, strategy: str, repeat: int) -> None:
    from decision_service.features.definitions import ITEM, USER
    from offline.features import compiler
    from offline.simulation.world import World, generate_world, preset

    if not (world_dir / "interactions.parquet").exists():
        generate_world(preset("small"), world_dir)
        print(f"generated shop world 'small' -> {world_dir}")
    world = World.load(world_dir)
    for group, ids in ((USER, world.user_ids), (ITEM, world.item_ids)):
        runs = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            compiler.snapshot(group, world.now_ms, world_dir, entity_ids=list(ids), strategy=strategy)
            runs.append(time.perf_counter() - t0)
        print(f"snapshot {group.name:<6} {len(ids):>7,} entities: best {min(runs):.2f} s of {repeat}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m loadtests.bench_point_in_time", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--world", default="/tmp/bench_fraud_small", help="payments world directory")
    ap.add_argument("--preset", default="small", help="payments preset to generate a missing world")
    ap.add_argument("--strategy", default="auto", choices=("auto", "running", "join"))
    ap.add_argument("--groups", default="fraud_user,merchant,device")
    ap.add_argument("--shop-world", default=None, help="also time USER / ITEM snapshots of this world")
    ap.add_argument("--repeat", type=int, default=3, help="snapshot runs (the best is printed)")
    args = ap.parse_args(argv)
    ok = True
    if args.groups:
        ok = _fraud(Path(args.world), args.preset, args.strategy, args.groups.split(","))
    if args.shop_world:
        _shop(Path(args.shop_world), args.strategy, args.repeat)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
