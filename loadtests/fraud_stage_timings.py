"""Per-stage server timings of fraud checks over real gRPC (median / p99), from a world's payments.

    python -m loadtests.fraud_stage_timings --data-dir data/demo -n 500

Uses a `make demo` data directory (registry with a fraud version + fraud_world), a private
redis-server, and the `x-debug-timings` trailer the server returns per request.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import grpc
import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.devtools.local_redis import LocalRedis
from decision_service.devtools.server_process import ServerProcess
from decision_service.server.servicer import DEBUG_TIMINGS_HEADER, TIMINGS_TRAILER
from offline.features.fraud_features import FraudHistory
from offline.runs.bootstrap_fraud import materialize_fraud
from offline.simulation.fraud_world import FraudWorld


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m loadtests.fraud_stage_timings", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--data-dir", type=Path, default=Path("data/demo"))
    ap.add_argument("-n", type=int, default=500)
    args = ap.parse_args(argv)
    world = FraudWorld.load(args.data_dir / "fraud_world")
    rng = np.random.default_rng(0)
    rows = rng.choice(len(world.txn_ids), size=args.n, replace=False)
    stages: dict[str, list[float]] = {}
    with LocalRedis() as redis_server:
        materialize_fraud(FraudHistory(world), redis_server.url)
        env = {"DS_LOG_LEVEL": "WARNING", "DS_LOG_DIR": str(args.data_dir / "timing-logs"), "DS_WORKERS": "1"}
        with ServerProcess(args.data_dir / "registry", redis_server.url, env=env) as server:
            stub = pb_grpc.DecisionServiceStub(grpc.insecure_channel(server.address))
            for k, r in enumerate(rows):
                occurred = Timestamp()
                occurred.GetCurrentTime()
                check = pb.FraudCheckRequest(
                    transaction_id=f"timing-{time.time_ns()}-{k}",
                    user_id=str(world.user_ids[world.user[r]]),
                    amount_minor=int(world.amount_minor[r]),
                    currency=str(world.currency[r]),
                    merchant_id=str(world.merchant_ids[world.merchant[r]]),
                    merchant_category=str(world.merchant_mcc[world.merchant[r]]),
                    country=str(world.country[r]),
                    device_id=str(world.device_ids[world.device[r]]),
                    ip_address=str(world.device_ip[world.device[r]]),
                    channel=int(world.channel[r]),
                    occurred_at=occurred,
                    payment_instrument_id=f"card-{int(world.user[r])}",
                )
                _, call = stub.GetDecision.with_call(
                    pb.GetDecisionRequest(fraud_check=check),
                    timeout=2.0,
                    metadata=((DEBUG_TIMINGS_HEADER, "1"),),
                )
                if k < 50:  # warm-up
                    continue
                for key, value in call.trailing_metadata() or ():
                    if key == TIMINGS_TRAILER:
                        for part in value.split(";"):
                            name, ms = part.split("=")
                            stages.setdefault(name, []).append(float(ms))
    total = [sum(v) for v in zip(*stages.values(), strict=True)]
    print(f"{'stage':<12} {'median':>8} {'p99':>8}   ({len(total)} checks, ms)")
    for name, values in [*stages.items(), ("total", total)]:
        print(f"{name:<12} {statistics.median(values):>8.3f} {np.percentile(values, 99):>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
