"""The fraud use case on a project's own payments: the Payments contract
(decision_service/features/payments.py), its loader (offline/features/payments.py) and a
minimal table (id, time, customer, terminal, amount, label with its report time) end to end:
validate -> bootstrap -> serve -> GetDecision.

A project other than the suite's own runs in a subprocess (one process = one project).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from decision_service import project as projects
from decision_service.devtools.local_redis import LocalRedis
from decision_service.features.declarative import Events, Table, Time
from decision_service.features.payments import Payments, fraud_features
from decision_service.models.registry import ModelVersion
from offline.simulation.fraud_world import MINIMAL_COLUMNS, FraudWorld, export_minimal

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "payments"

DEVICE_FEATURES = {
    "fu_new_devices_30d",
    "d_age_days",
    "d_txn_count_30d",
    "d_new_users_30d",
    "d_chargebacks_90d",
    "r_new_device",
    *(f"v_device_{k}_{w}" for k in ("count", "sum") for w in ("10m", "1h", "24h")),
}


def _minimal(**optional: object) -> Payments:
    keys = {"user_id": "customer_id", "merchant_id": "terminal_id"}
    if optional.pop("device", False):
        keys["device_id"] = "device"
    events = Events("payments", "payments.csv", Time("tx_datetime", "timestamp"), keys=keys, format="csv")
    return Payments(events, transaction_id="tx_id", amount="tx_amount", label="tx_fraud", **optional)  # type: ignore[arg-type]


def test_a_minimal_table_leaves_out_what_it_cannot_feed_and_says_why() -> None:
    fraud = fraud_features(_minimal())
    left = dict(fraud.left_out)
    assert set(left) == DEVICE_FEATURES | {
        "fu_account_age_days",
        "fu_home_country",
        "fu_foreign_share",
        "r_foreign_country",
        "r_channel",
    }
    assert fraud.device is None and [g.name for g in fraud.groups] == ["fraud_user", "merchant"]
    assert not set(left) & set(fraud.model_features)
    assert not set(left) & {c for g in fraud.groups + fraud.on_demand for c in g.columns}
    assert set(fraud.neighbour_columns) <= set(fraud.model_features)
    # every reason says what to declare to get the feature back
    assert left["r_new_device"].startswith("no device column: declare keys={'device_id'")
    assert "Payments(channel=...)" in left["r_channel"]
    assert "Payments(country=...)" in left["r_foreign_country"]
    assert "left out (no device column" in fraud.note()
    # what a minimal table does feed
    assert {"fu_txn_count_30d", "fu_chargebacks_90d", "m_chargeback_rate_90d", "v_user_count_10m"} <= set(
        fraud.model_features
    )


@pytest.mark.parametrize(
    ("optional", "back"),
    [
        ({"device": True}, DEVICE_FEATURES),
        ({"channel": "channel"}, {"r_channel"}),
        (
            {"users": Table("users", "users.csv", key="id", format="csv"), "signup": Time("signed_up", "s")},
            {"fu_account_age_days"},
        ),
        (
            {"users": Table("users", "users.csv", key="id", format="csv"), "home_country": "home"},
            {"fu_home_country"},  # without the payment's country: no "abroad"
        ),
        (
            {
                "users": Table("users", "users.csv", key="id", format="csv"),
                "home_country": "home",
                "country": "country",
            },
            {"fu_home_country", "fu_foreign_share", "r_foreign_country"},
        ),
    ],
)
def test_each_optional_column_brings_its_features_back(optional: dict[str, object], back: set[str]) -> None:
    minimal, more = fraud_features(_minimal()), fraud_features(_minimal(**optional))
    assert {n for n, _ in minimal.left_out} - {n for n, _ in more.left_out} == back
    served = {c for g in more.groups + more.on_demand for c in g.columns}
    assert back <= served


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"amount_unit": "cents"}, "amount_unit='cents'"),
        ({"default_currency": "XXX"}, "default_currency='XXX'"),
        ({"signup": Time("s", "s")}, "declare it"),
        ({"label_delay": "soon"}, "not a duration"),
    ],
)
def test_kind_a_bad_payments_declaration_is_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _minimal(**kwargs)


def test_kind_the_payments_source_must_name_customer_and_merchant() -> None:
    events = Events("p", "p.csv", Time("t", "s"), keys={"user_id": "c"}, format="csv")
    with pytest.raises(ValueError, match="no 'merchant_id' key"):
        Payments(events, transaction_id="id", amount="a", label="l")


def test_the_synthetic_payments_load_as_the_world_they_were_saved_from(
    tiny_fraud_bootstrap: tuple[Path, Path, ModelVersion],
) -> None:
    """The synthetic project's PAYMENTS read through the contract's loader give the arrays
    FraudWorld.load gives, and the same model matrix (profiles, velocity, request features)."""
    from decision_service.features import definitions
    from offline.features.fraud_features import FraudHistory
    from offline.features.payments import load_payments

    world_dir = tiny_fraud_bootstrap[0]
    saved = FraudWorld.load(world_dir)
    loaded, report = load_payments(definitions.FRAUD, world_dir, "synthetic")
    assert report.payments == saved.n and report.labelled == int((saved.chargeback_ms >= 0).sum())
    for name in ("txn_ids", "user", "merchant", "device", "amount_minor", "currency", "country", "channel",
                 "occurred_ms", "chargeback_ms", "user_ids", "user_home", "user_signup_ms", "merchant_ids",
                 "device_ids"):  # fmt: skip
        a, b = getattr(saved, name), getattr(loaded, name)
        assert a.tolist() == b.tolist(), name
    rows = np.arange(0, saved.n, 5)
    np.testing.assert_array_equal(
        FraudHistory(saved).model_matrix(rows), FraudHistory(loaded).model_matrix(rows)
    )


_MATRIX_SCRIPT = """
import sys, numpy as np
from decision_service.features import definitions as d
from offline.features.payments import load_payments
from offline.features.fraud_features import FraudHistory
world, _ = load_payments(d.FRAUD, sys.argv[1], "minimal")
rows = np.arange(0, world.n, 5)
np.save(sys.argv[2], FraudHistory(world).model_matrix(rows))
print(",".join(d.FRAUD_MODEL_FEATURES))
"""


def _project(root: Path, world: FraudWorld) -> Path:
    """examples/payments' declarations over ``world`` exported as its minimal table."""
    (root / "data").mkdir(parents=True)
    for name in ("project.yaml", "features.py"):
        (root / name).write_text((EXAMPLE / name).read_text())
    export_minimal(world, root / "data" / "payments.csv")
    return root


