"""Point-in-time fraud features over a payments world: the model matrix of training rows.

The party profiles (FRAUD_USER, MERCHANT, DEVICE) are the project's declared groups, compiled
by offline/features/compiler.py over the world's files: the same query for training rows
(t = the payment's own time) and for materialization (t = the snapshot time), so the served
profile and the trained-on profile are the same computation. Chargebacks count only once
they have *arrived* (``chargeback_at < t``): no label leakage. Velocity (the online-updated
windows) and request features are computed here with the online code's functions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from decision_service.features.assembly import RowAssembler
from decision_service.features.definitions import (
    DEVICE,
    FRAUD_MODEL_FEATURES,
    FRAUD_NEIGHBOURS,
    FRAUD_REQUEST,
    FRAUD_USER,
    MERCHANT,
    VELOCITY,
    VELOCITY_WINDOWS,
)
from decision_service.features.fraud import (
    FRAUD_INPUT_GROUPS,
    VELOCITY_PARTIES,
    amount_eur,
    country_code,
    request_features,
)
from decision_service.features.registry import FeatureGroup
from offline.features import compiler
from offline.simulation.fraud_world import FraudWorld
from offline.simulation.world import DAY_MS

_SHIFT = np.int64(1) << np.int64(38)  # > any time span in ms we index (~8.7 years)
_ALL_TIME = np.int64(1) << np.int64(37)


@dataclass
class PartyHistory:
    """Events of one party kind (key, time, value), sorted by (key, time), with prefix sums."""

    code: np.ndarray  # int64 key * _SHIFT + (t - base)
    times: np.ndarray
    csum: np.ndarray  # [n + 1]
    csum2: np.ndarray  # [n + 1]
    base: int

    @classmethod
    def build(cls, key: np.ndarray, t: np.ndarray, value: np.ndarray | None, base: int) -> PartyHistory:
        order = np.lexsort((t, key))
        v = np.ones(len(key)) if value is None else np.asarray(value, np.float64)[order]
        code = key[order].astype(np.int64) * _SHIFT + (t[order].astype(np.int64) - base)
        return cls(
            code, t[order].astype(np.int64), np.r_[0.0, np.cumsum(v)], np.r_[0.0, np.cumsum(v * v)], base
        )

    def window(self, key: np.ndarray, t: np.ndarray, window_ms: int | np.int64) -> tuple[np.ndarray, ...]:
        """(count, sum, sum of squares, index of the last event) of events in [t - window, t)."""
        key = key.astype(np.int64)
        rel = t.astype(np.int64) - self.base
        q = key * _SHIFT + rel
        hi = np.searchsorted(self.code, q, "left")
        lo = np.searchsorted(self.code, key * _SHIFT + np.maximum(rel - window_ms, 0), "left")
        return hi - lo, self.csum[hi] - self.csum[lo], self.csum2[hi] - self.csum2[lo], hi - 1

    def first_time(self, key: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Time of the party's first event before t; -1 when none."""
        key = key.astype(np.int64)
        lo = np.searchsorted(self.code, key * _SHIFT, "left")
        hi = np.searchsorted(self.code, key * _SHIFT + (t.astype(np.int64) - self.base), "left")
        return np.where(hi > lo, self.times[np.minimum(lo, len(self.times) - 1)], -1)


