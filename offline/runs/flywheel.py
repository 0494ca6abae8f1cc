"""`make flywheel`: decide, collect, organize, learn, reload, and again: the loop, turned.

Setup: a synthetic shop world is generated and bootstrapped once (offline/runs/workspace.py),
then every use case of ``offline.use_cases.OFFLINE_USE_CASES`` (or those of ``--use-cases``)
``start``s: its data and a deliberately weak model published as CURRENT. A real gRPC server
runs as its own process with exploration slots (logged propensities) and hot reload on.

Each turn: every use case's ``turn`` (simulated traffic through GetDecision, what the
simulated world did afterwards through RecordOutcome); a wait until the longest (compressed)
label window closed and the logs flushed; every use case's ``learn`` (training set from the
Parquet decision and outcome logs, candidate, publish gate against CURRENT on the same
held-out rows); then a wait until the server answers with every newly published version.
What each use case does: offline/use_cases/<name>.py.

Windows are seconds here (the simulation compresses time). The table has the columns the
use cases declare; the last output line is one JSON object with a row per turn (those
columns), for scripts. Settings of a use case: ``--set <name>.<field>=<value>``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.devtools.local_redis import LocalRedis
from decision_service.devtools.server_process import ServerProcess
from offline.runs.workspace import new_workspace
from offline.use_cases import OFFLINE_USE_CASES, by_name
from offline.use_cases.base import Learned, OfflineUseCase, Workspace

LOG_FLUSH_S = 0.6
"""Waited on top of the longest label window: the server flushes its logs every 0.5 s."""


def run_flywheel(
    ws: Workspace,
    use_cases: Sequence[OfflineUseCase],
    turns: int = 4,
    decisions: int = 800,
    exploration_share: float = 0.2,
) -> list[dict[str, Any]]:
    """Starts every use case on the bootstrapped workspace, runs ``turns`` turns against a
    server of its own; returns one row per turn."""
    logs = ws.data_dir / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    states = {uc.name: uc.start(ws, turns, decisions) for uc in use_cases}
    env = dict(
        DS_EXPLORATION_SHARE=str(exploration_share),
        DS_MODEL_RELOAD_INTERVAL_S="0.5",
        DS_LOG_FLUSH_INTERVAL_S="0.5",
        DS_LOG_DIR=str(logs),
        DS_LOG_LEVEL="WARNING",
    )
    wait_s = max((uc.label_wait_s for uc in use_cases), default=0.0) + LOG_FLUSH_S
    server = ServerProcess(ws.registry_dir, ws.redis_url, env=env).start()
    rows: list[dict[str, Any]] = []
    try:
        channel = grpc.insecure_channel(server.address)
        stub = pb_grpc.DecisionServiceStub(channel)
        for turn in range(turns):
            t0 = time.perf_counter()
            row: dict[str, Any] = {"turn": turn}
            for uc in use_cases:
                row.update(uc.turn(stub, states[uc.name]))
            time.sleep(wait_s)  # the label windows close, the logs flush
            published: dict[str, str] = {}
            for uc in use_cases:
                learned = uc.learn(states[uc.name], logs, ws.dir(uc.name), turn)
                row.update(learned_fields(uc.name, learned))
                for line in learned.lines:
                    print(f"turn {turn}: {line}", flush=True)
                if learned.published:
                    published[uc.name] = learned.published
            if published and turn < turns - 1:  # the next turn reports the version it met
                late = wait_served(stub, [uc for uc in use_cases if uc.name in published], published)
                for name in late:
                    print(f"turn {turn}: {name} {published[name]} not served in time", flush=True)
            row["seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            print_row(row, columns(use_cases), header=turn == 0)
        channel.close()
    finally:
        try:
            server.terminate(timeout_s=30)
        except subprocess.TimeoutExpired:
            server.kill()
    return rows


def learned_fields(name: str, learned: Learned) -> dict[str, Any]:
    """A learn step's row fields: ``<name>_training_rows``, ``<name>_offline_metric`` (CURRENT
    on the held-out rows), ``<name>_candidate_metric``, ``<name>_published``, then ``extra``."""
    return {
        f"{name}_training_rows": learned.training_rows,
        f"{name}_offline_metric": learned.current,
        f"{name}_candidate_metric": learned.candidate,
        f"{name}_published": learned.published,
        **learned.extra,
    }


def wait_served(
    stub: pb_grpc.DecisionServiceStub,
    use_cases: Sequence[OfflineUseCase],
    versions: dict[str, str],
    timeout_s: float = 30.0,
) -> list[str]:
    """Polls each use case's ``served_version`` until the server answers with ``versions``;
    returns the names still not served at the timeout."""
    pending = list(use_cases)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        pending = [uc for uc in pending if uc.served_version(stub) != versions[uc.name]]
        if pending:
            time.sleep(0.2)
    return [uc.name for uc in pending]


def run_fresh(
    data_dir: Path,
    redis_url: str,
    preset_name: str = "tiny",
    turns: int = 4,
    decisions: int = 1000,
    exploration_share: float = 0.2,
    threads: int = 2,
    use_cases: Sequence[OfflineUseCase] = OFFLINE_USE_CASES,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Generates and bootstraps a world under ``data_dir`` (features into ``redis_url``,
    overwriting its keys of the same ids), then runs the flywheel of ``use_cases`` on it."""
    ws = new_workspace(data_dir, redis_url, preset_name, threads, seed)
    return run_flywheel(ws, use_cases, turns, decisions, exploration_share)


