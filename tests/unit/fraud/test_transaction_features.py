"""TransactionFeatures: the model row from profiles, velocity events and the request, checked
against a hand-computed example."""

import math

import numpy as np
import pytest

from decision_service.features.definitions import DEVICE, FRAUD_NEIGHBOURS, FRAUD_USER, MERCHANT
from decision_service.features.fraud import country_code
from decision_service.stages.hydrators.transaction_features import TransactionFeatures
from tests.unit.fraud.conftest import COLUMNS, DAY_MS, HOUR_MS, OCCURRED_MS, context, events, make_state

MIN_MS = 60_000
DE = 3 * 26 + 4  # country_code("DE")


def build(state) -> dict[str, float]:
    row = TransactionFeatures().build(state)
    assert row.shape == (1, len(COLUMNS)) and row.dtype == np.float32
    return dict(zip(COLUMNS, row[0].tolist(), strict=True))


def hand_example_context(**overrides):
    values = {
        "user": {
            "fu_amount_mean_log": math.log1p(20.0),
            "fu_amount_std_log": 0.5,
            "fu_home_country": DE,
            "fu_account_age_days": 400.0,
        },
        "merchant": {"m_amount_mean_log": math.log1p(50.0), "m_chargeback_rate_90d": 0.03},
        "device": {"d_age_days": 2.0, "d_new_users_30d": 4.0},
        "user_events": events(
            (OCCURRED_MS - 5 * MIN_MS, 10.0),
            (OCCURRED_MS - 30 * MIN_MS, 20.0),
            (OCCURRED_MS - 2 * HOUR_MS, 30.0),
            (OCCURRED_MS - 25 * HOUR_MS, 1_000.0),  # outside every window
        ),
        "device_events": events((OCCURRED_MS - 10 * MIN_MS, 7.0), (OCCURRED_MS - 23 * HOUR_MS, 3.0)),
        "device_known": False,
    }
    values.update(overrides)
    return context(**values)


def test_hand_computed_example(fraud_artifacts):
    state = make_state(
        fraud_artifacts, hand_example_context(), amount_eur=200.0, country="FR", channel=3, device_id="d9"
    )
    got = build(state)
    log_amount = math.log1p(200.0)
    assert got["r_amount_log"] == pytest.approx(log_amount, rel=1e-6)
    assert got["r_amount_z_user"] == pytest.approx((log_amount - math.log1p(20.0)) / 0.5, rel=1e-5)
    assert got["r_amount_vs_merchant"] == pytest.approx(log_amount - math.log1p(50.0), rel=1e-5)
    assert got["r_new_device"] == 1.0
    assert got["r_foreign_country"] == 1.0  # FR vs home DE
    assert got["r_hour_of_day"] == 14.0  # 14:30 UTC
    assert got["r_channel"] == 3.0
    # velocity: user 10m = {10}, 1h = {10, 20}, 24h = {10, 20, 30}; device 10m/1h = {7}, 24h = {7, 3}
    assert [got[f"v_user_count_{w}"] for w in ("10m", "1h", "24h")] == [1, 2, 3]
    assert [got[f"v_user_sum_{w}"] for w in ("10m", "1h", "24h")] == [10, 30, 60]
    assert [got[f"v_device_count_{w}"] for w in ("10m", "1h", "24h")] == [1, 1, 2]
    assert [got[f"v_device_sum_{w}"] for w in ("10m", "1h", "24h")] == [7, 7, 10]
    # stored profiles pass through, neighbour columns hold their declared defaults
    assert got["fu_account_age_days"] == 400.0
    assert got["m_chargeback_rate_90d"] == pytest.approx(0.03)
    assert got["d_new_users_30d"] == 4.0
    for f in FRAUD_NEIGHBOURS.features:
        assert got[f.name] == pytest.approx(f.default)


