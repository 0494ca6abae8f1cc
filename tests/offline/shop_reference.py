"""The hand-written numpy computation of the shop's USER and ITEM features that the declared
definitions replaced (offline/features/compiler.py): kept as an independent oracle, so the
parity test keeps checking the compiler against a second implementation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from decision_service.domain.outcomes import DAY_S
from decision_service.features.definitions import CATEGORIES, ITEM, USER
from decision_service.features.registry import FeatureGroup
from offline.simulation.world import World

DAY_MS = DAY_S * 1000
N_CAT = len(CATEGORIES)
SHARE_HALF_LIFE_DAYS = 14.0


def reference_features(world: World, as_of_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """(users float32 [n_users, USER.width], items float32 [n_items, ITEM.width])."""
    sl = world.events_before(as_of_ms)
    u = world.event_user[sl].astype(np.int64)
    i = world.event_item[sl].astype(np.int64)
    buy = world.event_purchase[sl]
    age_d = (as_of_ms - world.event_ms[sl]) / DAY_MS
    return _user_features(world, u, i, buy, age_d, as_of_ms), _item_features(world, u, i, buy, age_d, as_of_ms)


def _col(group_cols: list[str], name: str) -> int:
    return group_cols.index(name)


def _defaults_and_setter(group: FeatureGroup, n: int) -> tuple[np.ndarray, Callable[..., None]]:
    """An [n, width] matrix of the group's defaults and ``put(column, values, where=None)``."""
    out = np.tile(group.defaults, (n, 1)).astype(np.float32)

    def put(name: str, values: np.ndarray, where: np.ndarray | None = None) -> None:
        col = _col(group.columns, name)
        if where is None:
            out[:, col] = values
        else:
            out[where, col] = values[where]

    return out, put


def _user_features(
    world: World, u: np.ndarray, i: np.ndarray, buy: np.ndarray, age_d: np.ndarray, as_of_ms: int
) -> np.ndarray:
    n = world.n_users
    out, put = _defaults_and_setter(USER, n)
    c = USER.columns

    total = np.bincount(u, minlength=n).astype(np.float64)
    has = total > 0
    in7, in30 = age_d < 7, age_d < 30
    put("u_events_7d", np.bincount(u[in7], minlength=n))
    put("u_events_30d", np.bincount(u[in30], minlength=n))
    put("u_events_total", total)
    put("u_purchases_30d", np.bincount(u[in30 & buy], minlength=n))
    put("u_purchase_rate", np.bincount(u[buy], minlength=n) / np.maximum(total, 1))
    last_age = np.full(n, np.inf)
    np.minimum.at(last_age, u, age_d)
    put("u_days_since_last_event", last_age, has)
    put("u_account_age_days", np.maximum(as_of_ms - world.user_signup_ms, 0) / DAY_MS)
    pairs = np.unique(u * world.n_items + i)
    put("u_distinct_items", np.bincount(pairs // world.n_items, minlength=n))

    cat = world.item_category[i].astype(np.int64)
    counts = np.bincount(u * N_CAT + cat, minlength=n * N_CAT).reshape(n, N_CAT)
    shares = counts / np.maximum(total, 1)[:, None]
    put("u_distinct_categories", (counts > 0).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(shares > 0, shares * np.log(shares), 0.0).sum(axis=1)
    put("u_category_entropy", entropy)
    put("u_top_category_share", shares.max(axis=1))

    price = world.item_price[i].astype(np.float64)
    mean = np.bincount(u, weights=price, minlength=n) / np.maximum(total, 1)
    sq = np.bincount(u, weights=price * price, minlength=n) / np.maximum(total, 1)
    put("u_avg_price", mean, has)
    put("u_std_price", np.sqrt(np.maximum(sq - mean * mean, 0.0)), has)

    w = 0.5 ** (age_d / SHARE_HALF_LIFE_DAYS)
    wc = np.bincount(u * N_CAT + cat, weights=w, minlength=n * N_CAT).reshape(n, N_CAT)
    first = _col(c, "u_category_share_00")
    out[:, first : first + N_CAT] = wc / np.maximum(wc.sum(axis=1, keepdims=True), 1e-12)
    return out


def _item_features(
    world: World, u: np.ndarray, i: np.ndarray, buy: np.ndarray, age_d: np.ndarray, as_of_ms: int
) -> np.ndarray:
    n = world.n_items
    out, put = _defaults_and_setter(ITEM, n)

    listed = world.item_listed_ms < as_of_ms
    price = world.item_price.astype(np.float64)
    put("i_price", price)
    put("i_log_price", np.log1p(price))
    put("i_stock", world.item_stock)
    put("i_category", world.item_category)
    put("i_age_days", np.maximum(as_of_ms - world.item_listed_ms, 0) / DAY_MS)

    total = np.bincount(i, minlength=n).astype(np.float64)
    has = total > 0
    in7, in30 = age_d < 7, age_d < 30
    e7 = np.bincount(i[in7], minlength=n).astype(np.float64)
    e30 = np.bincount(i[in30], minlength=n).astype(np.float64)
    put("i_events_7d", e7)
    put("i_events_30d", e30)
    put("i_events_total", total)
    put("i_purchases_30d", np.bincount(i[in30 & buy], minlength=n))
    put("i_purchase_rate", np.bincount(i[buy], minlength=n) / np.maximum(total, 1))
    pairs = np.unique(i[in30] * world.n_users + u[in30])
    put("i_distinct_users_30d", np.bincount(pairs // world.n_users, minlength=n))
    last_age = np.full(n, np.inf)
    np.minimum.at(last_age, i, age_d)
    put("i_days_since_last_event", last_age, has)
    put("i_trend", e7 / (e30 / 4 + 1))
    everyone = np.zeros(n, np.int64)
    cat = world.item_category.astype(np.int64)
    put("i_popularity_pct", group_percentile(e30, everyone, listed))
    put("i_category_popularity_pct", group_percentile(e30, cat, listed))
    put("i_price_pct_in_category", group_percentile(price, cat, listed), listed)
    return out


def group_percentile(values: np.ndarray, groups: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Percentile of each masked value within its group: 0 = lowest, 1 = highest.

    Ties share the lowest rank; unmasked rows get 0; a group of one gets 1.
    """
    out = np.zeros(len(values), dtype=np.float64)
    idx = np.flatnonzero(mask)
    if not len(idx):
        return out
    v, g = values[idx], groups[idx]
    order = np.lexsort((v, g))
    vs, gs = v[order], g[order]
    pos = np.arange(len(vs))
    new_group = np.r_[True, gs[1:] != gs[:-1]]
    new_run = new_group | np.r_[True, vs[1:] != vs[:-1]]
    group_start = np.maximum.accumulate(np.where(new_group, pos, 0))
    run_start = np.maximum.accumulate(np.where(new_run, pos, 0))
    gid = np.cumsum(new_group) - 1
    size = np.bincount(gid)[gid]
    pct = np.where(size > 1, (run_start - group_start) / np.maximum(size - 1, 1), 1.0)
    out[idx[order]] = pct
    return out


