"""The fraud part of `make demo`: bootstrap the payments world, then a few explained verdicts."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import numpy as np
import redis
from google.protobuf.timestamp_pb2 import Timestamp

from decision_service._generated.decision.v1 import decision_service_pb2 as pb
from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
from decision_service.features.fraud_store import add_to_block_list
from offline.runs.bootstrap_fraud import bootstrap_fraud
from offline.simulation.fraud_world import FraudWorld, fraud_preset, generate_fraud_world

CURRENCY = {"GB": "GBP", "US": "USD", "PL": "PLN", "SE": "SEK"}


def bootstrap_fraud_world(data_dir: Path, registry_dir: Path, redis_url: str, preset: str = "small") -> Path:
    world_dir = data_dir / "fraud_world"
    generate_fraud_world(fraud_preset(preset), world_dir)
    bootstrap_fraud(world_dir, registry_dir, redis_url=redis_url, verbose=True)
    return world_dir


def same_time_of_day(world_ms: int) -> int:
    """The latest moment (within the last day) at the same UTC time of day as ``world_ms``:
    hour of day is a model feature, so the replayed payment keeps its original one."""
    day_ms = 86_400_000
    now = time.time_ns() // 1_000_000
    at = now - now % day_ms + world_ms % day_ms
    return at - day_ms if at > now else at


def show_fraud_checks(stub: pb_grpc.DecisionServiceStub, world_dir: Path, redis_url: str) -> None:
    world = FraudWorld.load(world_dir)
    legit_user = int(world.user[world.pattern == 0][0])
    ring_device = str(world.device_ids[world.device[world.pattern == 1][0]])

    def payment(title: str, user: int, at_ms: int | None = None, **fields: object) -> None:
        occurred = Timestamp()
        if at_ms is None:
            occurred.GetCurrentTime()
        else:
            occurred.FromMilliseconds(at_ms)
        rows = (world.user == user) & (world.pattern == 0)
        home = str(world.user_home[user])
        values: dict[str, object] = {
            "transaction_id": f"demo-{time.time_ns()}",
            "user_id": str(world.user_ids[user]),
            "amount_minor": 3_000,
            "currency": CURRENCY.get(home, "EUR"),
            "merchant_id": str(world.merchant_ids[0]),
            "merchant_category": "5411",
            "country": home,
            "device_id": str(world.device_ids[world.device[rows][0]]) if rows.any() else "d-new",
            "ip_address": "81.2.69.160",
            "channel": pb.CHANNEL_APP,
            "occurred_at": occurred,
            "payment_instrument_id": f"card-{user}",
        }
        values.update(fields)
        request = pb.GetDecisionRequest(fraud_check=pb.FraudCheckRequest(**values))  # type: ignore[arg-type]
        print(f"\n## {title}")
        try:
            reply = stub.GetDecision(request, timeout=2.0)
        except grpc.RpcError as err:
            print(f"  -> {err.code().name}: {err.details()}")
            return
        f = reply.fraud
        degraded = ", ".join(f"{d.stage}:{d.reason}" for d in reply.degraded) or "none"
        action = pb.FraudAction.Name(f.action).removeprefix("FRAUD_ACTION_")
        print(f"  {action}  risk {f.risk_score}/99  p(fraud) {f.fraud_probability:.3f}  degraded: {degraded}")
        for rule in f.fired_rules:
            print(f"    rule   {rule.code:<26} {rule.description}")
        for reason in f.reasons:
            print(f"    reason {reason.code:<26} {reason.feature} ({reason.contribution:+.2f})")

    payment("an everyday payment from the user's own device, at home", legit_user)
    ato = int(np.flatnonzero(world.pattern == 1)[-1])   # the world's latest account takeover
    payment(
        "an account takeover from the synthetic world: new device, abroad, far above the usual amount",
        int(world.user[ato]),
        at_ms=same_time_of_day(int(world.occurred_ms[ato])),
        device_id=str(world.device_ids[world.device[ato]]),
        ip_address=str(world.device_ip[world.device[ato]]),
        country=str(world.country[ato]),
        amount_minor=int(world.amount_minor[ato]),
        currency=str(world.currency[ato]),
        merchant_id=str(world.merchant_ids[world.merchant[ato]]),
        merchant_category=str(world.merchant_mcc[world.merchant[ato]]),
        channel=int(world.channel[ato]),
    )
    payment(
        "a device shared by many fraud victims, abroad, far above the usual amount",
        legit_user + 1, device_id=ring_device, country="NG", amount_minor=90_000, currency="EUR",
        merchant_category="5732",
    )
    add_to_block_list(redis.Redis.from_url(redis_url), "device", "d-stolen-demo")
    payment("a block-listed device", legit_user + 2, device_id="d-stolen-demo")
    payment("over the hard amount limit", legit_user + 3, amount_minor=2_500_000, currency="EUR")
    payment("bad input: malformed IP address", legit_user, ip_address="999.1.1")
