"""The hand-written fraud profiles (numpy, sorted searches over prefix sums) that the declared
FRAUD_USER, MERCHANT and DEVICE groups replaced: kept as the oracle of
tests/offline/test_fraud_feature_parity.py (parity before deletion, issue "Your data")."""

from __future__ import annotations

import numpy as np

from decision_service.features.definitions import DEVICE, FRAUD_USER, MERCHANT
from decision_service.features.fraud import amount_eur, country_code
from offline.features.fraud_features import _ALL_TIME, PartyHistory
from offline.simulation.fraud_world import FraudWorld
from offline.simulation.world import DAY_MS


class HandWrittenProfiles:
    """FRAUD_USER / MERCHANT / DEVICE rows of (party row, time) pairs, as computed before the
    declarations: windows [t - w, t), chargebacks by arrival time."""

    def __init__(self, world: FraudWorld) -> None:
        self.world = world
        base = int(min(world.start_ms, int(world.user_signup_ms.min()))) - 400 * DAY_MS
        self.base = base
        self.eur = amount_eur(world.amount_minor, world.currency)
        self.log_eur = np.log1p(self.eur)
        home = world.user_home[world.user]
        self.foreign = (world.country != home).astype(np.float64)
        t = world.occurred_ms
        u, m, d = (
            world.user.astype(np.int64),
            world.merchant.astype(np.int64),
            world.device.astype(np.int64),
        )
        self.user_log_amount = PartyHistory.build(u, t, self.log_eur, base)
        self.user_amount = PartyHistory.build(u, t, self.eur, base)
        self.user_foreign = PartyHistory.build(u, t, self.foreign, base)
        self.merchant_log_amount = PartyHistory.build(m, t, self.log_eur, base)
        self.device_amount = PartyHistory.build(d, t, self.eur, base)
        cb = world.chargeback_ms >= 0
        self.user_cb = PartyHistory.build(u[cb], world.chargeback_ms[cb], None, base)
        self.merchant_cb = PartyHistory.build(m[cb], world.chargeback_ms[cb], None, base)
        self.device_cb = PartyHistory.build(d[cb], world.chargeback_ms[cb], None, base)
        # first use of each (user, device) pair: "new device" events
        pair = u * np.int64(len(world.device_ids)) + d
        _, first = np.unique(pair, return_index=True)
        self.first_pair = np.zeros(world.n, bool)
        self.first_pair[first] = True  # time-sorted, so the first index is the first use
        self.user_new_device = PartyHistory.build(u[first], t[first], None, base)
        self.device_new_user = PartyHistory.build(d[first], t[first], None, base)

    def fraud_user(self, users: np.ndarray, t: np.ndarray) -> np.ndarray:
        w = self.world
        out = np.tile(FRAUD_USER.defaults, (len(users), 1))
        col = FRAUD_USER.slot
        out[:, col("fu_account_age_days")] = np.maximum(t - w.user_signup_ms[users], 0) / DAY_MS
        n30, *_ = self.user_log_amount.window(users, t, 30 * DAY_MS)
        n_all, s, s2, last = self.user_log_amount.window(users, t, _ALL_TIME)
        out[:, col("fu_txn_count_30d")] = n30
        out[:, col("fu_txn_count_total")] = n_all
        has = n_all > 0
        mean = np.where(has, s / np.maximum(n_all, 1), FRAUD_USER.feature("fu_amount_mean_log").default)
        var = np.where(n_all > 1, s2 / np.maximum(n_all, 1) - mean**2, 0.0)
        std = np.where(
            n_all > 1, np.sqrt(np.maximum(var, 0.0)), FRAUD_USER.feature("fu_amount_std_log").default
        )
        out[:, col("fu_amount_mean_log")] = mean
        out[:, col("fu_amount_std_log")] = std
        out[:, col("fu_home_country")] = [country_code(c) for c in w.user_home[users].tolist()]
        _, foreign, _, _ = self.user_foreign.window(users, t, _ALL_TIME)
        out[:, col("fu_foreign_share")] = np.where(has, foreign / np.maximum(n_all, 1), 0.0)
        out[:, col("fu_new_devices_30d")] = self.user_new_device.window(users, t, 30 * DAY_MS)[0]
        out[:, col("fu_chargebacks_90d")] = self.user_cb.window(users, t, 90 * DAY_MS)[0]
        last_t = self.user_log_amount.times[np.maximum(last, 0)]
        out[:, col("fu_days_since_last_txn")] = np.where(
            has, (t - last_t) / DAY_MS, FRAUD_USER.feature("fu_days_since_last_txn").default
        )
        return out.astype(np.float32)

    def merchant(self, merchants: np.ndarray, t: np.ndarray) -> np.ndarray:
        out = np.tile(MERCHANT.defaults, (len(merchants), 1))
        col = MERCHANT.slot
        out[:, col("m_txn_count_30d")] = self.merchant_log_amount.window(merchants, t, 30 * DAY_MS)[0]
        n90 = self.merchant_log_amount.window(merchants, t, 90 * DAY_MS)[0]
        cb90 = self.merchant_cb.window(merchants, t, 90 * DAY_MS)[0]
        prior = MERCHANT.feature("m_chargeback_rate_90d").default
        out[:, col("m_chargeback_rate_90d")] = (cb90 + 20 * prior) / (n90 + 20)
        n_all, s, _, _ = self.merchant_log_amount.window(merchants, t, _ALL_TIME)
        out[:, col("m_amount_mean_log")] = np.where(
            n_all > 0, s / np.maximum(n_all, 1), MERCHANT.feature("m_amount_mean_log").default
        )
        first = self.merchant_log_amount.first_time(merchants, t)
        out[:, col("m_age_days")] = np.where(first >= 0, (t - first) / DAY_MS, 0.0)
        return out.astype(np.float32)

    def device(self, devices: np.ndarray, t: np.ndarray) -> np.ndarray:
        out = np.tile(DEVICE.defaults, (len(devices), 1))
        col = DEVICE.slot
        first = self.device_amount.first_time(devices, t)
        out[:, col("d_age_days")] = np.where(first >= 0, (t - first) / DAY_MS, 0.0)
        out[:, col("d_txn_count_30d")] = self.device_amount.window(devices, t, 30 * DAY_MS)[0]
        out[:, col("d_new_users_30d")] = self.device_new_user.window(devices, t, 30 * DAY_MS)[0]
        out[:, col("d_chargebacks_90d")] = self.device_cb.window(devices, t, 90 * DAY_MS)[0]
        return out.astype(np.float32)

