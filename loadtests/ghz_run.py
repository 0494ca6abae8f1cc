"""``make ghz``: every shipped ghz config (loadtests/ghz/*.json) against a real server.

Builds or reuses the demo world (``data/demo``, built the way ``make demo`` builds it),
loads its features into a private redis-server, starts two servers on free ports:

  open    plaintext, no token (as ``make demo`` runs it)
  secure  TLS (a throw-away CA made with openssl; plaintext if openssl is missing) and
          bearer tokens (DS_AUTH_TOKENS = the placeholder token the configs carry)

writes the request data the configs read (``loadtests/data/*.json``: real user, item,
device and merchant ids of the demo worlds; fraud checks carry ghz template actions so
every call has a new transaction id and an occurred_at of "now"), then runs ghz once per
config, from ``loadtests/ghz`` (the configs' relative paths start there), and prints
ghz's own summary followed by a one-line verdict per config.

Each config says what it expects in its ghz ``tags`` (they are echoed in ghz's JSON report):
``server`` (open | secure) and ``expect`` (the one status code every call must get).

``compare`` (``python -m loadtests.ghz_run compare``): ghz and the Python load generator
(loadtests/loadgen.py) alternately against one server at the same concurrency, with the
client's own CPU time; the table in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "loadtests" / "ghz"
DATA_OUT = ROOT / "loadtests" / "data"
GHZ_VERSION = "v0.120.0"
# The token the configs carry. It only opens the private server this module starts; against
# a deployment pass the real one on the command line (loadtests/README.md).
PLACEHOLDER_TOKEN = "ghz-local-token"
INSTALL_HINT = (
    "ghz is not installed: `make ghz` installs the pinned copy into .tools/ (needs Go >= 1.22: "
    "https://go.dev/dl/), or `go install github.com/bojand/ghz/cmd/ghz@" + GHZ_VERSION + "`"
)


def say(msg: str) -> None:
    print(f"[ghz {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def find_ghz(explicit: str | None = None) -> Path | None:
    """$GHZ / ``explicit``, then the Makefile's pinned copy under .tools/, then $PATH."""
    for candidate in (explicit, os.environ.get("GHZ")):
        if candidate:
            return Path(candidate).resolve() if Path(candidate).is_file() else None
    pinned = ROOT / ".tools" / f"ghz-{GHZ_VERSION}" / "ghz"
    if pinned.is_file():
        return pinned
    found = shutil.which("ghz")
    return Path(found) if found else None


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Demo:
    world: Path
    fraud_world: Path
    registry: Path


def prepare(data_dir: Path, preset: str = "small") -> Demo:
    """The demo worlds and registry under ``data_dir``: reused when present, else built the
    way ``make demo`` builds them (features go to Redis later, per run)."""
    from decision_service.models.fraud_artifacts import FRAUD
    from offline.runs.bootstrap import bootstrap
    from offline.runs.bootstrap_fraud import bootstrap_fraud
    from offline.simulation.fraud_world import fraud_preset, generate_fraud_world
    from offline.simulation.world import generate_world
    from offline.simulation.world import preset as world_preset

    demo = Demo(data_dir / "world", data_dir / "fraud_world", data_dir / "registry")
    if not ((demo.world / "world.json").exists() and (demo.registry / "recommendation" / "CURRENT").exists()):
        say(f"building the {preset} world and its bootstrap -> {data_dir} (once; later runs reuse it)")
        shutil.rmtree(demo.world, ignore_errors=True)
        generate_world(world_preset(preset), demo.world)
        bootstrap(demo.world, demo.registry)
    fraud_files = (demo.fraud_world / "fraud_world.json", demo.registry / FRAUD / "CURRENT")
    fraud_ready = all(p.exists() for p in fraud_files)
    if not fraud_ready:
        say(f"building the {preset} payments world and its fraud model -> {data_dir}")
        shutil.rmtree(demo.fraud_world, ignore_errors=True)
        generate_fraud_world(fraud_preset(preset), demo.fraud_world)
        bootstrap_fraud(demo.fraud_world, demo.registry)
    return demo


def load_redis(demo: Demo, redis_url: str, work: Path) -> None:
    """Both worlds' features into ``redis_url`` (a fresh private server)."""
    from offline.features.fraud_features import FraudHistory
    from offline.features.materialize import materialize
    from offline.runs.bootstrap_fraud import materialize_fraud
    from offline.simulation.fraud_world import FraudWorld

    materialize(demo.world, redis_url, history_root=work / "feature_history")
    materialize_fraud(FraudHistory(FraudWorld.load(demo.fraud_world)), redis_url)


