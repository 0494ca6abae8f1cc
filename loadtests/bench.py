"""``make bench``: the service at saturation on this machine, against the issue's targets.

Builds or reuses (under ``--data-dir``, default data/bench): the bench world (1,000,000
items), its bootstrap (ranker, serving index picked by measured recall), the compiled
ranker cache and a payments world with its fraud model. Then, on a private redis-server:

  floors      each recommendation stage alone, in process, one request at a time
              (loadtests/profile_request.py), and the sum of their medians
  rec         closed-loop max rps; p50 at concurrency 1; p99 at 400 rps offered (open loop)
  fraud       closed-loop max rps; p99 at 1,000 rps offered (open loop)
  efficiency  server CPU (supervisor + workers, from /proc) per request at saturation,
              divided by the sum of the stage floors
  logging     max rps with the decision log on and off (alternating servers, medians), and
              records dropped at 80 % of the saturation rate (the writers' own counters)
  cluster     the online store on a private 3-primary Redis Cluster (redis+cluster://):
              client CPU per 251-key feature read vs one Redis (loadtests/bench_cluster_read),
              and rec max rps vs one Redis (alternating servers, medians of --cluster-rounds)

Prints a table and, last, ONE JSON line. The load generator runs in its own process on
the same cores as the server, so compare ratios and medians, and note what else ran.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service.devtools.local_redis import LocalRedis, free_port
from decision_service.devtools.server_process import wait_serving

TARGETS = {
    "rec_max_rps": (">=", 800.0),
    "rec_p50_ms_c1": ("<=", 2.5),
    "rec_p99_ms_400rps": ("<=", 15.0),
    "fraud_max_rps": (">=", 2000.0),
    "fraud_p99_ms_1000rps": ("<=", 5.0),
    "efficiency": ("<=", 1.3),
    "log_overhead_pct": ("<=", 10.0),
    "log_drops": ("<=", 0),
    "cluster_read_cpu_x": ("<=", 2.5),
    "cluster_rec_rps_pct": (">=", 80.0),
}
PY = sys.executable


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- preparation


def prepare(data_dir: Path, args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """(world dir, fraud world dir, registry); builds what is missing, reuses the rest."""
    from decision_service.models.fraud_artifacts import FRAUD
    from decision_service.models.recommendation_artifacts import MODEL_FILE
    from decision_service.models.registry import ModelRegistry
    from decision_service.models.tree_predictor import CompiledTreesUnavailable, precompile

    world, fraud_world, registry = data_dir / "world", data_dir / "fraud_world", data_dir / "registry"
    if not (world / "world.json").exists():
        say(f"generating the {args.preset} world -> {world}")
        _run([PY, "-m", "offline.simulation.world", "--preset", args.preset, "--out", str(world)])
    if not (registry / "recommendation" / "CURRENT").exists():
        say("bootstrapping recommendations (embeddings, ranker, serving index by measured recall)")
        _run([PY, "-m", "offline.runs.bootstrap", "--world", str(world), "--registry", str(registry),
              "--max-train-users", str(args.max_train_users), "--index", args.index])
    if not (fraud_world / "fraud_world.json").exists():
        say(f"generating the {args.fraud_preset} payments world -> {fraud_world}")
        _run([PY, "-m", "offline.simulation.fraud_world", "--preset", args.fraud_preset,
              "--out", str(fraud_world)])
    if not (registry / FRAUD / "CURRENT").exists():
        say("bootstrapping the fraud model")
        _run([PY, "-m", "offline.runs.bootstrap_fraud", "--world", str(fraud_world),
              "--registry", str(registry)])
    version = ModelRegistry(registry).current("recommendation")
    try:
        t0 = time.perf_counter()
        cached = precompile(version.file(MODEL_FILE))
        say(f"compiled ranker cache: {cached.name} ({time.perf_counter() - t0:.1f} s)")
    except CompiledTreesUnavailable as exc:
        say(f"compiled trees unavailable ({exc}); the server scores with LightGBM")
    return world, fraud_world, registry


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True)


def write_requests(
    world_dir: Path, fraud_dir: Path, out: Path, n_rec: int, n_fraud: tuple[int, ...]
) -> tuple[Path, list[Path]]:
    """Recommendation requests (reused), and one file of fresh payments per fraud phase:
    every phase needs its own transaction ids (a repeated id is an idempotent replay) and
    occurred_at must be recent."""
    from loadtests.make_requests import recommendation_requests, write_jsonl
    from offline.simulation.world import World

    rec = out / "recommendations.jsonl"
    if not rec.exists():
        write_jsonl(recommendation_requests(World.load(world_dir), n_rec), rec)
    fraud = []
    for phase, n in enumerate(n_fraud):
        fraud.append(out / f"fraud-{phase}.jsonl")
        write_jsonl(fraud_requests(fraud_dir, n, seed=phase), fraud[-1])
    return rec, fraud


def fraud_requests(fraud_dir: Path, n: int, seed: int = 0) -> list[pb.GetDecisionRequest]:
    """Payments replayed from the world's last days as new transactions happening now."""
    from offline.simulation.fraud_world import FraudWorld

    w = FraudWorld.load(fraud_dir)
    rng = np.random.default_rng(seed)
    rows = rng.choice(np.arange(max(0, w.n - 200_000), w.n), n)
    now = Timestamp()
    now.GetCurrentTime()
    run = f"{time.time_ns():x}-{seed}"
    out = []
    for i, r in enumerate(rows.tolist()):
        user, device = int(w.user[r]), int(w.device[r])
        check = pb.FraudCheckRequest(
            transaction_id=f"bench-{run}-{i}",
            user_id=str(w.user_ids[user]),
            merchant_id=str(w.merchant_ids[w.merchant[r]]),
            merchant_category=str(w.merchant_mcc[w.merchant[r]]),
            amount_minor=int(w.amount_minor[r]),
            currency=str(w.currency[r]),
            country=str(w.country[r]),
            device_id=str(w.device_ids[device]),
            ip_address=str(w.device_ip[device]),
            channel=int(w.channel[r]),
            occurred_at=now,
            payment_instrument_id=f"card-{user}",
        )
        out.append(pb.GetDecisionRequest(request_id=f"fraud-{i}", fraud_check=check))
    return out


