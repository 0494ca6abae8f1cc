"""Builds the model row: stored profiles + fresh velocity + request-time features.

Uses features/fraud.py, the code the training job runs, so there is no training/serving skew.
Velocity windows end at the request's ``counted_at_ms`` (the server's receive time), the
instant the store read them at; the hour-of-day feature keeps the payment's ``occurred_at``.
"""

from __future__ import annotations

import numpy as np

from decision_service.features.definitions import (
    DEVICE,
    FRAUD_NEIGHBOURS,
    FRAUD_REQUEST,
    FRAUD_USER,
    MERCHANT,
    VELOCITY,
)
from decision_service.features.fraud import country_code, request_features, velocity_from_events
from decision_service.stages.fraud_base import FraudState

_NO_EVENTS = (np.empty(0, np.int64), np.empty(0, np.float64))
_NN_DEFAULTS = np.array([f.default for f in FRAUD_NEIGHBOURS.features], np.float32)


class TransactionFeatures:
    name = "features"

    def build(self, state: FraudState) -> np.ndarray:
        t = state.request.transaction
        counted_at = state.request.counted_at_ms
        ctx = state.context
        if ctx is not None:
            user, merchant = ctx.user.values[0], ctx.merchant.values[0]
            device = ctx.device.values[0] if ctx.device is not None else None
            velocity = velocity_from_events(ctx.user_events, ctx.device_events, counted_at)
            new_device = float(bool(t.device_id) and not ctx.device_known)
        else:
            # Store unavailable: declared defaults; "new device" unknown -> 0 (not evidence).
            user, merchant = FRAUD_USER.defaults, MERCHANT.defaults
            device = DEVICE.defaults if DEVICE is not None else None
            velocity = velocity_from_events(_NO_EVENTS, _NO_EVENTS, counted_at)
            new_device = 0.0
        request = request_features(
            np.array([t.amount_eur]),
            np.array([t.occurred_at_ms]),
            np.array([t.channel]),
            np.array([country_code(t.country)]),
            np.array([new_device]),
            user,
            merchant,
        )
        blocks = {
            FRAUD_USER.name: user,
            MERCHANT.name: merchant,
            **({DEVICE.name: device} if DEVICE is not None else {}),  # None: no devices
            VELOCITY.name: velocity,
            FRAUD_REQUEST.name: request,
            FRAUD_NEIGHBOURS.name: _NN_DEFAULTS,
        }
        return state.artifacts.assembler.assemble(blocks, 1)
