"""A gRPC load generator for GetDecision that prints a ghz-style summary.

Two modes:
  closed loop  ``--concurrency C``: C workers, each sends its next request when the last
               one answered (measures saturation throughput).
  open loop    ``--rate R``: requests are *scheduled* at a constant rate and latency is
               measured from the scheduled time, so a stalled server cannot hide its queueing
               delay (no coordinated omission).

Requests come from a JSON-lines file of GetDecisionRequest messages in proto3 JSON (the same
data ghz takes, see loadtests/README.md), cycled in order.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from google.protobuf import json_format
from grpc import aio

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc


@dataclass
class Report:
    mode: str
    count: int
    total_s: float
    rps: float
    average_ms: float
    fastest_ms: float
    slowest_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    status: dict[str, int] = field(default_factory=dict)
    degraded: int = 0
    concurrency: int | None = None
    rate: float | None = None

    def text(self) -> str:
        lines = [
            "Summary:",
            f"  Mode:         {self.mode}"
            + (f" (concurrency {self.concurrency})" if self.concurrency else f" ({self.rate:g} rps offered)"),
            f"  Count:        {self.count}",
            f"  Total:        {self.total_s:.2f} s",
            f"  Slowest:      {self.slowest_ms:.2f} ms",
            f"  Fastest:      {self.fastest_ms:.2f} ms",
            f"  Average:      {self.average_ms:.2f} ms",
            f"  Requests/sec: {self.rps:.2f}",
            "",
            "Latency distribution:",
            f"  50 % in {self.p50_ms:.2f} ms",
            f"  90 % in {self.p90_ms:.2f} ms",
            f"  95 % in {self.p95_ms:.2f} ms",
            f"  99 % in {self.p99_ms:.2f} ms",
            "",
            "Status code distribution:",
            *[f"  [{code}]   {n} responses" for code, n in sorted(self.status.items())],
            f"  (answers flagged degraded: {self.degraded})",
        ]
        return "\n".join(lines)


def load_requests(path: str | Path) -> list[pb.GetDecisionRequest]:
    out = []
    with open(path) as f:
        for line in f:
            if line.strip():
                out.append(json_format.Parse(line, pb.GetDecisionRequest()))
    if not out:
        raise SystemExit(f"no requests in {path}")
    return out


async def run(
    target: str,
    requests: list[pb.GetDecisionRequest],
    duration_s: float,
    concurrency: int | None = None,
    rate: float | None = None,
    timeout_s: float = 2.0,
    warmup_s: float = 1.0,
    channels: int = 1,
) -> Report:
    """Runs one load phase; exactly one of ``concurrency`` or ``rate`` must be given.

    ``channels``: separate connections, used round-robin. A server of several processes on
    one port (SO_REUSEPORT) balances *connections*, so one channel reaches one process.
    """
    if (concurrency is None) == (rate is None):
        raise ValueError("give either concurrency or rate")
    # a local subchannel pool per channel: otherwise equal channels share one connection
    opened = [aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
              for _ in range(max(1, channels))]
    try:
        for channel in opened:
            await channel.channel_ready()
        stub = _RoundRobin([pb_grpc.DecisionServiceStub(c) for c in opened])
        if warmup_s:
            await _closed(stub, requests, warmup_s, concurrency or 4, timeout_s)
        if concurrency is not None:
            lat, codes, degraded, total = await _closed(stub, requests, duration_s, concurrency, timeout_s)
        else:
            lat, codes, degraded, total = await _open(stub, requests, duration_s, rate, timeout_s)  # type: ignore[arg-type]
    finally:
        for channel in opened:
            await channel.close()
    arr = np.asarray(lat) * 1000.0 if lat else np.zeros(1)
    return Report(
        mode="closed" if concurrency is not None else "open",
        count=len(lat),
        total_s=total,
        rps=len(lat) / total if total else 0.0,
        average_ms=float(arr.mean()),
        fastest_ms=float(arr.min()),
        slowest_ms=float(arr.max()),
        p50_ms=float(np.percentile(arr, 50)),
        p90_ms=float(np.percentile(arr, 90)),
        p95_ms=float(np.percentile(arr, 95)),
        p99_ms=float(np.percentile(arr, 99)),
        status=dict(codes),
        degraded=degraded,
        concurrency=concurrency,
        rate=rate,
    )


class _RoundRobin:
    """Spreads GetDecision calls over several stubs (channels)."""

    def __init__(self, stubs: list[pb_grpc.DecisionServiceStub]) -> None:
        self._stubs = stubs
        self._next = 0

    def GetDecision(self, request, timeout):  # noqa: N802 - mirrors the stub
        stub = self._stubs[self._next]
        self._next = (self._next + 1) % len(self._stubs)
        return stub.GetDecision(request, timeout=timeout)


async def _call(stub, request, timeout_s, codes: Counter) -> bool:
    try:
        reply = await stub.GetDecision(request, timeout=timeout_s)
    except aio.AioRpcError as err:
        codes[err.code().name] += 1
        return False
    codes["OK"] += 1
    return bool(reply.degraded)


async def _closed(stub, requests, duration_s, concurrency, timeout_s):
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    degraded = 0
    start = time.perf_counter()
    stop_at = start + duration_s

    async def worker(offset: int) -> None:
        nonlocal degraded
        i = offset
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            degraded += await _call(stub, requests[i % len(requests)], timeout_s, codes)
            latencies.append(time.perf_counter() - t)
            i += concurrency

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return latencies, codes, degraded, time.perf_counter() - start


async def _open(stub, requests, duration_s, rate, timeout_s):
    latencies: list[float] = []
    codes: Counter[str] = Counter()
    degraded = 0
    interval = 1.0 / rate
    n = int(duration_s * rate)
    start = time.perf_counter()
    tasks = []

    async def one(i: int, scheduled: float) -> None:
        nonlocal degraded
        degraded += await _call(stub, requests[i % len(requests)], timeout_s, codes)
        latencies.append(time.perf_counter() - scheduled)  # from the intended send time

    for i in range(n):
        scheduled = start + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    return latencies, codes, degraded, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loadtests.loadgen", description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="127.0.0.1:50051")
    ap.add_argument("--data", required=True, help="JSON lines of GetDecisionRequest")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--concurrency", type=int)
    mode.add_argument("--rate", type=float, help="requests per second, open loop")
    ap.add_argument("--timeout", type=float, default=2.0, help="per-request deadline, seconds")
    ap.add_argument("--channels", type=int, default=4, help="connections (reach every server worker)")
    ap.add_argument("--json", help="also write the report as JSON here")
    args = ap.parse_args(argv)
    report = asyncio.run(
        run(args.target, load_requests(args.data), args.duration, args.concurrency, args.rate, args.timeout,
            channels=args.channels)
    )
    print(report.text())
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(report), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