# ----------------------------------------------------------------------------- server + load


class Server:
    """``decision-service serve --workers N`` as a child process, stderr kept in a file."""

    def __init__(self, registry: Path, redis_url: str, workers: int, work: Path, **env: str) -> None:
        self.port = free_port()
        self.log_dir = Path(tempfile.mkdtemp(prefix="logs-", dir=work))
        self.stderr_path = self.log_dir.with_suffix(".stderr")
        environment = {
            **os.environ,
            "DS_LOG_DIR": str(self.log_dir),
            "DS_LOG_LEVEL": "INFO",
            "DS_MODEL_RELOAD_INTERVAL_S": "0",
            "DS_SCORER": os.environ.get("DS_SCORER", "auto"),
            **env,
        }
        self._stderr = open(self.stderr_path, "w")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(
            [PY, "-m", "decision_service.server", "serve", "--port", str(self.port), "--workers",
             str(workers), "--registry-dir", str(registry), "--redis-url", redis_url],
            env=environment, stdout=self._stderr, stderr=subprocess.STDOUT,
        )
        wait_serving(grpc.insecure_channel(f"127.0.0.1:{self.port}"), self.proc, timeout_s=600)
        deadline = time.monotonic() + 600
        while workers > 1 and "workers serving on" not in self.stderr_path.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server workers did not all start; see {self.stderr_path}")
            time.sleep(0.2)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cpu_s(self) -> float:
        """User + system CPU seconds of the supervisor and its workers so far."""
        pids = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        with contextlib.suppress(OSError):
            pids += [int(p) for p in children.read_text().split()]
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=120)
        self._stderr.close()
        text = self.stderr_path.read_text()
        if code != 0:
            say(f"server exited {code}; its log:\n{text[-3000:]}")
        return text


