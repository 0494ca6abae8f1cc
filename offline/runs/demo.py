"""`make demo`: every use case's decision end to end, from nothing.

Generates the small synthetic shop world and runs the shared bootstrap (embeddings, FAISS
index, ranker, features into Redis; offline/runs/workspace.py), then each use case's own
bootstrap (``offline.use_cases.OFFLINE_USE_CASES``), starts the gRPC server as its own
process, shows each use case's real GetDecision calls through the generated stub and its
per-stage timings, shuts the server down (SIGTERM, exit 0) and turns the flywheel briefly
on a tiny world. What each use case does: offline/use_cases/<name>.py.

Redis: $REDIS_URL when set (its data is overwritten with the demo's features), else a
private redis-server on a free port that is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import string
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import numpy as np

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.devtools.local_redis import LocalRedis
from decision_service.devtools.server_process import ServerProcess
from decision_service.server.servicer import DEBUG_TIMINGS_HEADER, TIMINGS_TRAILER
from offline.runs.flywheel import run_fresh, summary_json
from offline.runs.workspace import new_workspace, section
from offline.use_cases import OFFLINE_USE_CASES
from offline.use_cases.base import OfflineUseCase


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DS_DATA_DIR", "data")) / "demo")
    parser.add_argument("--preset", default="small", help="world size: tiny, small or bench")
    parser.add_argument("--timing-requests", type=int, default=300, help="per use case")
    parser.add_argument("--flywheel-decisions", type=int, default=400, help="decisions per flywheel turn")
    args = parser.parse_args(argv)
    return run_demo(args.data_dir, args.preset, args.timing_requests, args.flywheel_decisions)


def run_demo(
    data_dir: Path,
    preset_name: str = "small",
    timing_requests: int = 300,
    flywheel_decisions: int = 400,
    use_cases: Sequence[OfflineUseCase] = OFFLINE_USE_CASES,
) -> int:
    started = time.perf_counter()
    local = None if os.environ.get("REDIS_URL") else LocalRedis().start()
    redis_url = os.environ.get("REDIS_URL") or local.url  # type: ignore[union-attr]
    server = None
    try:
        ws = new_workspace(data_dir, redis_url, preset_name, verbose=True, banner=True)
        for letter, uc in zip(string.ascii_lowercase, use_cases, strict=False):
            section(f"2{letter}. {uc.name} bootstrap")
            t0 = time.perf_counter()
            uc.bootstrap(ws)
            print(f"  ({time.perf_counter() - t0:.1f} s)")

        section("3. gRPC server")
        server = ServerProcess(ws.registry_dir, redis_url).start()
        channel = grpc.insecure_channel(server.address)
        stub = pb_grpc.DecisionServiceStub(channel)
        print(f"serving on {server.address} (health SERVING)")

        for letter, uc in zip(string.ascii_lowercase, use_cases, strict=False):
            section(f"4{letter}. GetDecision: {uc.title}")
            uc.demo(stub, ws)
        for letter, uc in zip(string.ascii_lowercase, use_cases, strict=False):
            requests = uc.requests(ws, timing_requests)
            section(f"5{letter}. {uc.name}: per-stage timings over {len(requests)} requests "
                    "(server-side ms; client round trip)")
            show_timings(stub, requests)

        section("6. Shutdown")
        channel.close()
        code = server.terminate(timeout_s=30)
        print(f"server exited with code {code}")

        section("7. The flywheel, short (tiny world): weak model -> users respond -> retrain -> reload")
        # A tiny world of its own: there a weak start is clearly weak (on the small world, ANN
        # candidates are already personal, so popularity among them is not).
        rows = run_fresh(data_dir / "flywheel", redis_url, "tiny", turns=2, decisions=flywheel_decisions,
                         use_cases=use_cases)
        print(summary_json(rows, use_cases))
        print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
        return 0 if code == 0 else 1
    finally:
        if server is not None:
            server.kill()  # no-op after a clean terminate
        if local is not None:
            local.stop()


def show_timings(stub: pb_grpc.DecisionServiceStub, requests: Sequence[pb.GetDecisionRequest]) -> None:
    """Sends ``requests`` one by one with the debug-timings header; prints the median and p99
    of every stage (server side) and of the client round trip."""
    stages: dict[str, list[float]] = {}
    total: list[float] = []
    for request in requests:
        start = time.perf_counter()
        _, call_ = stub.GetDecision.with_call(request, timeout=2.0, metadata=((DEBUG_TIMINGS_HEADER, "1"),))
        total.append((time.perf_counter() - start) * 1000)
        for key, value in call_.trailing_metadata() or ():
            if key == TIMINGS_TRAILER:
                for part in value.split(";"):
                    name, ms = part.split("=")
                    stages.setdefault(name, []).append(float(ms))
    if not total:
        return
    print(f"  {'stage':<22} {'median':>8} {'p99':>8}")
    for name, values in stages.items():
        print(f"  {name:<22} {statistics.median(values):>8.3f} {np.percentile(values, 99):>8.3f}")
    print(f"  {'client round trip':<22} {statistics.median(total):>8.3f} {np.percentile(total, 99):>8.3f}")


if __name__ == "__main__":
    sys.exit(main())
