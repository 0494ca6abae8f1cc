"""A run's shared workspace: the synthetic shop world, generated and bootstrapped once.

Every use case of a demo or flywheel run works on it (offline/use_cases/base.py): the world
under ``<data_dir>/world``, the registry under ``<data_dir>/registry``, and the shared
bootstrap (offline/runs/bootstrap.py: snapshots, embeddings, FAISS index, the ranker the
server needs to start, features into Redis) run before any use case's own hooks.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from offline.simulation.world import generate_world, preset
from offline.use_cases.base import Workspace


def new_workspace(
    data_dir: Path,
    redis_url: str,
    preset_name: str = "small",
    threads: int = 2,
    seed: int = 0,
    verbose: bool = False,
    banner: bool = False,
) -> Workspace:
    """Empties ``data_dir``, generates the world there and bootstraps it (features into
    ``redis_url``, overwriting its keys of the same ids)."""
    from offline.runs.bootstrap import bootstrap  # the shop's: imported on use (a project may not serve it)

    started = time.perf_counter()
    shutil.rmtree(data_dir, ignore_errors=True)
    ws = Workspace(data_dir, data_dir / "registry", redis_url, data_dir / "world", preset_name, threads, seed)
    if banner:
        section(f"1. Synthetic shop world ({preset_name})")
    info = generate_world(preset(preset_name), ws.world_dir)
    if verbose:
        print({k: info[k] for k in ("n_users", "n_items", "n_events") if k in info})
    if banner:
        section("2. Shared bootstrap: embeddings, FAISS index, ranker, features -> Redis")
    bootstrap(ws.world_dir, ws.registry_dir, redis_url=redis_url, threads=threads, verbose=verbose)
    print(f"world {preset_name} bootstrapped in {time.perf_counter() - started:.0f} s", flush=True)
    return ws


def section(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)), flush=True)