def load(target: str, data: Path, seconds: float, *, concurrency: int | None = None,
         rate: float | None = None) -> dict:
    """One loadgen phase in its own process; returns its JSON report."""
    out = Path(tempfile.mktemp(suffix=".json"))
    mode = ["--concurrency", str(concurrency)] if concurrency else ["--rate", str(rate)]
    subprocess.run(
        [PY, "-m", "loadtests.loadgen", "--target", target, "--data", str(data), "--duration",
         str(seconds), *mode, "--channels", "8", "--json", str(out)],
        check=True, stdout=subprocess.DEVNULL,
    )
    report = json.loads(out.read_text())
    out.unlink()
    errors = {k: v for k, v in report["status"].items() if k != "OK"}
    if errors:
        say(f"  non-OK answers: {errors}")
    return report


def stage_floors(data_dir: Path, redis_url: str) -> dict[str, dict[str, float]]:
    out = subprocess.run(
        [PY, "-m", "loadtests.profile_request", "--data-dir", str(data_dir), "--redis-url", redis_url,
         "--rounds", "3000", "--scorer", os.environ.get("DS_SCORER", "auto")],
        check=True, capture_output=True, text=True,
        env=dict(os.environ),
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def cluster_phase(
    args: argparse.Namespace, world: Path, registry: Path, standalone_url: str, workers: int, work: Path,
    rec_data: Path,
) -> dict[str, float]:
    """The Redis Cluster rows (module docstring); {} with --cluster-rounds 0."""
    if args.cluster_rounds <= 0:
        return {}
    from decision_service.devtools.local_redis import LocalRedisCluster
    from offline.features.materialize import materialize

    say("cluster: client CPU per 251-key read, one Redis vs a 3-primary cluster")
    out = Path(tempfile.mktemp(suffix=".json"))
    subprocess.run([PY, "-m", "loadtests.bench_cluster_read", "--json", str(out)], check=True)
    read = json.loads(out.read_text())
    out.unlink()
    rps: dict[str, list[float]] = {"standalone": [], "cluster": []}
    with LocalRedisCluster(3) as cluster:
        say("cluster: materializing the world into a private 3-primary cluster")
        materialize(world, cluster.url, history_root=work / "feature_history_cluster")
        for r in range(args.cluster_rounds):
            for name, url in (("standalone", standalone_url), ("cluster", cluster.url)):
                s = Server(registry, url, workers, work)
                try:
                    load(s.target, rec_data, 3, concurrency=args.concurrency)
                    phase = load(s.target, rec_data, args.seconds, concurrency=args.concurrency)
                    rps[name].append(phase["rps"])
                finally:
                    s.stop()
                say(f"cluster round {r + 1}: {name} rec max {rps[name][-1]:.0f} rps")
    one, many = statistics.median(rps["standalone"]), statistics.median(rps["cluster"])
    return {
        "cluster_read_cpu_x": round(read["ratio"], 2),
        "cluster_rec_rps_pct": round(100.0 * many / one, 1),
        "cluster_read_cpu_ms": round(read["ms"]["cluster"], 3),
        "standalone_read_cpu_ms": round(read["ms"]["standalone"], 3),
        "cluster_rec_max_rps": round(many, 1),
        "standalone_rec_max_rps_alternated": round(one, 1),
        "cluster_key_buckets": read["buckets"],
    }


def only_cluster(
    args: argparse.Namespace, world: Path, fraud_world: Path, registry: Path, work: Path, workers: int
) -> int:
    """``--only-cluster``: the cluster rows alone (same world, same servers, same load)."""
    from offline.features.materialize import materialize

    with LocalRedis() as redis_server:
        materialize(world, redis_server.url, history_root=work / "feature_history")
        rec_data, _ = write_requests(world, fraud_world, args.data_dir / "requests", 20_000, ())
        results = cluster_phase(args, world, registry, redis_server.url, workers, work, rec_data)
    for key in ("cluster_read_cpu_x", "cluster_rec_rps_pct"):
        op, target = TARGETS[key]
        ok = results[key] >= target if op == ">=" else results[key] <= target
        verdict = "meets" if ok else "MISSES"
        print(f"{key:<24}{results[key]:>12}  {op + ' ' + format(target, 'g'):<12} {verdict}")
    print(json.dumps(results))
    return 0


def dropped(server_log: str) -> int:
    """Sum of the decision/outcome writers' drop counters from their close lines."""
    return sum(int(n) for n in re.findall(r"log closed: \d+ written in \d+ files, (\d+) dropped", server_log))


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, default=Path("data/bench"))
    ap.add_argument("--preset", default="bench")
    ap.add_argument("--fraud-preset", default="bench")
    ap.add_argument("--index", default="auto", choices=["auto", "ivf", "hnsw"],
                    help="serving index kind for a new bootstrap (see BENCHMARKS.md for the recall)")
    ap.add_argument("--max-train-users", type=int, default=4_000)
    ap.add_argument("--workers", type=int, default=0, help="server processes; 0 = one per core")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each load phase")
    ap.add_argument("--concurrency", type=int, default=32, help="closed-loop saturation phases")
    ap.add_argument("--log-rounds", type=int, default=2)
    ap.add_argument("--cluster-rounds", type=int, default=3, help="0 skips the Redis Cluster phase")
    ap.add_argument("--only-cluster", action="store_true", help="run the Redis Cluster phase alone")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    data_dir = args.data_dir
    world, fraud_world, registry = prepare(data_dir, args)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=data_dir))
    cores = len(os.sched_getaffinity(0))
    workers = args.workers or cores
    secs = args.seconds
    results: dict[str, float] = {}
    rows: list[tuple[str, str]] = []

    if args.only_cluster:
        return only_cluster(args, world, fraud_world, registry, work, workers)
    with LocalRedis() as redis_server:
        from offline.features.fraud_features import FraudHistory
        from offline.features.materialize import materialize
        from offline.runs.bootstrap_fraud import materialize_fraud
        from offline.simulation.fraud_world import FraudWorld

        say("materializing both worlds into a private redis-server")
        materialize(world, redis_server.url, history_root=work / "feature_history")
        materialize_fraud(FraudHistory(FraudWorld.load(fraud_world)), redis_server.url)
        n_fraud = (int(4_000 * secs), int(1_000 * secs + 3_000))  # max-rps phase, 1,000 rps phase
        rec_data, (fraud_max_data, fraud_1000_data) = write_requests(
            world, fraud_world, data_dir / "requests", 20_000, n_fraud
        )

        say("stage floors in process (one request at a time)")
        floors = stage_floors(data_dir, redis_server.url)
        floor_sum = sum(v["median_ms"] for k, v in floors.items() if k != "total")
        for k, v in floors.items():
            rows.append((f"floor {k}", f"median {v['median_ms']:.3f} ms, p99 {v['p99_ms']:.3f} ms"))

        say(f"server: {workers} workers, decision log ON")
        server = Server(registry, redis_server.url, workers, work)
        try:
            load(server.target, rec_data, 5, concurrency=args.concurrency)  # warm-up
            cpu0 = server.cpu_s()
            rec_max = load(server.target, rec_data, secs, concurrency=args.concurrency)
            cpu_per_req_ms = 1000.0 * (server.cpu_s() - cpu0) / max(rec_max["count"], 1)
            say(f"rec max {rec_max['rps']:.0f} rps")
            rec_c1 = load(server.target, rec_data, secs * 0.75, concurrency=1)
            rec_400 = load(server.target, rec_data, secs, rate=400)
            say(f"rec p50@c1 {rec_c1['p50_ms']:.2f} ms, p99@400 {rec_400['p99_ms']:.2f} ms")
            fraud_max = load(server.target, fraud_max_data, secs, concurrency=args.concurrency)
            fraud_1000 = load(server.target, fraud_1000_data, secs, rate=1000)
            say(f"fraud max {fraud_max['rps']:.0f} rps, p99@1000 {fraud_1000['p99_ms']:.2f} ms")
        finally:
            server.stop()

        say("decision log drops at 80 % of saturation")
        server = Server(registry, redis_server.url, workers, work)
        try:
            rate80 = 0.8 * rec_max["rps"]
            at80 = load(server.target, rec_data, secs, rate=rate80)
        finally:
            drops = dropped(server.stop())

        say("decision log overhead: alternating servers, logging ON / OFF")
        rps: dict[bool, list[float]] = {True: [rec_max["rps"]], False: []}
        for r in range(args.log_rounds):
            for on in ((False, True) if r else (False,)):
                enabled = "true" if on else "false"
                s = Server(registry, redis_server.url, workers, work, DS_LOG_ENABLED=enabled)
                try:
                    load(s.target, rec_data, 3, concurrency=args.concurrency)
                    rps[on].append(load(s.target, rec_data, secs, concurrency=args.concurrency)["rps"])
                finally:
                    s.stop()
        on_rps, off_rps = statistics.median(rps[True]), statistics.median(rps[False])
        overhead = 100.0 * (off_rps - on_rps) / off_rps
        cluster = cluster_phase(args, world, registry, redis_server.url, workers, work, rec_data)

    results = {
        "rec_max_rps": round(rec_max["rps"], 1),
        "rec_p50_ms_c1": round(rec_c1["p50_ms"], 2),
        "rec_p99_ms_400rps": round(rec_400["p99_ms"], 2),
        "fraud_max_rps": round(fraud_max["rps"], 1),
        "fraud_p99_ms_1000rps": round(fraud_1000["p99_ms"], 2),
        "efficiency": round(cpu_per_req_ms / floor_sum, 2),
        "log_overhead_pct": round(overhead, 1),
        "log_drops": drops,
        "rec_p99_ms_c1": round(rec_c1["p99_ms"], 2),
        "rec_p50_ms_400rps": round(rec_400["p50_ms"], 2),
        "rec_p99_ms_at_max": round(rec_max["p99_ms"], 2),
        "fraud_p50_ms_1000rps": round(fraud_1000["p50_ms"], 2),
        "fraud_rps_1000_achieved": round(fraud_1000["rps"], 1),
        "rec_rps_400_achieved": round(rec_400["rps"], 1),
        "rec_server_cpu_ms_per_req": round(cpu_per_req_ms, 3),
        "rec_stage_floor_sum_ms": round(floor_sum, 3),
        "rec_rps_log_on": round(on_rps, 1),
        "rec_rps_log_off": round(off_rps, 1),
        "rec_rps_at_80pct": round(at80["rps"], 1),
        "rec_p99_ms_at_80pct": round(at80["p99_ms"], 2),
        **cluster,
        "workers": workers,
        "cores": cores,
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        "bench_seconds": round(time.perf_counter() - t_start, 1),
    }
    print()
    print(f"{'metric':<24}{'value':>12}  {'target':<12} verdict")
    for key, (op, target) in TARGETS.items():
        if key not in results:
            print(f"{key:<24}{'-':>12}  {op + ' ' + format(target, 'g'):<12} not run")
            continue
        value = results[key]
        ok = value >= target if op == ">=" else value <= target
        print(f"{key:<24}{value:>12}  {op + ' ' + format(target, 'g'):<12} {'meets' if ok else 'MISSES'}")
    print()
    for name, text in rows:
        print(f"  {name:<28} {text}")
    for key in list(results)[len(TARGETS):]:
        print(f"  {key:<28} {results[key]}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