def write_data(demo: Demo, out: Path = DATA_OUT, n: int = 2_000) -> dict[str, Path]:
    """The data files the configs name (JSON arrays; ghz sends them round-robin)."""
    from google.protobuf import json_format

    from loadtests.bench import fraud_requests
    from loadtests.make_requests import recommendation_requests, write_ghz_array, write_jsonl
    from offline.simulation.world import World

    out.mkdir(parents=True, exist_ok=True)
    world = World.load(demo.world)
    rec = recommendation_requests(world, n)
    files = {"recommendations": out / "recommendations.json",
             "recommendations.jsonl": out / "recommendations.jsonl"}
    write_ghz_array(rec, files["recommendations"])
    write_jsonl(rec, files["recommendations.jsonl"])

    def dump(name: str, messages: list[dict]) -> None:
        files[name] = out / f"{name}.json"
        files[name].write_text("[\n" + ",\n".join(json.dumps(m) for m in messages) + "\n]\n")

    as_dicts = [json_format.MessageToDict(r) for r in rec]
    dump("recommendations-unknown", [
        {"requestId": f"ghz-unknown-{i}",
         "recommendation": {**d["recommendation"], "userId": f"never-seen-{i}"}}
        for i, d in enumerate(as_dicts[:500])
    ])
    dump("recommendations-exclusions", [
        d for d in as_dicts if d["recommendation"].get("excludeItemIds")
    ][:500])
    # Fraud: real users/devices/merchants of the payments world; a new transaction id and
    # "now" on every call (a repeated id is an idempotent replay; old payments are refused).
    fraud = []
    for r in fraud_requests(demo.fraud_world, 500):
        d = json_format.MessageToDict(r)
        d["requestId"] = "ghz-fraud-{{.RequestNumber}}"
        d["fraudCheck"]["transactionId"] = "ghz-{{.UUID}}"
        d["fraudCheck"]["occurredAt"] = "{{.Timestamp}}"
        fraud.append(d)
    dump("fraud", fraud)
    mixed = []
    for i in range(max(len(fraud), 500)):
        mixed.append(as_dicts[i % len(as_dicts)] if i % 2 == 0 else fraud[i % len(fraud)])
    dump("mixed", mixed)
    return files


# ----------------------------------------------------------------------------- servers


