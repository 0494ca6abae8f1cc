"""Batch feature snapshot: USER and ITEM group matrices of a world as of a point in time.

The values come from the groups' declarations (decision_service/features/definitions.py)
through the one compiler (offline/features/compiler.py) that also computes point-in-time
training rows: ``compute_snapshot(world, as_of_ms)`` uses only events strictly before
``as_of_ms`` (an event at or after it cannot change any value). Rows are world rows: user row
``r`` is ``world.user_ids[r]``, item row ``r`` is ``world.item_ids[r]`` (= catalog row =
FAISS id). Columns follow ``USER.columns`` / ``ITEM.columns`` exactly; users or items without
history get the declared defaults.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from decision_service.features.definitions import ITEM, USER
from offline.features import compiler

if TYPE_CHECKING:  # the batch jobs read a World's files; the loop never imports the simulator
    from offline.simulation.world import World


@dataclass(frozen=True)
class Snapshot:
    """Feature matrices of every user and item of a world at ``as_of_ms``."""

    as_of_ms: int
    user_ids: np.ndarray  # str [n_users]
    users: np.ndarray  # float32 [n_users, USER.width]
    item_ids: np.ndarray  # str [n_items]
    items: np.ndarray  # float32 [n_items, ITEM.width]
    item_listed: np.ndarray  # bool [n_items]: listed before as_of (exists in the catalog)

    def save(self, path: str | Path) -> None:
        np.savez(
            path,
            as_of_ms=self.as_of_ms,
            user_ids=self.user_ids.astype(str),
            users=self.users,
            item_ids=self.item_ids.astype(str),
            items=self.items,
            item_listed=self.item_listed,
        )

    @classmethod
    def load(cls, path: str | Path) -> Snapshot:
        with np.load(path) as z:
            return cls(
                as_of_ms=int(z["as_of_ms"]),
                user_ids=z["user_ids"].astype(object),
                users=z["users"],
                item_ids=z["item_ids"].astype(object),
                items=z["items"],
                item_listed=z["item_listed"],
            )


def compute_snapshot(world: World, as_of_ms: int) -> Snapshot:
    """USER and ITEM features of every entity from events strictly before ``as_of_ms``.

    On failure: ValueError for a world not loaded from files (``World.load``), and the
    compiler's CompileError / SourceError for files that do not match the declarations."""
    if world.directory is None:
        raise ValueError("compute_snapshot reads the world's files: load the world with World.load(dir)")
    _, users = compiler.snapshot(USER, as_of_ms, world.directory, entity_ids=list(world.user_ids))
    _, items = compiler.snapshot(ITEM, as_of_ms, world.directory, entity_ids=list(world.item_ids))
    return Snapshot(
        as_of_ms=int(as_of_ms),
        user_ids=world.user_ids,
        users=users,
        item_ids=world.item_ids,
        items=items,
        item_listed=world.item_listed_ms < as_of_ms,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m offline.features.snapshot", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--world", default="data/world", help="world directory")
    ap.add_argument(
        "--as-of-day",
        type=float,
        default=None,
        help="snapshot time in days after the world start (default: world now)",
    )
    ap.add_argument("--out", default=None, help="write the snapshot to this .npz file")
    args = ap.parse_args(argv)
    from offline.simulation.world import World

    world = World.load(args.world)
    as_of = world.now_ms if args.as_of_day is None else world.day_ms(args.as_of_day)
    t0 = time.perf_counter()
    snap = compute_snapshot(world, as_of)
    dt = time.perf_counter() - t0
    print(f"snapshot at {as_of}: users {snap.users.shape}, items {snap.items.shape} in {dt:.2f} s")
    for name, mat, cols in (("user", snap.users, USER.columns), ("item", snap.items, ITEM.columns)):
        print(
            f"  {name} feature means: "
            + ", ".join(f"{col}={mat[:, k].mean():.3g}" for k, col in enumerate(cols[:8]))
        )
    if args.out:
        snap.save(args.out)
        print(f"  saved -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
