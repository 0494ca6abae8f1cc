"""The conversion model's inputs: the user's stored profile plus request-time features.

Stored: the USER group of the feature registry (features/definitions.py), read with one
MGET, its scalar columns (``PROFILE_COLUMNS``). Request-time: ``REQUEST_FEATURES``, computed
from the ConversionRequest here, identically for serving and for the logged row the
training set is built from (the training set never recomputes: it reads the logged row).
Each feature names the reason code reported when it is a top contributor.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np

from decision_service.features.definitions import USER
from decision_service.features.registry import Feature, Reason

_DAY_MS = 86_400_000
_HOUR_MS = 3_600_000

SURFACES = ("home", "search", "pdp", "cart", "checkout")
"""Surfaces the model distinguishes (any other, or none, is -1)."""
DEVICES = ("web", "ios", "android")

PROFILE_COLUMNS: tuple[str, ...] = tuple(f.name for f in USER.features if f.size == 1)
"""The USER group's scalar columns the model may use (the category-share vector is not)."""

_PROFILE_REASONS: dict[str, Reason] = {
    "u_events_7d": Reason(
        "RECENTLY_ACTIVE",
        "many visits in the last 7 days",
        "RECENTLY_INACTIVE",
        "few visits in the last 7 days",
    ),
    "u_events_30d": Reason(
        "ACTIVE_MONTH",
        "active over the last 30 days",
        "INACTIVE_MONTH",
        "little activity over the last 30 days",
    ),
    "u_purchases_30d": Reason(
        "RECENT_BUYER", "bought in the last 30 days", "NO_RECENT_PURCHASE", "no purchase in the last 30 days"
    ),
    "u_purchase_rate": Reason(
        "BUYS_OFTEN", "often buys what they look at", "RARELY_BUYS", "rarely buys what they look at"
    ),
    "u_days_since_last_event": Reason(
        "LAPSED", "has not visited for a while", "VISITED_RECENTLY", "visited recently"
    ),
    "u_account_age_days": Reason(
        "LONG_TIME_CUSTOMER", "a long-time customer", "NEW_CUSTOMER", "a new customer"
    ),
}

REQUEST_FEATURES: tuple[Feature, ...] = (
    Feature(
        "c_cart_items",
        "items in the cart now",
        reason=Reason("CART_FULL", "items in the cart", "CART_EMPTY", "the cart is empty"),
    ),
    Feature(
        "c_log_cart_value",
        "log1p(cart value, major units)",
        reason=Reason("CART_VALUE_HIGH", "a valuable cart", "CART_VALUE_LOW", "a low cart value"),
    ),
    Feature(
        "c_session_page_views",
        "pages viewed in this session",
        reason=Reason("ENGAGED_SESSION", "an engaged session", "SHORT_SESSION", "few pages viewed"),
    ),
    Feature(
        "c_log_session_seconds",
        "log1p(session length, s)",
        reason=Reason("LONG_SESSION", "a long session", "BRIEF_SESSION", "a brief session"),
    ),
    Feature(
        "c_surface",
        "surface index into SURFACES (-1 = other)",
        default=-1.0,
        categorical=True,
        reason=Reason("SURFACE", "where the user is now"),
    ),
    Feature(
        "c_device",
        "device index into DEVICES (-1 = other)",
        default=-1.0,
        categorical=True,
        reason=Reason("DEVICE", "the device used"),
    ),
    Feature(
        "c_hour_of_day",
        "hour of day (UTC) the request was received",
        reason=Reason("TIME_OF_DAY", "the time of day"),
    ),
)
REQUEST_COLUMNS: tuple[str, ...] = tuple(f.name for f in REQUEST_FEATURES)

INPUT_COLUMNS: tuple[str, ...] = PROFILE_COLUMNS + REQUEST_COLUMNS
"""Every conversion input, in the order a score's inputs are logged (the model uses a subset)."""
_PROFILE_SLOTS = np.asarray([USER.slot(c) for c in PROFILE_COLUMNS], np.int64)

FEATURES: dict[str, Feature] = {
    **{f.name: f for f in USER.features if f.name in PROFILE_COLUMNS},
    **{f.name: f for f in REQUEST_FEATURES},
}
"""Every column a conversion model may use -> its declared feature (defaults, reasons)."""


INPUTS_VERSION = hashlib.sha256(
    json.dumps([INPUT_COLUMNS, SURFACES, DEVICES, [f.default for f in REQUEST_FEATURES]]).encode()
).hexdigest()[:12]
"""Fingerprint of the inputs' layout and encodings (column order, category indices): a model
version records it, and the service refuses a version trained on another (models/)."""

INPUT_DEFAULTS = np.asarray([FEATURES[c].default for c in INPUT_COLUMNS], np.float32)


def inputs(profile: np.ndarray, request: np.ndarray) -> np.ndarray:
    """float32 [len(INPUT_COLUMNS)]: the USER row's scalar columns, then the request vector.
    Logged whole with every score, so a later model may use any of them (no recomputation)."""
    return np.concatenate([profile[_PROFILE_SLOTS], request]).astype(np.float32, copy=False)


_CATEGORIES = {"c_surface": ("SURFACE", "on the {} page", SURFACES), "c_device": ("DEVICE", "on {}", DEVICES)}


def reason_code(column: str, value: float, low: bool) -> tuple[str, str]:
    """(code, text) naming why ``column`` with ``value`` moved a score; ``low``: the value is
    below the training median. A categorical names its category (``SURFACE_CHECKOUT``)."""
    if column in _CATEGORIES:
        prefix, text, names = _CATEGORIES[column]
        i = int(value)
        name = names[i] if 0 <= i < len(names) else "other"
        return f"{prefix}_{name.upper()}", text.format(name)
    return reason_of(column).pick(low)


def reason_of(column: str) -> Reason:
    """The reason a column maps to; a profile column without one gets a generic code."""
    feature = FEATURES[column]
    if feature.reason is not None:
        return feature.reason
    if column in _PROFILE_REASONS:
        return _PROFILE_REASONS[column]
    code = column.removeprefix("u_").upper()
    return Reason(
        f"{code}_HIGH", f"{feature.description}: high", f"{code}_LOW", f"{feature.description}: low"
    )


def request_vector(
    cart_items: int,
    cart_value: float,
    page_views: int,
    session_s: float,
    surface: str,
    device: str,
    received_at_ms: int,
) -> np.ndarray:
    """float32 [len(REQUEST_COLUMNS)] in declared order. Inputs are validated at the edge."""
    return np.asarray(
        [
            float(cart_items),
            math.log1p(cart_value),
            float(page_views),
            math.log1p(session_s),
            float(SURFACES.index(surface)) if surface in SURFACES else -1.0,
            float(DEVICES.index(device)) if device in DEVICES else -1.0,
            float((received_at_ms % _DAY_MS) // _HOUR_MS),
        ],
        np.float32,
    )
