"""Fraud on-demand features: ONE implementation, used by the service and the offline jobs.

Request features are vectorised over rows: the service passes one transaction, the training
job passes every transaction of a window, so the two can never drift apart.
"""

from __future__ import annotations

import numpy as np

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

CURRENCIES: dict[str, tuple[int, float]] = {
    # ISO 4217 code: (minor unit exponent, reference EUR per unit)
    "EUR": (2, 1.0),
    "USD": (2, 0.92),
    "GBP": (2, 1.17),
    "CHF": (2, 1.04),
    "SEK": (2, 0.088),
    "NOK": (2, 0.086),
    "DKK": (2, 0.134),
    "PLN": (2, 0.23),
    "CZK": (2, 0.04),
    "HUF": (2, 0.0025),
    "RON": (2, 0.2),
    "TRY": (2, 0.028),
    "CAD": (2, 0.68),
    "AUD": (2, 0.61),
    "NZD": (2, 0.56),
    "JPY": (0, 0.0062),
    "KRW": (0, 0.00068),
    "CNY": (2, 0.13),
    "HKD": (2, 0.118),
    "SGD": (2, 0.69),
    "INR": (2, 0.011),
    "BRL": (2, 0.17),
    "MXN": (2, 0.054),
    "ZAR": (2, 0.05),
    "NGN": (2, 0.0006),
    "AED": (2, 0.25),
    "SAR": (2, 0.245),
    "KWD": (3, 3.0),
    "BHD": (3, 2.44),
    "RUB": (2, 0.01),
}
"""Known currencies. The reference rates only normalise amounts for features (a deployment
would refresh them daily); decisions never depend on their exactness."""

FRAUD_INPUT_GROUPS: tuple[tuple[str, list[str]], ...] = tuple(
    (g.name, g.columns) for g in (FRAUD_USER, MERCHANT, DEVICE, VELOCITY, FRAUD_REQUEST, FRAUD_NEIGHBOURS)
)
"""The groups a fraud model's columns come from (RowAssembler inputs), online and offline."""

_HOUR_MS = 3_600_000
_DAY_MS = 86_400_000
_COUNTRY_UNKNOWN = -1.0

_FU_MEAN = FRAUD_USER.slot("fu_amount_mean_log")
_FU_STD = FRAUD_USER.slot("fu_amount_std_log")
_FU_HOME = FRAUD_USER.slot("fu_home_country")
_M_MEAN = MERCHANT.slot("m_amount_mean_log")
_REQ = {c: i for i, c in enumerate(FRAUD_REQUEST.columns)}


def country_code(country: str) -> float:
    """ISO 3166-1 alpha-2 as a number (26 * first letter + second); -1 when malformed."""
    if len(country) != 2 or not country.isascii() or not country.isalpha():
        return _COUNTRY_UNKNOWN
    a, b = country.upper()
    return float((ord(a) - 65) * 26 + (ord(b) - 65))


def amount_eur(amount_minor: int | np.ndarray, currency: str | np.ndarray) -> np.ndarray:
    """Amount in EUR major units. Contract: every currency is a key of CURRENCIES."""
    cur = np.atleast_1d(np.asarray(currency))
    exp = np.array([CURRENCIES[c][0] for c in cur.tolist()], dtype=np.float64)
    rate = np.array([CURRENCIES[c][1] for c in cur.tolist()], dtype=np.float64)
    return np.asarray(amount_minor, dtype=np.float64) / 10.0**exp * rate


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
    out[:, _REQ["r_new_device"]] = np.asarray(new_device, np.float32)
    home = user[:, _FU_HOME]
    country = np.broadcast_to(np.asarray(country, np.float64), (n,))
    out[:, _REQ["r_foreign_country"]] = (home >= 0) & (country >= 0) & (country != home)
    out[:, _REQ["r_hour_of_day"]] = (np.asarray(occurred_ms, np.int64) % _DAY_MS) // _HOUR_MS
    out[:, _REQ["r_channel"]] = np.asarray(channel, np.float32)
    return out


def velocity_from_events(
    user_events: tuple[np.ndarray, np.ndarray], device_events: tuple[np.ndarray, np.ndarray], at_ms: int
) -> np.ndarray:
    """VELOCITY columns of one transaction from its parties' earlier (time ms, amount EUR) events.

    Contract: events at or before ``at_ms`` within each window count; the transaction itself
    must not be among the events (the store drops it), so a retry never counts twice.
    """
    out = np.empty(len(VELOCITY.columns), np.float32)
    i = 0
    for times, amounts in (user_events, device_events):
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
