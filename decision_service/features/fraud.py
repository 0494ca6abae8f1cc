"""Fraud on-demand features: ONE implementation, used by the service and the offline jobs.

Request features are vectorised over rows: the service passes one transaction, the training
job passes every transaction of a window, so the two can never drift apart.
"""

from __future__ import annotations

import numpy as np

from decision_service.features.currencies import CURRENCIES, amount_eur  # noqa: F401 (re-exported)
from decision_service.features.definitions import (
    DEVICE,
    FRAUD_NEIGHBOUR_COLUMNS,
    FRAUD_NEIGHBOURS,
    FRAUD_REQUEST,
    FRAUD_USER,
    MERCHANT,
    VELOCITY,
    VELOCITY_WINDOWS,
)

FRAUD_INPUT_GROUPS: tuple[tuple[str, list[str]], ...] = tuple(
    (g.name, g.columns)
    for g in (FRAUD_USER, MERCHANT, DEVICE, VELOCITY, FRAUD_REQUEST, FRAUD_NEIGHBOURS)
    if g is not None  # DEVICE: None when the payments table has no device column
)
"""The groups a fraud model's columns come from (RowAssembler inputs), online and offline."""

_HOUR_MS = 3_600_000
_DAY_MS = 86_400_000
_COUNTRY_UNKNOWN = -1.0

_FU_MEAN = FRAUD_USER.slot("fu_amount_mean_log")
_FU_STD = FRAUD_USER.slot("fu_amount_std_log")
_FU_HOME = FRAUD_USER.slot("fu_home_country") if "fu_home_country" in FRAUD_USER.columns else None
_M_MEAN = MERCHANT.slot("m_amount_mean_log")
_REQ = {c: i for i, c in enumerate(FRAUD_REQUEST.columns)}
VELOCITY_PARTIES: tuple[str, ...] = ("user", "device") if DEVICE is not None else ("user",)
"""The parties with velocity windows, in VELOCITY's column order."""


def country_code(country: str) -> float:
    """ISO 3166-1 alpha-2 as a number (26 * first letter + second); -1 when malformed."""
    if len(country) != 2 or not country.isascii() or not country.isalpha():
        return _COUNTRY_UNKNOWN
    a, b = country.upper()
    return float((ord(a) - 65) * 26 + (ord(b) - 65))


def request_features(
    amount_eur_: np.ndarray,
    occurred_ms: np.ndarray,
    channel: np.ndarray,
    country: np.ndarray,
    new_device: np.ndarray,
    user: np.ndarray,
    merchant: np.ndarray,
) -> np.ndarray:
    """FRAUD_REQUEST columns for n transactions. Returns float32 [n, width].

    ``country`` is ``country_code`` per row; ``user`` / ``merchant`` are FRAUD_USER / MERCHANT
    rows ([width] broadcast or [n, width]) with defaults for unknown parties.
    """
    amount_eur_ = np.atleast_1d(np.asarray(amount_eur_, np.float64))
    n = len(amount_eur_)
    user = np.broadcast_to(np.atleast_2d(user), (n, FRAUD_USER.width))
    merchant = np.broadcast_to(np.atleast_2d(merchant), (n, MERCHANT.width))
    out = np.empty((n, len(FRAUD_REQUEST.columns)), np.float32)
    log_amount = np.log1p(np.maximum(amount_eur_, 0.0))
    out[:, _REQ["r_amount_log"]] = log_amount
    out[:, _REQ["r_amount_z_user"]] = (log_amount - user[:, _FU_MEAN]) / np.maximum(user[:, _FU_STD], 0.25)
    out[:, _REQ["r_amount_vs_merchant"]] = log_amount - merchant[:, _M_MEAN]
    out[:, _REQ["r_hour_of_day"]] = (np.asarray(occurred_ms, np.int64) % _DAY_MS) // _HOUR_MS
    # left out when the project's payments table cannot feed them (features/payments.py)
    if "r_new_device" in _REQ:
        out[:, _REQ["r_new_device"]] = np.asarray(new_device, np.float32)
    if "r_foreign_country" in _REQ and _FU_HOME is not None:
        home = user[:, _FU_HOME]
        country = np.broadcast_to(np.asarray(country, np.float64), (n,))
        out[:, _REQ["r_foreign_country"]] = (home >= 0) & (country >= 0) & (country != home)
    if "r_channel" in _REQ:
        out[:, _REQ["r_channel"]] = np.asarray(channel, np.float32)
    return out


def velocity_from_events(
    user_events: tuple[np.ndarray, np.ndarray], device_events: tuple[np.ndarray, np.ndarray], at_ms: int
) -> np.ndarray:
    """VELOCITY columns of one transaction from its parties' earlier (time ms, amount EUR) events.

    Contract: events at or before ``at_ms`` within each window count; the transaction itself
    must not be among the events (the store drops it), so a retry never counts twice. The
    device's windows only when the project has devices (VELOCITY_PARTIES).
    """
    out = np.empty(len(VELOCITY.columns), np.float32)
    i = 0
    for times, amounts in (user_events, device_events)[: len(VELOCITY_PARTIES)]:
        for _, seconds in VELOCITY_WINDOWS:
            inside = (times >= at_ms - seconds * 1000) & (times <= at_ms)
            out[i] = np.count_nonzero(inside)
            out[i + 1] = amounts[inside].sum()
            i += 2
    return out


def neighbour_space(matrix: np.ndarray, columns: list[str] | tuple[str, ...]) -> np.ndarray:
    """Rows of a model matrix projected to FRAUD_NEIGHBOUR_COLUMNS, log1p on counts, float32.

    Standardization (mean / std from training) is applied by the caller's index wrapper.
    """
    pos = [list(columns).index(c) for c in FRAUD_NEIGHBOUR_COLUMNS]
    x = np.asarray(matrix, np.float32)[:, pos].copy()
    for j, c in enumerate(FRAUD_NEIGHBOUR_COLUMNS):
        if "count" in c or "days" in c or "users" in c or "chargebacks" in c:
            x[:, j] = np.log1p(np.maximum(x[:, j], 0.0))
    return x