def test_known_device_home_country_and_small_user_std(fraud_artifacts):
    ctx = hand_example_context(
        device_known=True,
        user={"fu_amount_mean_log": math.log1p(20.0), "fu_amount_std_log": 0.1, "fu_home_country": DE},
    )
    got = build(make_state(fraud_artifacts, ctx, amount_eur=200.0, country="DE"))
    assert got["r_new_device"] == 0.0
    assert got["r_foreign_country"] == 0.0
    # the user's std is floored at 0.25 so one tiny-variance history cannot explode the z-score
    assert got["r_amount_z_user"] == pytest.approx((math.log1p(200.0) - math.log1p(20.0)) / 0.25, rel=1e-5)


def test_no_device_id_is_not_a_new_device(fraud_artifacts):
    got = build(make_state(fraud_artifacts, hand_example_context(device_known=False), device_id=""))
    assert got["r_new_device"] == 0.0


def test_unknown_home_country_is_never_foreign(fraud_artifacts):
    ctx = hand_example_context(user={"fu_home_country": -1.0})
    assert build(make_state(fraud_artifacts, ctx, country="FR"))["r_foreign_country"] == 0.0


@pytest.mark.parametrize(
    ("offset_ms", "hour"), [(0, 0), (HOUR_MS - 1, 0), (HOUR_MS, 1), (DAY_MS - 1, 23), (DAY_MS, 0)]
)
def test_hour_of_day_is_utc(fraud_artifacts, offset_ms, hour):
    at = 19_800 * DAY_MS + offset_ms
    assert build(make_state(fraud_artifacts, context(), occurred_at_ms=at))["r_hour_of_day"] == hour


def test_velocity_window_edges(fraud_artifacts):
    # an event exactly 10 minutes old still counts; one a millisecond older does not
    ctx = hand_example_context(
        user_events=events((OCCURRED_MS - 10 * MIN_MS, 1.0), (OCCURRED_MS - 10 * MIN_MS - 1, 2.0))
    )
    got = build(make_state(fraud_artifacts, ctx))
    assert got["v_user_count_10m"] == 1 and got["v_user_sum_10m"] == 1.0
    assert got["v_user_count_1h"] == 2


def test_missing_context_gives_request_features_and_declared_defaults(fraud_artifacts):
    got = build(make_state(fraud_artifacts, None, amount_eur=200.0, country="FR", device_id="d9"))
    for g in (FRAUD_USER, MERCHANT, DEVICE):
        for col, default in zip(g.columns, g.defaults.tolist(), strict=True):
            if col in got:
                assert got[col] == pytest.approx(default), col
    assert all(got[c] == 0.0 for c in COLUMNS if c.startswith("v_"))
    assert got["r_new_device"] == 0.0  # unknown, not evidence
    assert got["r_foreign_country"] == 0.0  # home unknown
    assert got["r_hour_of_day"] == 14.0
    assert got["r_amount_z_user"] == pytest.approx(
        (math.log1p(200.0) - FRAUD_USER.defaults[FRAUD_USER.slot("fu_amount_mean_log")])
        / FRAUD_USER.defaults[FRAUD_USER.slot("fu_amount_std_log")],
        rel=1e-5,
    )


@pytest.mark.parametrize(
    ("country", "code"), [("DE", 82.0), ("de", 82.0), ("AA", 0.0), ("D", -1.0), ("D1", -1.0)]
)
def test_country_code(country, code):
    assert country_code(country) == code


@pytest.mark.parametrize("client_clock_offset_ms", [0, 200_000, 299_000, -900_000])
def test_kind_client_clock_does_not_move_velocity_windows(fraud_artifacts, client_clock_offset_ms):
    """Windows end at the server's receive time, whatever ``occurred_at`` the client sent."""
    from dataclasses import replace

    received = OCCURRED_MS
    ctx = hand_example_context(
        user_events=events((received - 9 * MIN_MS, 1.0), (received - 11 * MIN_MS, 2.0)),
        device_events=events((received - 1, 4.0)),
    )
    state = make_state(fraud_artifacts, ctx, occurred_at_ms=received + client_clock_offset_ms)
    state.request = replace(state.request, received_at_ms=received)
    got = build(state)
    assert (got["v_user_count_10m"], got["v_user_sum_10m"], got["v_user_count_1h"]) == (1, 1.0, 2)
    assert got["v_device_count_10m"] == 1