def columns(use_cases: Sequence[OfflineUseCase]) -> tuple[tuple[str, int], ...]:
    """The table's columns: the turn, then each use case's."""
    return (("turn", 4), *(c for uc in use_cases for c in uc.columns))


def print_row(row: dict[str, Any], cols: Sequence[tuple[str, int]], header: bool = False) -> None:
    if header:
        print("  ".join(f"{name:>{w}}" for name, w in cols), flush=True)

    def fmt(v: Any, w: int) -> str:
        if v is None:
            return f"{'null':>{w}}"
        return f"{v:>{w}.4f}" if isinstance(v, float) else f"{v!s:>{w}}"

    print("  ".join(fmt(row.get(name), w) for name, w in cols), flush=True)


def summary_json(rows: list[dict[str, Any]], use_cases: Sequence[OfflineUseCase] = OFFLINE_USE_CASES) -> str:
    """One JSON line: per turn, the turn and the columns the use cases declare."""
    keys = [name for name, _ in columns(use_cases)]
    return json.dumps({"turns": [{k: r.get(k) for k in keys} for r in rows]})


def configured(assignments: Sequence[str], names: Sequence[str] | None = None) -> list[OfflineUseCase]:
    """The use cases ``names`` (all when None), in registry order, with ``<name>.<field>=<value>``
    settings applied (a use case's settings are the fields of its frozen dataclass)."""
    chosen = [by_name(n) for n in names] if names else list(OFFLINE_USE_CASES)
    order = {uc.name: i for i, uc in enumerate(OFFLINE_USE_CASES)}
    chosen.sort(key=lambda uc: order[uc.name])
    out = {uc.name: uc for uc in chosen}
    for text in assignments:
        target, sep, value = text.partition("=")
        name, dot, key = target.partition(".")
        if not (sep and dot and key):
            raise ValueError(f"--set {text!r}: expected <use case>.<field>=<value>")
        if name not in out:
            raise ValueError(f"--set {text!r}: use case {name!r} is not in this run ({', '.join(out)})")
        uc = out[name]
        fields = {f.name for f in dataclasses.fields(uc)} if dataclasses.is_dataclass(uc) else set()  # type: ignore[arg-type]
        if key not in fields or key in ("name", "title", "columns"):
            raise ValueError(f"--set {text!r}: {name} has no setting {key!r}")
        current = getattr(uc, key)
        typed = value.lower() in ("1", "true", "yes") if isinstance(current, bool) else type(current)(value)
        out[name] = dataclasses.replace(uc, **{key: typed})  # type: ignore[type-var]
    return list(out.values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m offline.runs.flywheel", description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DS_DATA_DIR", "data")) / "flywheel")
    ap.add_argument("--preset", default="tiny", help="world size: tiny or small")
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--decisions", type=int, default=1000, help="decisions per turn (each use case's unit)")
    ap.add_argument("--exploration", type=float, default=0.2, help="share of slots explored")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--use-cases",
        default=",".join(uc.name for uc in OFFLINE_USE_CASES),
        help="comma-separated use cases to turn (default: all: %(default)s)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME.FIELD=VALUE",
        help="a use case's setting, e.g. the payments' days per turn (repeatable)",
    )
    args = ap.parse_args(argv)
    try:
        use_cases = configured(args.set, [n.strip() for n in args.use_cases.split(",") if n.strip()])
    except ValueError as exc:
        ap.error(str(exc))

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
            use_cases,
        )
    finally:
        if local is not None:
            local.stop()
    print(f"\nflywheel: {len(rows)} turns in {time.perf_counter() - started:.0f} s")
    for i, row in enumerate(rows):
        print_row(row, columns(use_cases), header=i == 0)
    print(summary_json(rows, use_cases))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