class FraudHistory:
    """A payments world's training-row features: declared party profiles (compiled over the
    world's files: it must have been saved or loaded), velocity and request features."""

    def __init__(self, world: FraudWorld) -> None:
        self.world = world
        base = int(min(world.start_ms, int(world.user_signup_ms.min()))) - 400 * DAY_MS
        self.base = base
        self.eur = world.eur if world.eur is not None else amount_eur(world.amount_minor, world.currency)
        t = world.occurred_ms
        u, d = world.user.astype(np.int64), world.device.astype(np.int64)
        self.user_amount = PartyHistory.build(u, t, self.eur, base)
        self.first_pair = np.zeros(world.n, bool)
        self.device_amount: PartyHistory | None = None
        if world.has_devices:  # a payments table without devices: no device velocity, no "new device"
            # a payment without a device (device -1) is in no device's history, and is never a
            # "new device" (as online: a request without a device id)
            known = np.flatnonzero(d >= 0)
            self.device_amount = PartyHistory.build(d[known], t[known], self.eur[known], base)
            # first use of each (user, device) pair: the request's "new device" flag
            pair = u[known] * np.int64(len(world.device_ids)) + d[known]
            _, first = np.unique(pair, return_index=True)
            self.first_pair[known[first]] = True  # time-sorted, so the first index is the first use

    # ------------------------------------------------------------------ profiles

    def _profiles(self, group: FeatureGroup, ids: np.ndarray, rows: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Row -1 (a payment without that party) is the empty id: no history, the defaults."""
        if self.world.directory is None:
            raise ValueError("the declared profiles read the world's files: save or load the world")
        names = np.where(rows >= 0, ids[np.maximum(rows, 0)].astype(str) if len(ids) else "", "")
        return compiler.point_in_time(group, names.tolist(), t, self.world.directory)

    def fraud_user(self, users: np.ndarray, t: np.ndarray) -> np.ndarray:
        """FRAUD_USER rows float32 [n, width] of user rows ``users`` as of ``t`` (ms)."""
        return self._profiles(FRAUD_USER, self.world.user_ids, users, t)

    def merchant(self, merchants: np.ndarray, t: np.ndarray) -> np.ndarray:
        """MERCHANT rows float32 [n, width] of merchant rows ``merchants`` as of ``t`` (ms)."""
        return self._profiles(MERCHANT, self.world.merchant_ids, merchants, t)

    def device(self, devices: np.ndarray, t: np.ndarray) -> np.ndarray:
        """DEVICE rows float32 [n, width] of device rows ``devices`` as of ``t`` (ms)."""
        return self._profiles(DEVICE, self.world.device_ids, devices, t)

    def velocity(self, rows: np.ndarray) -> np.ndarray:
        """VELOCITY columns of transactions ``rows`` (earlier payments of the same user / device)."""
        w = self.world
        t = w.occurred_ms[rows]
        out = np.empty((len(rows), len(VELOCITY.columns)), np.float32)
        i = 0
        parties = {"user": (self.user_amount, w.user[rows]), "device": (self.device_amount, w.device[rows])}
        for history, keys in (parties[p] for p in VELOCITY_PARTIES):
            for _, seconds in VELOCITY_WINDOWS:
                count, total, _, _ = history.window(keys, t + 1, seconds * 1000 + 1)
                out[:, i] = count
                out[:, i + 1] = total
                i += 2
        # [t - w, t] inclusive of same-millisecond earlier payments, like the online read;
        # the payment itself is excluded below (it is in the history, the store drops it).
        out[:, 0::2] -= 1
        own = np.tile([0.0, 1.0], len(VELOCITY.columns) // 2)[None, :] * self.eur[rows, None]
        out -= own.astype(np.float32)
        return np.maximum(out, 0.0)

    # ------------------------------------------------------------------ model matrix

    def model_matrix(self, rows: np.ndarray, columns: tuple[str, ...] = FRAUD_MODEL_FEATURES) -> np.ndarray:
        """Model matrix [len(rows), len(columns)] with neighbour features at their defaults."""
        w = self.world
        t = w.occurred_ms[rows]
        user = self.fraud_user(w.user[rows], t)
        merchant = self.merchant(w.merchant[rows], t)
        device = self.device(w.device[rows], t) if DEVICE is not None else None
        countries = np.array([country_code(c) for c in w.country[rows].tolist()])
        request = request_features(
            self.eur[rows],
            t,
            w.channel[rows],
            countries,
            self.first_pair[rows].astype(np.float32),
            user,
            merchant,
        )
        assembler = RowAssembler(columns, FRAUD_INPUT_GROUPS)
        blocks = {
            FRAUD_USER.name: user,
            MERCHANT.name: merchant,
            **({DEVICE.name: device} if DEVICE is not None else {}),
            VELOCITY.name: self.velocity(rows),
            FRAUD_REQUEST.name: request,
            FRAUD_NEIGHBOURS.name: np.tile(
                np.array([f.default for f in FRAUD_NEIGHBOURS.features], np.float32), (len(rows), 1)
            ),
        }
        return assembler.assemble(blocks, len(rows))