def make_pki(directory: Path) -> tuple[Path, Path, Path] | None:
    """(ca.pem, server.pem, server.key) for 127.0.0.1/localhost, or None without openssl."""
    if shutil.which("openssl") is None:
        return None

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    directory.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ghz-local-ca",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", "server.key", "-out", "server.csr")
    (directory / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.pem")
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


@dataclass
class Target:
    """A running server and the ghz flags that reach it."""
    name: str
    address: str
    ghz_flags: list[str]


def _wait_tls(address: str, ca: Path, process: subprocess.Popen, timeout_s: float = 120) -> None:
    from decision_service.devtools.server_process import wait_serving

    credentials = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
    with grpc.secure_channel(address, credentials) as channel:
        wait_serving(channel, process, timeout_s)


@contextlib.contextmanager
def servers(demo: Demo, redis_url: str, work: Path, secure: bool = True) -> Iterator[dict[str, Target]]:
    """The open server and (``secure``) the TLS + token one; both stopped on exit."""
    from decision_service.devtools.server_process import ServerProcess

    env = {"DS_LOG_DIR": str(work / "decision-logs"), "DS_MODEL_RELOAD_INTERVAL_S": "0"}
    started: list[ServerProcess] = []
    log = open(work / "servers.log", "w")  # noqa: SIM115 - shown on failure, closed below
    try:
        open_server = ServerProcess(demo.registry, redis_url, env=env, stderr=log)
        started.append(open_server)
        open_server.start(timeout_s=120)
        targets = {"open": Target("open", open_server.address, ["--insecure"])}
        if secure:
            pki = make_pki(work / "pki")
            secure_env = {**env, "DS_AUTH_TOKENS": PLACEHOLDER_TOKEN, "DS_LOG_DIR": str(work / "secure-logs")}
            if pki:
                secure_env |= {"DS_TLS_CERT_FILE": str(pki[1]), "DS_TLS_KEY_FILE": str(pki[2])}
            secure_server = ServerProcess(demo.registry, redis_url, env=secure_env, stderr=log)
            started.append(secure_server)
            secure_server.start(wait=pki is None, timeout_s=120)
            if pki:
                assert secure_server.process is not None
                _wait_tls(secure_server.address, pki[0], secure_server.process)
                flags = ["--cacert", str(pki[0])]
            else:
                say("openssl not found: the token server runs without TLS")
                flags = ["--insecure"]
            targets["secure"] = Target("secure", secure_server.address, flags)
        yield targets
    except BaseException:
        log.flush()
        say(f"server log (last lines):\n{(work / 'servers.log').read_text()[-3000:]}")
        raise
    finally:
        for server in started:
            with contextlib.suppress(Exception):
                if server.process is not None and server.process.poll() is None:
                    server.terminate(timeout_s=30)
            server.kill()
        log.close()


# ----------------------------------------------------------------------------- running ghz


@dataclass
class Result:
    """What one ghz run reported, from its JSON or its summary text."""
    name: str
    count: int
    status: dict[str, int]
    errors: dict[str, int] = field(default_factory=dict)
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    expect: str = "OK"
    report: dict | None = None

    @property
    def ok(self) -> bool:
        """Every call got the expected status (and there was at least one)."""
        return self.count > 0 and self.status == {self.expect: self.count}

    def line(self) -> str:
        dist = ", ".join(f"{k} {v}" for k, v in sorted(self.status.items())) or "none"
        unexpected = sum(v for k, v in self.status.items() if k != self.expect)
        # ghz leaves failed calls out of its latency figures (no --count-errors)
        latency = (f"p50 {self.p50_ms:6.2f} ms  p99 {self.p99_ms:6.2f} ms" if self.status.get("OK")
                   else f"{'(no OK calls: no latency)':<29}")
        return (f"{self.name:<32} count {self.count:>6}  {self.rps:>8.0f} rps  {latency}  "
                f"status [{dist}]  expected {self.expect}: "
                f"{'yes' if self.ok else f'NO ({unexpected} other)'}")


def config_tags(config: Path) -> dict[str, str]:
    return dict(json.loads(config.read_text()).get("tags", {}))


def shipped_configs() -> list[Path]:
    return sorted(CONFIG_DIR.glob("*.json"))


def run_config(
    ghz: Path, config: Path, target: Target, *, fmt: str = "summary", duration: str | None = None,
    extra: list[str] | None = None, echo: bool = True,
) -> Result:
    """One ghz run of ``config`` against ``target`` (cwd = the configs' folder).

    ``fmt="summary"`` prints ghz's own summary and parses its status lines; ``fmt="json"``
    parses ghz's JSON report (``-O json``) and keeps it in ``Result.report``.
    """
    tags = config_tags(config)
    args = [str(ghz), "--config", config.name, *target.ghz_flags, "--format", fmt,
            # ignore: calls in flight when the duration ends are not counted as errors
            *(["--duration", duration, "--duration-stop", "ignore"] if duration else []),
            *(extra or []), target.address]
    if echo and fmt == "summary":
        shown = [Path(a).name if a == str(ghz) else a for a in args]
        print(f"$ cd {os.path.relpath(config.parent)} && {shlex.join(shown)}", flush=True)
    proc = subprocess.run(args, cwd=config.parent, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 and not proc.stdout.strip():
        raise RuntimeError(f"ghz failed on {config.name} (exit {proc.returncode}): {proc.stderr.strip()}")
    name, expect = config.stem, tags.get("expect", "OK")
    if fmt == "json":
        report = json.loads(proc.stdout)
        lat = {int(d["percentage"]): d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
        return Result(name, int(report["count"]), dict(report.get("statusCodeDistribution") or {}),
                      dict(report.get("errorDistribution") or {}), float(report.get("rps", 0.0)),
                      lat.get(50, 0.0), lat.get(99, 0.0), expect, report)
    if echo:
        print(proc.stdout.rstrip(), flush=True)
    return parse_summary(name, proc.stdout, expect)


def parse_summary(name: str, text: str, expect: str = "OK") -> Result:
    """ghz's summary format: Count, Requests/sec, latency percentiles and status lines."""
    def number(pattern: str) -> float:
        m = re.search(pattern, text)
        return float(m.group(1)) if m else 0.0

    def ms(pct: int) -> float:
        m = re.search(rf"^\s*{pct} % in ([\d.]+) (ms|µs|s)", text, re.M)
        if not m:
            return 0.0
        return float(m.group(1)) * {"ms": 1.0, "µs": 1e-3, "s": 1e3}[m.group(2)]

    status = {code: int(n) for code, n in re.findall(r"^\s*\[(\w+)\]\s+(\d+) responses", text, re.M)}
    return Result(name, int(number(r"Count:\s+(\d+)")), status, {}, number(r"Requests/sec:\s+([\d.]+)"),
                  ms(50), ms(99), expect)


def run_all(
    ghz: Path, targets: dict[str, Target], configs: list[Path], fmt: str = "summary",
    duration: str | None = None,
) -> list[Result]:
    results = []
    for config in configs:
        server = config_tags(config).get("server", "open")
        if server not in targets:
            say(f"skipping {config.name}: needs the {server} server")
            continue
        if fmt == "summary":
            print(f"\n=== {config.name} -> {server} server {targets[server].address} " + "=" * 20, flush=True)
        results.append(run_config(ghz, config, targets[server], fmt=fmt, duration=duration))
    return results


# ----------------------------------------------------------------------------- compare


def _child_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its direct children (from /proc)."""
    pids = [pid]
    with contextlib.suppress(OSError):
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def compare(demo: Demo, redis_url: str, work: Path, ghz: Path, rounds: int, seconds: float,
            concurrency: int, connections: int, data: Path) -> dict[str, dict[str, float]]:
    """Alternating ghz / loadgen closed-loop runs on one server; medians per client."""
    from decision_service.devtools.server_process import ServerProcess

    env = {"DS_LOG_DIR": str(work / "compare-logs"), "DS_MODEL_RELOAD_INTERVAL_S": "0"}
    server = ServerProcess(demo.registry, redis_url, env=env).start(timeout_s=120)
    runs: dict[str, list[dict[str, float]]] = {"ghz": [], "loadgen": []}
    ghz_config = CONFIG_DIR / "recommendations.json"
    try:
        assert server.process is not None
        # warm both paths once (imports, connections, caches), not measured
        _one_compare_run("ghz", ghz, ghz_config, server.address, data, 3, concurrency, connections, work)
        _one_compare_run("loadgen", ghz, ghz_config, server.address, data, 3, concurrency, connections, work)
        for r in range(rounds):
            for client in (("ghz", "loadgen") if r % 2 == 0 else ("loadgen", "ghz")):
                cpu_server0 = _tree_cpu_s(server.process.pid)
                row = _one_compare_run(client, ghz, ghz_config, server.address, data, seconds, concurrency,
                                       connections, work)
                row["server_cpu_ms_per_req"] = 1000 * (_tree_cpu_s(server.process.pid) - cpu_server0) / max(
                    row["count"], 1)
                row["load_1m"] = os.getloadavg()[0]
                runs[client].append(row)
                say(f"round {r + 1} {client:<8} " + "  ".join(f"{k} {v:.3g}" for k, v in row.items()))
    finally:
        server.terminate(timeout_s=30)
    return {client: {k: statistics.median(row[k] for row in rows) for k in rows[0]}
            for client, rows in runs.items()}


def _one_compare_run(client: str, ghz: Path, ghz_config: Path, address: str, data: Path, seconds: float,
                     concurrency: int, connections: int, work: Path) -> dict[str, float]:
    out = work / f"{client}.json"
    if client == "ghz":
        cmd = [str(ghz), "--config", ghz_config.name, "--insecure",
               "--concurrency", str(concurrency), "--connections", str(connections),
               "--duration", f"{seconds:g}s", "--duration-stop", "ignore", "--format", "json",
               "--output", str(out), address]
        cwd = ghz_config.parent
    else:
        cmd = [sys.executable, "-m", "loadtests.loadgen", "--target", address, "--data", str(data),
               "--concurrency", str(concurrency), "--channels", str(connections), "--duration", str(seconds),
               "--json", str(out)]
        cwd = ROOT
    cpu0, t0 = _child_cpu_s(), time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL)
    samples: list[tuple[float, float]] = []  # (seconds since start, the client's CPU seconds)
    while proc.poll() is None:
        samples.append((time.perf_counter() - t0, _tree_cpu_s(proc.pid)))
        time.sleep(0.25)
    if proc.returncode != 0:
        raise RuntimeError(f"{client} exited {proc.returncode}: {shlex.join(cmd)}")
    wall, cpu = time.perf_counter() - t0, _child_cpu_s() - cpu0
    # steady state: the last 60 % of the run bar its final half second (no start-up, no
    # interpreter imports or data parsing, no warm-up second of loadgen)
    steady = [(t, c) for t, c in samples if wall * 0.4 <= t <= wall - 0.5]
    steady_cores = (steady[-1][1] - steady[0][1]) / (steady[-1][0] - steady[0][0]) if len(steady) > 2 else 0.0
    report = json.loads(out.read_text())
    if client == "ghz":
        lat = {int(d["percentage"]): d["latency"] / 1e6 for d in report["latencyDistribution"]}
        count, rps, p50, p99 = report["count"], report["rps"], lat[50], lat[99]
        bad = sum(v for k, v in (report.get("statusCodeDistribution") or {}).items() if k != "OK")
    else:
        count, rps, p50, p99 = report["count"], report["rps"], report["p50_ms"], report["p99_ms"]
        bad = sum(v for k, v in report["status"].items() if k != "OK")
    return {"count": float(count), "rps": rps, "p50_ms": p50, "p99_ms": p99, "errors": float(bad),
            "client_cpu_s": cpu, "client_wall_s": wall, "client_cpu_ms_per_req": 1000 * cpu / max(count, 1),
            "client_cores_steady": steady_cores,
            "client_cpu_ms_per_req_steady": 1000 * steady_cores / rps if rps else 0.0}


def compare_table(medians: dict[str, dict[str, float]]) -> str:
    cols = ("rps", "p50_ms", "p99_ms", "client_cores_steady", "client_cpu_ms_per_req_steady",
            "client_cpu_ms_per_req", "server_cpu_ms_per_req", "errors", "load_1m")
    lines = ["| client | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for client, row in medians.items():
        lines.append(f"| {client} | " + " | ".join(f"{row[c]:.3g}" for c in cols) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtests.ghz_run", description=__doc__.splitlines()[0])
    ap.add_argument("command", nargs="?", default="run", choices=["run", "compare"])
    ap.add_argument("--ghz", help="ghz binary (default: $GHZ, .tools/ghz-<version>/ghz, then PATH)")
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DS_DATA_DIR", "data")) / "demo")
    ap.add_argument("--preset", default="small", help="world size when it has to be built")
    ap.add_argument("--duration", help="run every config this long (ghz duration, e.g. 30s) instead of "
                    "its short fixed request count")
    ap.add_argument("--only", help="comma-separated config names (file stems) to run")
    ap.add_argument("--format", default="summary", choices=["summary", "json"],
                    help="summary: ghz's own summary per config; json: ghz -O json, one line each")
    ap.add_argument("--rounds", type=int, default=3, help="compare: runs per client")
    ap.add_argument("--seconds", type=float, default=10.0, help="compare: length of each run")
    ap.add_argument("--concurrency", type=int, default=16, help="compare: concurrent requests")
    ap.add_argument("--connections", type=int, default=4, help="compare: connections (channels)")
    args = ap.parse_args(argv)

    ghz = find_ghz(args.ghz)
    if ghz is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    from decision_service.devtools.local_redis import LocalRedis

    started = time.perf_counter()
    demo = prepare(args.data_dir, args.preset)
    work = Path(tempfile.mkdtemp(prefix="ghz-run-"))
    try:
        with LocalRedis() as redis_server:
            say(f"loading the demo features into a private redis-server ({redis_server.url})")
            load_redis(demo, redis_server.url, work)
            files = write_data(demo)
            if args.command == "compare":
                medians = compare(demo, redis_server.url, work, ghz, args.rounds, args.seconds,
                                  args.concurrency, args.connections, files["recommendations.jsonl"])
                print(compare_table(medians))
                print(json.dumps(medians))
                return 0
            configs = shipped_configs()
            if args.only:
                wanted = set(args.only.split(","))
                configs = [c for c in configs if c.stem in wanted]
            with servers(demo, redis_server.url, work) as targets:
                results = run_all(ghz, targets, configs, args.format, args.duration)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n=== ghz {GHZ_VERSION}: {len(results)} configs in {time.perf_counter() - started:.0f} s "
          + "=" * 30)
    for result in results:
        print(("  " if result.ok else "! ") + result.line())
    failed = [r.name for r in results if not r.ok]
    if failed:
        print(f"configs with unexpected answers: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
