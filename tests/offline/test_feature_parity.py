"""Parity: the declared USER and ITEM groups (features/definitions.py, compiled to DuckDB SQL by
offline/features/compiler.py) reproduce the hand-written numpy features they replaced
(kept as an oracle in tests/offline/shop_reference.py) on the synthetic shop: same
entities, same times, every feature equal within float32 tolerance."""

from __future__ import annotations

import numpy as np
import pytest

from decision_service.features.definitions import ITEM, USER
from offline.features import compiler
from offline.features.snapshot import compute_snapshot
from offline.simulation.world import World
from tests.offline.shop_reference import reference_features


@pytest.mark.parametrize("day", [None, 20.0])
def test_declared_user_and_item_features_equal_the_hand_written_ones(tiny_world_dir, day):
    world = World.load(tiny_world_dir)
    as_of = world.now_ms if day is None else world.day_ms(day)
    users, items = reference_features(world, as_of)
    served = compute_snapshot(world, as_of)  # what materialization and training use
    for group, ids, matrix, snap in (
        (USER, world.user_ids, users, served.users),
        (ITEM, world.item_ids, items, served.items),
    ):
        new_ids, new = compiler.snapshot(group, as_of, tiny_world_dir)  # every entity of the table
        assert np.array_equal(snap, new)
        assert new_ids.tolist() == ids.tolist()
        wrong = [
            f"{col}: max |diff| {np.abs(new[:, j] - matrix[:, j]).max():.3g}"
            for j, col in enumerate(group.columns)
            if not np.allclose(new[:, j], matrix[:, j], rtol=1e-5, atol=1e-5)
        ]
        assert not wrong, f"{group.name} as of {as_of}: " + "; ".join(wrong)
