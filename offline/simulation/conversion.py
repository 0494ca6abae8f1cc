"""Simulated shopping sessions and whether each one converts (the conversion use case's truth).

A session has a hidden shopping *intent* (never a model input) that drives what the service
can see — cart size and value, pages viewed, session length, the surface — and, with the
user's true activity and price sensitivity (offline.simulation.world.WorldTruth), whether
the user purchases within the label window. So the observable features predict conversion,
but not perfectly, and a model on all of them beats one on a single feature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from decision_service.features.conversion import DEVICES, REQUEST_COLUMNS, request_vector
from offline.simulation.world import WorldTruth

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Sessions:
    """``n`` sessions, column-wise. ``intent`` is hidden (the truth), the rest is observable."""

    user: np.ndarray  # int64 [n] world user rows
    intent: np.ndarray  # float64 [n] hidden
    cart_items: np.ndarray  # int32 [n]
    cart_value: np.ndarray  # float64 [n], major units
    page_views: np.ndarray  # int32 [n]
    session_s: np.ndarray  # float64 [n]
    surface: np.ndarray  # object [n]
    device: np.ndarray  # object [n]
    hour: np.ndarray  # int64 [n], UTC hour of a simulated history row (served: the server's clock)

    def __len__(self) -> int:
        return len(self.user)

    def request_matrix(self, day_ms: int = 0) -> np.ndarray:
        """float32 [n, len(REQUEST_COLUMNS)]: the request-time features as the server computes
        them (features.conversion.request_vector), each session at its hour of ``day_ms``."""
        out = np.empty((len(self), len(REQUEST_COLUMNS)), np.float32)
        for i in range(len(self)):
            out[i] = request_vector(
                int(self.cart_items[i]),
                float(self.cart_value[i]),
                int(self.page_views[i]),
                float(self.session_s[i]),
                str(self.surface[i]),
                str(self.device[i]),
                day_ms + int(self.hour[i]) * HOUR_MS,
            )
        return out


def activity_weights(truth: WorldTruth, eligible: np.ndarray | None = None) -> np.ndarray:
    """P(a session is user u's): proportional to true activity (over ``eligible`` users)."""
    w = truth.user_activity.astype(np.float64)
    if eligible is not None:
        w = w * eligible
    return w / w.sum()


def sample_sessions(
    truth: WorldTruth, n: int, rng: np.random.Generator, p_user: np.ndarray | None = None
) -> Sessions:
    """``n`` sessions of users drawn by activity (``p_user``: activity_weights)."""
    p_user = activity_weights(truth) if p_user is None else p_user
    user = rng.choice(len(p_user), size=n, p=p_user)
    activity = np.log(truth.user_activity[user] / np.median(truth.user_activity) + 1e-6)
    intent = rng.normal(0.0, 1.0, n) + 0.5 * activity
    cart_items = rng.poisson(np.exp(-0.6 + 0.9 * intent)).clip(0, 40).astype(np.int32)
    price = np.exp(rng.normal(3.2, 0.6, n)) * (
        1.3 - 0.3 * np.minimum(truth.user_price_sensitivity[user], 2.0)
    )
    cart_value = np.round(cart_items * price, 2)
    page_views = (1 + rng.poisson(np.exp(1.4 + 0.4 * intent))).astype(np.int32)
    session_s = np.round(page_views * rng.exponential(35.0, n), 1)
    surface = np.where(
        (cart_items > 0) & (intent > 1.0),
        "checkout",
        np.where(cart_items > 0, "cart", rng.choice(np.array(["home", "search", "pdp"]), size=n)),
    ).astype(object)
    device = rng.choice(np.array(DEVICES, dtype=object), size=n, p=[0.5, 0.3, 0.2])
    hour = rng.integers(0, 24, n)
    return Sessions(user, intent, cart_items, cart_value, page_views, session_s, surface, device, hour)


def conversion_probability(truth: WorldTruth, s: Sessions) -> np.ndarray:
    """P(the session's user purchases within the label window): float64 [n]."""
    activity = np.log(truth.user_activity[s.user] / np.median(truth.user_activity) + 1e-6)
    logit = (
        -2.4
        + 0.9 * s.intent
        + 0.35 * np.log1p(s.cart_items)
        + 0.6 * (s.surface == "checkout")
        + 0.3 * activity
        - 0.4 * np.minimum(truth.user_price_sensitivity[s.user], 3.0)
        + 0.2 * (s.device == "ios")
    )
    return 1.0 / (1.0 + np.exp(-logit.astype(np.float64)))
