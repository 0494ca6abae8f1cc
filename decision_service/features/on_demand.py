"""On-demand (user x item) cross features: ONE implementation, used online and offline.

The serving hydrator calls it with one user row broadcast over the candidates; the offline
training-set job calls it with row-aligned user and item matrices. Same code, so no skew.
"""

from __future__ import annotations

import numpy as np

from decision_service.features.definitions import ITEM, USER, USER_ITEM

_CAT = ITEM.slot("i_category")
_PRICE = ITEM.slot("i_price")
_U_AVG_PRICE = USER.slot("u_avg_price")
_U_STD_PRICE = USER.slot("u_std_price")
_N_CAT = USER.feature("u_category_share").size
_U_SHARES = slice(USER.slot("u_category_share_00"), USER.slot("u_category_share_00") + _N_CAT)


def user_item_features(
    user: np.ndarray, user_emb: np.ndarray, items: np.ndarray, item_emb: np.ndarray
) -> np.ndarray:
    """Computes USER_ITEM columns for n (user, item) pairs.

    ``user`` is [user width] (broadcast) or [n, user width]; ``user_emb`` is [d] or [n, d];
    ``items`` is [n, item width]; ``item_emb`` is [n, d]. Returns float32 [n, 6].
    """
    n = len(items)
    user = np.atleast_2d(user)
    user_emb = np.atleast_2d(user_emb)
    out = np.empty((n, len(USER_ITEM.columns)), dtype=np.float32)

    dot = np.einsum("ij,ij->i", item_emb, np.broadcast_to(user_emb, item_emb.shape))
    norms = np.linalg.norm(item_emb, axis=1) * np.linalg.norm(user_emb, axis=1)
    out[:, 0] = dot
    out[:, 1] = dot / np.maximum(norms, 1e-6)

    cat = items[:, _CAT].astype(np.int64)
    known = (cat >= 0) & (cat < _N_CAT)
    safe_cat = np.where(known, cat, 0)
    if len(user) == 1:  # serving: one user, so rank its categories once, then look them up
        row = user[0, _U_SHARES]
        share = row[safe_cat]
        rank = (row[None, :] > row[:, None]).sum(axis=1)[safe_cat]
        has_history = np.full(n, row.sum() > 0)
    else:
        shares = user[:, _U_SHARES]
        share = np.take_along_axis(shares, safe_cat[:, None], axis=1)[:, 0]
        rank = (shares > share[:, None]).sum(axis=1)
        has_history = shares.sum(axis=1) > 0  # no history: every category ties at rank 0
    out[:, 2] = np.where(known, share, 0.0)
    out[:, 3] = np.where(known & has_history, rank, USER_ITEM.features[3].default)

    avg = np.broadcast_to(user[:, _U_AVG_PRICE], (n,))
    std = np.broadcast_to(user[:, _U_STD_PRICE], (n,))
    price = items[:, _PRICE]
    out[:, 4] = price / np.maximum(avg, 1e-3)
    out[:, 5] = (price - avg) / np.maximum(std, 1.0)
    return out
