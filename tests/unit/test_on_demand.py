"""The cross features: the serving shortcut (one user) equals the row-aligned training path."""

from __future__ import annotations

import numpy as np

from decision_service.features.definitions import ITEM, USER
from decision_service.features.on_demand import user_item_features

_N_CAT = USER.feature("u_category_share").size
_U_SHARES = slice(USER.slot("u_category_share_00"), USER.slot("u_category_share_00") + _N_CAT)


def test_one_user_broadcast_equals_row_aligned_rows():
    rng = np.random.default_rng(7)
    n = 300
    user = rng.random(USER.width, dtype=np.float32)
    shares = rng.integers(0, 4, _N_CAT).astype(np.float32)  # ties on purpose
    user[_U_SHARES] = shares / shares.sum()
    items = rng.random((n, ITEM.width), dtype=np.float32)
    items[:, ITEM.slot("i_category")] = rng.integers(-1, _N_CAT + 2, n)  # unknown ones too
    user_emb = rng.normal(size=64).astype(np.float32)
    item_emb = rng.normal(size=(n, 64)).astype(np.float32)

    served = user_item_features(user, user_emb, items, item_emb)
    trained = user_item_features(np.tile(user, (n, 1)), np.tile(user_emb, (n, 1)), items, item_emb)
    np.testing.assert_array_equal(served, trained)

    no_history = user.copy()
    no_history[_U_SHARES] = 0.0
    served = user_item_features(no_history, user_emb, items, item_emb)
    trained = user_item_features(np.tile(no_history, (n, 1)), np.tile(user_emb, (n, 1)), items, item_emb)
    np.testing.assert_array_equal(served, trained)
