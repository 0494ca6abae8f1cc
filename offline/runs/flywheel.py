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
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.config import ServiceConfig
from decision_service.devtools.local_redis import LocalRedis
from decision_service.devtools.server_process import ServerProcess
from decision_service.models.registry import ModelRegistry
from offline import rollout as rollout_ops
from offline.runs.workspace import new_workspace
from offline.use_cases import OFFLINE_USE_CASES, by_name
from offline.use_cases.base import Learned, OfflineUseCase, Workspace
from offline.watch.online import CanaryRule
from offline.watch.results import WAIT

LOG_FLUSH_S = 0.6
"""Waited on top of the longest label window: the server flushes its logs every 0.5 s."""


def run_flywheel(
    ws: Workspace,
    use_cases: Sequence[OfflineUseCase],
    turns: int = 4,
    decisions: int = 800,
    exploration_share: float = 0.2,
    rollout: bool = False,
    canary_share: float = 0.5,
    report: Path | None = None,
) -> list[dict[str, Any]]:
    """Starts every use case on the bootstrapped workspace, runs ``turns`` turns against a
    server of its own; returns one row per turn.

    ``rollout``: from the second turn on, a candidate that passes the offline gate is not made
    CURRENT at once: it scores one turn as a **shadow** (the comparison with live is printed),
    then serves ``canary_share`` of the users as a **canary**, and after each canary turn the
    promotion rule on the canary's matured outcomes per arm promotes it, rolls it back, or
    waits (the canary runs another turn; on the run's last turn undecided means rolled back)
    (offline/rollout.py, offline/watch/online.py). ``report``: where the HTML report of the
    run is written at the end (offline/watch/report.py)."""
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
    # with a report, /metrics on: its dropped-record counts come from a scrape at the end
    server = ServerProcess(ws.registry_dir, ws.redis_url, env=env, metrics_port=report is not None).start()
    rows: list[dict[str, Any]] = []
    plans = {uc.name: RolloutPlan() for uc in use_cases}
    registry = ModelRegistry(ws.registry_dir)
    scrape: str | None = None
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
                plan = plans[uc.name]
                if rollout and plan.stage != IDLE:  # a candidate is being rolled out: judge it
                    final = turn == turns - 1  # the run ends: an undecided canary is rolled back
                    row.update(advance(registry, uc, plan, logs, turn, canary_share, final))
                    continue
                staged = rollout and turn >= 1 and turn < turns - 2  # room for a shadow + a canary turn
                learned = uc.learn(states[uc.name], logs, ws.dir(uc.name), turn, make_current=not staged)
                row.update(learned_fields(uc.name, learned))
                for line in learned.lines:
                    print(f"turn {turn}: {line}", flush=True)
                if learned.published and staged:
                    row.update(start_shadow(registry, uc, plan, learned.published, turn))
                elif learned.published:
                    published[uc.name] = learned.published
            if published and turn < turns - 1:  # the next turn reports the version it met
                late = wait_served(stub, [uc for uc in use_cases if uc.name in published], published)
                for name in late:
                    print(f"turn {turn}: {name} {published[name]} not served in time", flush=True)
            if rollout:
                time.sleep(RELOAD_WAIT_S)  # the server picks up the new ROLLOUT before the next turn
            row["seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            print_row(row, columns(use_cases), header=turn == 0)
        channel.close()
        if server.metrics_port is not None:
            scrape = scrape_metrics(server.metrics_port)
    finally:
        try:
            server.terminate(timeout_s=30)
        except subprocess.TimeoutExpired:
            server.kill()
    if report is not None:
        write_run_report(ws, rows, use_cases, logs, report, scrape)
    return rows


IDLE, SHADOW, CANARY = "idle", "shadow", "canary"
FLYWHEEL_RULE = CanaryRule(min_decisions=100)
"""The canary rule at the flywheel's scale: 100 matured decisions per arm (a turn is ~1,000
decisions, half on the canary; production keeps CanaryRule's 500 or more), 20 positives."""
RELOAD_WAIT_S = 1.2
"""Waited after a rollout change: the server checks ROLLOUT every 0.5 s in the flywheel."""


@dataclass
class RolloutPlan:
    """One use case's candidate on its way: idle -> shadow (one turn) -> canary (one turn) ->
    promoted or rolled back by the rule."""

    stage: str = IDLE
    version: str | None = None


def start_shadow(
    registry: ModelRegistry, uc: OfflineUseCase, plan: RolloutPlan, version: str, turn: int
) -> dict[str, Any]:
    """Makes ``version`` (published, not CURRENT) the use case's shadow for the next turn."""
    rollout_ops.set_shadow(registry, ServiceConfig(), uc.name, version)
    plan.stage, plan.version = SHADOW, version
    print(f"turn {turn}: {uc.name} {version} passed the offline gate: SHADOW for the next turn", flush=True)
    return {f"{uc.name}_rollout": f"shadow {version}"}


def advance(
    registry: ModelRegistry,
    uc: OfflineUseCase,
    plan: RolloutPlan,
    logs: Path,
    turn: int,
    share: float,
    final: bool = True,
) -> dict[str, Any]:
    """After a shadow turn: prints shadow vs live, starts the canary. After a canary turn:
    applies the promotion rule; WAIT keeps the canary for another turn unless ``final`` (the
    run's last turn), where an undecided canary is rolled back."""
    from offline.watch.shadow import compare_shadow

    assert plan.version is not None
    if plan.stage == SHADOW:
        for c in compare_shadow(logs, uc.name, window_s=uc.label_wait_s):
            if c.shadow_version != plan.version:
                continue
            print(
                f"turn {turn}: {uc.name} shadow {c.shadow_version} vs live {c.live_version} on "
                f"{c.decisions} decisions: score correlation {c.score_correlation:.3f}, rank agreement "
                f"{c.rank_agreement:.3f}, {c.metric} live {_fmt(c.live_metric)} / shadow "
                f"{_fmt(c.shadow_metric)} on {c.matured_decisions} matured ({c.skipped} skipped)",
                flush=True,
            )
        rollout_ops.set_shadow(registry, ServiceConfig(), uc.name, None)
        rollout_ops.set_canary(registry, ServiceConfig(), uc.name, plan.version, share)
        plan.stage = CANARY
        print(
            f"turn {turn}: {uc.name} {plan.version}: CANARY for {share:.0%} of the users next turn",
            flush=True,
        )
        return {f"{uc.name}_rollout": f"canary {plan.version}"}
    applied = rollout_ops.decide(
        registry,
        ServiceConfig(),
        uc.name,
        logs,
        final=final,
        window_s=uc.label_wait_s,
        rule=FLYWHEEL_RULE,
    )
    if applied.verdict is not None:
        v, d = applied.verdict, applied.verdict.difference
        print(
            f"turn {turn}: {uc.name} canary {v.canary_version} vs live {v.live_version}: {v.metric} "
            f"difference {d.estimate:+.4f} [{d.low:+.4f}, {d.high:+.4f}] (95 %, n={d.n}) -> "
            f"{v.action.upper()}: {v.reason}",
            flush=True,
        )
    print(f"turn {turn}: {applied.message}", flush=True)
    if applied.action == WAIT:  # more evidence next turn: the canary keeps running
        return {f"{uc.name}_rollout": f"canary {plan.version} (wait)"}
    plan.stage, plan.version = IDLE, None
    return {
        f"{uc.name}_rollout": f"{applied.action} {applied.version}",
        f"{uc.name}_published": applied.version if applied.action == "promote" else None,
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def scrape_metrics(port: int, timeout_s: float = 5.0) -> str | None:
    """The server's /metrics as Prometheus scrapes it; None (said) when it does not answer."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/metrics", headers={"Accept": "text/plain;version=0.0.4"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            return reply.read().decode()
    except OSError as exc:
        print(f"flywheel: could not scrape /metrics on port {port}: {exc}", flush=True)
        return None


def write_run_report(
    ws: Workspace,
    rows: list[dict[str, Any]],
    use_cases: Sequence[OfflineUseCase],
    logs: Path,
    out: Path,
    scrape: str | None,
) -> None:
    """The run's HTML report: the turns (summary JSON), the registry, the logs, the scrape."""
    from offline.watch import report as html

    turns = ws.data_dir / "flywheel.json"
    turns.write_text(json.dumps({"turns": rows}, default=str))
    argv = [
        "--registry",
        str(ws.registry_dir),
        "--logs",
        str(logs),
        "--flywheel",
        str(turns),
        "--out",
        str(out),
    ]
    argv += ["--use-cases", ",".join(uc.name for uc in use_cases)]
    for uc in use_cases:  # the simulation's compressed label windows decide what has matured
        argv += ["--window", f"{uc.name}={uc.label_wait_s:g}"]
    argv += ["--min-decisions", str(FLYWHEEL_RULE.min_decisions)]  # the rule the run applied
    argv += ["--min-positives", str(FLYWHEEL_RULE.min_positives)]
    if scrape is not None:
        snapshot = ws.data_dir / "metrics.prom"
        snapshot.write_text(scrape)
        argv += ["--metrics", str(snapshot)]
    if html.main(argv) == 0:
        print(f"flywheel: report written to {out}", flush=True)


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
    rollout: bool = False,
    canary_share: float = 0.5,
    report: Path | None = None,
) -> list[dict[str, Any]]:
    """Generates and bootstraps a world under ``data_dir`` (features into ``redis_url``,
    overwriting its keys of the same ids), then runs the flywheel of ``use_cases`` on it
    (``rollout``, ``canary_share``, ``report``: see ``run_flywheel``)."""
    ws = new_workspace(data_dir, redis_url, preset_name, threads, seed)
    return run_flywheel(ws, use_cases, turns, decisions, exploration_share, rollout, canary_share, report)


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
    ap.add_argument(
        "--rollout",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="roll candidates out through a shadow turn and a canary turn, promoted or rolled back by "
        "the rule (needs 4 turns; default: on)",
    )
    ap.add_argument("--canary-share", type=float, default=0.5, help="share of users on the canary")
    ap.add_argument(
        "--report", type=Path, default=None, help="the HTML report (default: <data-dir>/report.html)"
    )
    args = ap.parse_args(argv)
    if args.rollout and args.turns < 4:
        ap.error(
            "--rollout needs --turns >= 4 (a turn to learn, a shadow turn, a canary turn); or --no-rollout"
        )
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
            rollout=args.rollout,
            canary_share=args.canary_share,
            report=args.report or args.data_dir / "report.html",
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
