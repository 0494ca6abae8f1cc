"""ItemCatalog.rows_of: item ids (str from the request, bytes from Redis) -> catalog rows."""

import numpy as np
import pytest

import decision_service.models.recommendation_artifacts as artifacts_module
from decision_service.models.recommendation_artifacts import ItemCatalog


def catalog(ids):
    n = len(ids)
    return ItemCatalog(
        item_ids=np.asarray(ids, dtype=object),
        categories=np.zeros(n, np.int16),
        popularity=np.ones(n, np.float32),
    )


IDS = ["i0", "i1", "i2", "caf\u00e9", "i4", "\u65e5\u672c"]


def test_rows_of_str_and_bytes_give_the_same_sorted_int64_rows():
    cat = catalog(IDS)
    by_str = cat.rows_of(["i4", "caf\u00e9", "i0", "\u65e5\u672c"])
    by_bytes = cat.rows_of([b"i4", "caf\u00e9".encode(), b"i0", "\u65e5\u672c".encode()])
    assert by_str.dtype == np.int64 and by_bytes.dtype == np.int64
    assert by_str.tolist() == by_bytes.tolist() == [0, 3, 4, 5]
    assert cat.rows_of([b"i1", "i2"]).tolist() == [1, 2]  # mixed
    assert cat.rows_of(frozenset({"i2", "i1"})).tolist() == [1, 2]  # any iterable


def test_rows_of_drops_unknown_ids_and_handles_empty_input():
    cat = catalog(IDS)
    assert cat.rows_of(["nope", b"i2", "I2", "i2 ", "cafe"]).tolist() == [2]
    assert cat.rows_of([b"nope"]).tolist() == []
    for empty in ([], frozenset(), iter(())):
        got = cat.rows_of(empty)
        assert got.dtype == np.int64 and got.shape == (0,)
    empty_catalog = catalog([])
    assert empty_catalog.rows_of(["i0"]).tolist() == []


def test_rows_of_duplicates_in_input_give_one_row():
    cat = catalog(IDS)
    assert cat.rows_of(["i1", b"i1", "i1", "i4", b"i4"]).tolist() == [1, 4]


def test_rows_of_many_ids_match_a_dict():
    ids = [f"i{i:07d}" for i in range(5_000)]
    cat = catalog(ids)
    rng = np.random.default_rng(3)
    ask = [ids[r] for r in rng.integers(0, len(ids), 700)] + [f"x{i}" for i in range(50)]
    expected = sorted({ids.index(a) for a in ask if a in set(ids)})
    assert cat.rows_of([a.encode() for a in ask]).tolist() == expected


def test_rows_of_forced_hash_collision_inside_the_catalog_maps_both_ids(monkeypatch):
    # every id in one of two hash buckets: i0/i2/i4/... collide, and so do i1/i3/i5/...
    monkeypatch.setattr(artifacts_module, "_id_hash", lambda b: len(b) % 2 if b.startswith(b"i") else hash(b))
    ids = ["i0", "i1x", "i2", "i3x", "only"]
    cat = catalog(ids)
    lookup = cat._row_lookup
    assert set(lookup.collided) == {b"i0", b"i1x", b"i2", b"i3x"}  # detected at build
    assert cat.rows_of(["i0"]).tolist() == [0]
    assert cat.rows_of([b"i2"]).tolist() == [2]
    assert cat.rows_of(["i3x", b"i1x"]).tolist() == [1, 3]
    assert cat.rows_of(["only", "i2", "i0"]).tolist() == [0, 2, 4]
    # an unknown id with a colliding hash is still unknown
    assert cat.rows_of(["i9", b"i7x"]).tolist() == []


def test_rows_of_an_id_listed_twice_in_the_catalog_gives_both_rows():
    cat = catalog(["a", "b", "a"])
    assert cat.rows_of([b"a"]).tolist() == [0, 2]
    assert cat.rows_of(["b"]).tolist() == [1]


def test_warm_builds_the_lookup_at_load():
    cat = catalog(IDS)
    cat.warm()
    assert "_row_lookup" in cat.__dict__
    assert cat._row_lookup.hashes.dtype == np.int64 and cat._row_lookup.rows.dtype == np.int32


def test_rows_of_refuses_ids_that_are_neither_str_nor_bytes():
    with pytest.raises(TypeError):
        catalog(IDS).rows_of(["i0", 3])
