"""Parity: the declared FRAUD_USER, MERCHANT and DEVICE groups (examples/synthetic/features.py,
compiled to DuckDB SQL by offline/features/compiler.py) reproduce the hand-written numpy
profiles they replaced (tests/offline/fraud_reference.py) on a generated payments world:
same entities, same times, every feature equal within float32 tolerance.

Both flows are checked: point in time at every transaction's own time (the training rows)
and snapshots of every party (materialization) at world now and exactly 30 days after a
transaction (which then sits on the 30-day window edge).

Window edge: the hand-written profiles count [t - w, t); the declarations say so with
``closed="left"``. With the compiler's default (t - w, t) a few rows differ, each one an
event exactly w old (on the tiny world, 34 merchant rows of m_txn_count_30d).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from decision_service.features.definitions import DEVICE, FRAUD_USER, MERCHANT
from decision_service.features.registry import FeatureGroup
from offline.features import compiler
from offline.features.fraud_features import FraudHistory
from offline.simulation.fraud_world import FraudWorld, fraud_preset, generate_fraud_world
from offline.simulation.world import DAY_MS
from tests.offline.fraud_reference import HandWrittenProfiles

GROUPS = (FRAUD_USER, MERCHANT, DEVICE)


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fraud_parity") / "world"
    generate_fraud_world(fraud_preset("tiny"), out)
    return out


@pytest.fixture(scope="module")
def world(world_dir: Path) -> FraudWorld:
    return FraudWorld.load(world_dir)


@pytest.fixture(scope="module")
def history(world: FraudWorld) -> HandWrittenProfiles:
    return HandWrittenProfiles(world)


def _parties(world: FraudWorld, history: HandWrittenProfiles, group: FeatureGroup):
    """(row index of each transaction's party, the party ids, the hand-written profile)."""
    return {
        FRAUD_USER.name: (world.user, world.user_ids, history.fraud_user),
        MERCHANT.name: (world.merchant, world.merchant_ids, history.merchant),
        DEVICE.name: (world.device, world.device_ids, history.device),
    }[group.name]


def _differences(group: FeatureGroup, declared: np.ndarray, hand: np.ndarray) -> list[str]:
    assert declared.shape == hand.shape
    out = []
    for j, col in enumerate(group.columns):
        close = np.isclose(declared[:, j], hand[:, j], rtol=1e-5, atol=1e-5)
        if not close.all():
            i = int(np.flatnonzero(~close)[0])
            out.append(
                f"{col}: {int((~close).sum())} rows differ, e.g. row {i}: declared {declared[i, j]!r}, "
                f"hand-written {hand[i, j]!r}"
            )
    return out


def test_the_declarations_keep_the_fingerprints():
    for g in GROUPS:  # compute / source are not part of the layout
        bare = dataclasses.replace(
            g, features=tuple(dataclasses.replace(f, compute=None) for f in g.features), source=None
        )
        assert bare.fingerprint == g.fingerprint
        assert all(f.compute is not None for f in g.features), g.name


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_point_in_time_at_every_transaction_equals_the_hand_written_profile(group, world, world_dir, history):
    index, ids, hand_written = _parties(world, history, group)
    t = world.occurred_ms
    hand = hand_written(index, t)
    declared = compiler.point_in_time(group, ids[index], t, world_dir)
    wrong = _differences(group, declared, hand)
    assert not wrong, f"{group.name} at the transactions' times: " + "; ".join(wrong)


@pytest.mark.parametrize("when", ["now", "edge"])
@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.name)
def test_snapshot_of_every_party_equals_the_hand_written_profile(group, when, world, world_dir, history):
    _, ids, hand_written = _parties(world, history, group)
    if when == "now":
        as_of = world.now_ms
    else:  # the first transaction of day 10 is exactly 30 days old: on the window's edge
        as_of = int(world.occurred_ms[np.searchsorted(world.occurred_ms, world.day_ms(10))]) + 30 * DAY_MS
    hand = hand_written(np.arange(len(ids)), np.full(len(ids), as_of, dtype=np.int64))
    snap_ids, declared = compiler.snapshot(group, as_of, world_dir)  # every party of the table
    assert snap_ids.tolist() == ids.tolist()
    wrong = _differences(group, declared, hand)
    assert not wrong, f"{group.name} as of {as_of}: " + "; ".join(wrong)


def test_the_training_rows_read_the_declared_profiles(world: FraudWorld, world_dir: Path) -> None:
    """FraudHistory (training rows, materialization) serves the compiled groups: the model
    matrix's profile columns equal the declared values at each payment's time."""
    rows = np.arange(0, world.n, 97)
    t = world.occurred_ms[rows]
    got = FraudHistory(world).fraud_user(world.user[rows], t)
    want = compiler.point_in_time(FRAUD_USER, world.user_ids[world.user[rows]].tolist(), t, world_dir)
    np.testing.assert_array_equal(got, want)