def _env(root: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k != projects.ENV}
    return {**clean, projects.ENV: str(root)}


def test_a_minimal_table_feeds_its_features_with_the_full_table_s_values(
    tmp_path: Path, tiny_fraud_bootstrap: tuple[Path, Path, ModelVersion]
) -> None:
    """Every feature the minimal export can feed has the value the full world gives it (the
    same payments; amounts rounded to cents in the export)."""
    from offline.features.fraud_features import FraudHistory

    world = FraudWorld.load(tiny_fraud_bootstrap[0])
    root = _project(tmp_path / "minimal", world)
    out = subprocess.run(
        [sys.executable, "-c", _MATRIX_SCRIPT, str(root / "data"), str(tmp_path / "m.npy")],
        capture_output=True,
        text=True,
        env=_env(root),
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    columns = out.stdout.strip().split(",")
    minimal = np.load(tmp_path / "m.npy")
    rows = np.arange(0, world.n, 5)
    from decision_service.features.definitions import FRAUD_MODEL_FEATURES

    full = FraudHistory(world).model_matrix(rows)
    assert set(columns) < set(FRAUD_MODEL_FEATURES)
    for j, c in enumerate(columns):
        if c.startswith("nn_"):
            continue  # neighbour features are filled by the index, not here
        expected = full[:, FRAUD_MODEL_FEATURES.index(c)]
        if c == "r_hour_of_day" or "count" in c or "chargeback" in c or c.endswith("_days") or "since" in c:
            np.testing.assert_allclose(minimal[:, j], expected, rtol=1e-6, atol=1e-3, err_msg=c)
        else:  # amounts: the export rounds each to the cent
            np.testing.assert_allclose(minimal[:, j], expected, rtol=2e-3, atol=2e-2, err_msg=c)


def _cli(*args: str, root: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "offline.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != projects.ENV},
    )


def test_a_minimal_payments_project_validates_bootstraps_serves_and_answers(
    tmp_path: Path, redis_server: LocalRedis, tiny_fraud_bootstrap: tuple[Path, Path, ModelVersion]
) -> None:
    """No device, country, currency, channel or sign-up: the model is trained on what there
    is, beats the rules, is served, and a fraud check without device or country is answered."""
    root = _project(tmp_path / "payments", FraudWorld.load(tiny_fraud_bootstrap[0]))
    out = _cli("validate", "--project", str(root), root=root)
    assert out.returncode == 0, out.stdout + out.stderr
    redis_url = redis_server.url.rsplit("/", 1)[0] + "/8"
    out = _cli("bootstrap", "--project", str(root), "--redis-url", redis_url, "--threads", "1", root=root)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "left out (no device column" in out.stdout
    assert "published fraud/v0001" in out.stdout
    manifest = json.loads(
        (root / ".ds" / "registry" / "fraud" / "versions" / "v0001" / "manifest.json").read_text()
    )
    assert "r_new_device" in manifest["left_out"] and "r_new_device" not in manifest["model_features"]
    m = manifest["metrics"]
    assert m["model_auc"] > m["rules_auc"] and m["model_average_precision"] > m["rules_average_precision"]

    from google.protobuf.timestamp_pb2 import Timestamp

    from decision_service._generated.decision.v1 import decision_service_pb2 as pb
    from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
    from decision_service.devtools.server_process import ServerProcess

    now = Timestamp()
    now.GetCurrentTime()
    with (
        ServerProcess(root / ".ds" / "registry", redis_url, env=_env(root)) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        stub = pb_grpc.DecisionServiceStub(channel)
        check = pb.FraudCheckRequest(
            transaction_id="t-new-1",
            user_id="u0000007",
            merchant_id="m00003",
            amount_minor=4_250,
            currency="EUR",
            occurred_at=now,
        )
        answer = stub.GetDecision(pb.GetDecisionRequest(fraud_check=check), timeout=5)
        assert not answer.degraded, answer.degraded
        assert answer.model_version == "v0001"
        assert 0.0 <= answer.fraud.fraud_probability <= 1.0
        with pytest.raises(grpc.RpcError) as err:
            check.user_id = ""
            stub.GetDecision(pb.GetDecisionRequest(fraud_check=check), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "fraud_check.user_id" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            ask = pb.RecommendationRequest(user_id="u0000007", num_items=3)
            stub.GetDecision(pb.GetDecisionRequest(recommendation=ask), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_kind_a_bad_payments_table_fails_bootstrap_and_writes_nothing(
    tmp_path: Path, tiny_fraud_bootstrap: tuple[Path, Path, ModelVersion]
) -> None:
    root = _project(tmp_path / "payments", FraudWorld.load(tiny_fraud_bootstrap[0]))
    path = root / "data" / "payments.csv"
    lines = path.read_text().splitlines()
    assert lines[0].replace('"', "").split(",") == list(MINIMAL_COLUMNS)
    lines[3] = lines[2]  # a repeated transaction id
    path.write_text("\n".join(lines) + "\n")
    out = _cli("bootstrap", "--project", str(root), root=root)
    assert out.returncode == 1, out.stdout
    assert "payments.csv: column 'tx_id': 1 duplicate transaction ids" in out.stderr, out.stderr
    assert "nothing was written" in out.stderr
    assert not (root / ".ds" / "registry").exists()


_IMPORTS = """
import importlib, sys
for m in sys.argv[1:]:
    importlib.import_module(m)
"""
_SHARED = ["offline.cli", "offline.loop.retrain", "offline.loop.training_set", "offline.runs.project_demo",
           "offline.runs.demo", "decision_service.server.app", "decision_service.server.servicer"]  # fmt: skip


@pytest.mark.parametrize(
    ("template", "modules"),
    [
        (
            "payments",
            ["offline.runs.bootstrap_fraud", "offline.use_cases.fraud", "offline.features.payments"],
        ),
        ("shop", ["offline.runs.bootstrap", "offline.use_cases.recommendation"]),
    ],
)
def test_kind_a_shared_module_imports_no_other_use_case_s_declarations(
    tmp_path: Path, template: str, modules: list[str]
) -> None:
    """A fraud-only and a recommendation-only project (init's two templates) import every
    module they run: a module shared by use cases reads one use case's declarations on use,
    never at import (the payments example once failed on recommendation_artifacts' CATEGORIES)."""
    root = tmp_path / template
    out = _cli("init", str(root), "--template", template, root=root)
    assert out.returncode == 0, out.stderr
    out = subprocess.run(
        [sys.executable, "-c", _IMPORTS, *_SHARED, *modules],
        capture_output=True,
        text=True,
        env=_env(root),
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]


def test_init_payments_template_validates_and_needs_no_active_project(tmp_path: Path) -> None:
    """`init --template payments` generates its sample with no project active (the world
    generator reads the currency table, not a project's definitions), and it validates."""
    root = tmp_path / "my-payments"
    out = _cli("init", str(root), "--template", "payments", root=root)
    assert out.returncode == 0, out.stderr
    assert (root / "data" / "payments.csv").exists()
    out = _cli("validate", "--project", str(root), root=root)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok: my-payments" in out.stdout
    out = _cli("init", str(tmp_path / "other"), "--template", "bank", root=root)
    assert out.returncode == 2 and "invalid choice: 'bank'" in out.stderr


def _write_csv(path: Path, header: str, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")


_DAY = 86_400_000
_T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def test_kind_entity_name_for_column_first_seen_counts_read_the_table_s_own_columns(tmp_path: Path) -> None:
    """Customer and device columns named `cust` and `dev` (not user_id / device_id): the
    "new devices of a customer" and "new customers of a device" counts read those columns
    (they once read the entity names, and only worked for tables whose columns had them)."""
    from offline.features import compiler

    _write_csv(
        tmp_path / "p.csv",
        "id,ts,cust,shop,dev,amt,bad",
        [
            f"t1,{_T0 // 1000},c1,m1,d1,10,0",
            f"t2,{_T0 // 1000 + 3600},c1,m1,d2,10,0",
            f"t3,{_T0 // 1000 + 7200},c2,m1,d1,10,1",
            f"t4,{_T0 // 1000 + 9000},c1,m1,d1,10,0",
        ],
    )
    events = Events(
        "p",
        "p.csv",
        Time("ts", "s"),
        keys={"user_id": "cust", "merchant_id": "shop", "device_id": "dev"},
        format="csv",
    )
    fraud = fraud_features(Payments(events, transaction_id="id", amount="amt", label="bad"))
    at = np.full(2, _T0 + _DAY)
    user = compiler.point_in_time(fraud.user, ["c1", "c2"], at, tmp_path)
    device = compiler.point_in_time(fraud.device, ["d1", "d2"], at, tmp_path)  # type: ignore[arg-type]
    assert user[:, fraud.user.slot("fu_new_devices_30d")].tolist() == [2.0, 1.0]
    assert device[:, fraud.device.slot("d_new_users_30d")].tolist() == [2.0, 1.0]  # type: ignore[union-attr]


def test_kind_null_read_as_zero_a_fraud_without_label_time_never_arrives(tmp_path: Path) -> None:
    """A NULL label time (and a NULL sign-up) is missing, not 1970: DuckDB hands NULLs back
    masked, and the mask was dropped (a fraud known since 1970 leaked into every profile)."""
    from offline.features.payments import load_payments

    _write_csv(
        tmp_path / "p.csv",
        "id,ts,cust,shop,amt,bad,reported",
        [
            f"t1,{_T0},c1,m1,10,1,{_T0 + _DAY}",
            f"t2,{_T0 + 1000},c2,m1,10,1,",
            f"t3,{_T0 + 2000},c1,m1,10,0,",
        ],
    )
    _write_csv(tmp_path / "u.csv", "uid,signed_up", [f"c1,{_T0 - 10 * _DAY}", "c2,"])
    events = Events(
        "p", "p.csv", Time("ts", "ms"), keys={"user_id": "cust", "merchant_id": "shop"}, format="csv"
    )
    users = Table("u", "u.csv", key="uid", format="csv")
    payments = Payments(
        events,
        transaction_id="id",
        amount="amt",
        label="bad",
        label_time=Time("reported", "ms"),
        users=users,
        signup=Time("signed_up", "ms"),
    )
    world, report = load_payments(fraud_features(payments), tmp_path)
    assert world.chargeback_ms.tolist() == [_T0 + _DAY, -1, -1]
    assert report.labelled == 2 and report.label_arrivals == 1
    assert world.user_signup_ms.tolist() == [_T0 - 10 * _DAY, _T0 + 1000]  # c2: its first payment


def test_kind_label_delay_on_text_timestamps_is_added_in_milliseconds(tmp_path: Path) -> None:
    """Without a label time, a label is known label_delay after the payment, whatever the
    time column holds: ISO text here (it once failed: VARCHAR + INTERVAL)."""
    from offline.features import compiler
    from offline.features.payments import load_payments

    _write_csv(
        tmp_path / "p.csv",
        "id,ts,cust,shop,amt,bad",
        ["t1,2026-01-01T00:00:00Z,c1,m1,10,true", "t2,2026-01-01T06:00:00+02:00,c1,m1,10,false"],
    )
    events = Events(
        "p", "p.csv", Time("ts", "timestamp"), keys={"user_id": "cust", "merchant_id": "shop"}, format="csv"
    )
    fraud = fraud_features(Payments(events, transaction_id="id", amount="amt", label="bad", label_delay="2d"))
    world, _ = load_payments(fraud, tmp_path)
    assert world.occurred_ms.tolist() == [_T0, _T0 + 4 * 3_600_000]
    assert world.chargeback_ms.tolist() == [_T0 + 2 * _DAY, -1]
    slot = fraud.user.slot("fu_chargebacks_90d")
    before, after = compiler.point_in_time(
        fraud.user, ["c1", "c1"], [_T0 + 2 * _DAY, _T0 + 2 * _DAY + 1], tmp_path
    )
    assert (before[slot], after[slot]) == (0.0, 1.0)  # counted from its arrival on, never before


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("eval_day: 7", "settings.fraud: unknown key 'eval_day' (did you mean 'eval_days'?)"),
        ("eval_days: 0", "settings.fraud: eval_days must be >= 1, got 0"),
        ("k_neighbours: 0", "settings.fraud: k_neighbours must be >= 1, got 0"),
        ("train_start_day: 50", "the payments span 60.0 days, fewer than settings.fraud"),
    ],
)
def test_kind_bad_fraud_settings_are_named_before_anything_is_written(
    tmp_path: Path, tiny_fraud_bootstrap: tuple[Path, Path, ModelVersion], settings: str, message: str
) -> None:
    root = _project(tmp_path / "payments", FraudWorld.load(tiny_fraud_bootstrap[0]))
    yaml = (root / "project.yaml").read_text()
    (root / "project.yaml").write_text(
        yaml.replace("    eval_days: 14\n", f"    eval_days: 14\n    {settings}\n")
    )
    if settings.startswith("eval_days"):
        (root / "project.yaml").write_text(yaml.replace("    eval_days: 14\n", f"    {settings}\n"))
    for command in ("validate", "bootstrap"):  # validate checks the settings against the data too
        out = _cli(command, "--project", str(root), root=root)
        assert out.returncode in (1, 2), out.stdout
        assert message in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
    assert not (root / ".ds" / "registry").exists()


def test_kind_label_delay_beyond_maturity_and_too_few_labels_publish_nothing(
    tmp_path: Path, tiny_fraud_bootstrap: tuple[Path, Path, ModelVersion]
) -> None:
    """No label would have arrived by the split (label_delay > maturity_days), or almost no
    fraud at all: an error naming the cause, never a one-class model published as CURRENT."""
    root = _project(tmp_path / "payments", FraudWorld.load(tiny_fraud_bootstrap[0]))
    features = (root / "features.py").read_text()
    (root / "features.py").write_text(
        features.replace(
            '    label_time=Time("fraud_reported_at", "timestamp"),\n', '    label_delay="30d",\n'
        )
    )
    out = _cli("bootstrap", "--project", str(root), root=root)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "maturity_days 10 is shorter than the payments' label_delay '30d'" in out.stderr
    (root / "features.py").write_text(features)
    path = root / "data" / "payments.csv"
    lines = path.read_text().splitlines()
    kept = [lines[0]]
    frauds = 0
    for line in lines[1:]:
        fraud = line.split(",")[5] == "1"
        frauds += fraud
        if not fraud or frauds <= 25:  # 25 fraud labels, all in the first days
            kept.append(line)
    path.write_text("\n".join(kept) + "\n")
    out = _cli("bootstrap", "--project", str(root), root=root)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "too few fraud labels for the split" in out.stderr, out.stderr
    assert not list((root / ".ds" / "registry").glob("fraud/versions/v*"))


_PARTLY_NULL_DEVICE = """
import sys, numpy as np
from decision_service.features import definitions as d
from offline.features.payments import load_payments
from offline.features.fraud_features import FraudHistory
world, _ = load_payments(d.FRAUD, sys.argv[1], "pos")
m = FraudHistory(world).model_matrix(np.arange(world.n))
cols = list(d.FRAUD_MODEL_FEATURES)
pick = lambda c: m[:, cols.index(c)].tolist()
print(world.device.tolist())
print(repr((pick("d_txn_count_30d"), pick("v_device_count_24h"), pick("r_new_device"), pick("fu_new_devices_30d"))))
"""


def test_kind_optional_party_a_payment_without_a_device_has_none(tmp_path: Path) -> None:
    """Card-present payments have no device: a NULL device id validates, and such a payment
    is in no device's history (device features at their defaults, no velocity, never a "new
    device"), as a request without a device id is served; the others are unaffected."""
    root = tmp_path / "pos"
    out = _cli("init", str(root), "--template", "payments", root=root)
    assert out.returncode == 0, out.stderr
    _write_csv(
        root / "data" / "payments.csv",
        "tx_id,tx_datetime,customer_id,terminal_id,tx_amount,tx_fraud,fraud_reported_at,device",
        [
            "t1,2026-01-01T10:00:00Z,c1,m1,10,0,,d1",
            "t2,2026-01-01T11:00:00Z,c1,m1,10,0,,",  # at a terminal: no device
            "t3,2026-01-01T12:00:00Z,c1,m1,10,0,,d1",
            "t4,2026-01-01T13:00:00Z,c2,m1,10,0,,",
        ],
    )
    features = (root / "features.py").read_text()
    (root / "features.py").write_text(
        features.replace('# "device_id": "device_id",', '"device_id": "device",')
    )
    out = _cli("validate", "--project", str(root), root=root)
    assert "NULL ids" not in out.stdout + out.stderr
    out = subprocess.run(
        [sys.executable, "-c", _PARTLY_NULL_DEVICE, str(root / "data")],
        capture_output=True,
        text=True,
        env=_env(root),
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    devices, features_line = out.stdout.strip().splitlines()
    assert devices == "[0, -1, 0, -1]"
    d_count, v_count, new_device, new_devices = eval(features_line)  # noqa: S307 (our own output)
    assert d_count == [0.0, 0.0, 1.0, 0.0]  # t3 sees t1 on d1; t2 / t4 have no device profile
    assert v_count == [0.0, 0.0, 1.0, 0.0]
    assert new_device == [1.0, 0.0, 0.0, 0.0]  # c1's first use of d1; no device is never "new"
    assert new_devices == [0.0, 1.0, 1.0, 0.0]  # c1's devices first used in 30 days, NULL not one


def test_kind_ids_a_request_can_never_name_fail_validation(tmp_path: Path) -> None:
    """Customer, merchant and device ids the edge refuses (e-mail addresses, blanks) and
    countries it does not accept ('UK') are named by validate, not discovered when every
    fraud check for those customers answers INVALID_ARGUMENT."""
    root = tmp_path / "ids"
    assert _cli("init", str(root), "--template", "payments", root=root).returncode == 0
    path = root / "data" / "payments.csv"
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[2], '"ann@mail.example"', 1)  # row 3: customer
    lines[5] = lines[5].replace(lines[5].split(",")[3], '"Shop 0001"', 1)  # row 5: terminal
    path.write_text("\n".join(lines) + "\n")
    out = _cli("validate", "--project", str(root), root=root)
    assert out.returncode == 1, out.stdout
    assert (
        "column 'customer_id': 1 customer ids a fraud check can never name: 'ann@mail.example' (1)"
        in out.stdout
    )
    assert "e.g. row 3" in out.stdout
    assert "column 'terminal_id': 1 merchant ids a fraud check can never name: 'Shop 0001' (1)" in out.stdout
    assert "e.g. row 5" in out.stdout


def test_kind_traceback_retrain_before_a_training_set_is_one_line(tmp_path: Path) -> None:
    """`retrain` before `training-set` (a missing file) and `init` through a file: one line,
    no traceback; a fraud-only project's training-set / retrain default to --use-case fraud."""
    root = tmp_path / "pay"
    assert _cli("init", str(root), "--template", "payments", root=root).returncode == 0
    out = _cli("retrain", "--project", str(root), root=root)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "fraud.parquet" in out.stderr  # the fraud use case, by default
    (tmp_path / "a-file").write_text("x")
    out = _cli("init", str(tmp_path / "a-file" / "sub"), root=root)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
