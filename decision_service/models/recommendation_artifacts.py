"""Everything the recommendation pipeline serves from, saved in and loaded from one version.

Files of a recommendation version (see models/registry.py for the layout):
  model.txt            LightGBM ranking model; its feature names are registry columns
  index.faiss          FAISS index over item embeddings; FAISS id = catalog row
  item_embeddings.npy  float32 [n_items, EMBEDDING_DIM], catalog row order
  items.parquet        item_id (string), category (int16), popularity (float32), catalog order
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import faiss
import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# the project's names are read on use (a fraud-only project declares no CATEGORIES)
from decision_service.features import definitions as _project_features
from decision_service.features.assembly import FeatureAssembler
from decision_service.features.definitions import REGISTRY
from decision_service.models.registry import ModelVersion, RegistryError
from decision_service.models.tree_predictor import TreePredictor

MODEL_FILE = "model.txt"
INDEX_FILE = "index.faiss"
EMBEDDINGS_FILE = "item_embeddings.npy"
ITEMS_FILE = "items.parquet"

# The hash ``ItemCatalog.rows_of`` keys item ids by (of their UTF-8 bytes). Python's ``hash`` of
# bytes is salted per process: the lookup built with it is only valid in the process that
# built it. A module attribute so that tests can force collisions.
_id_hash = hash

NO_CATEGORY = -1
"""An item without a category: never matches an allow-list, capped as a group of its own."""


def _utf8(item_id: str | bytes) -> bytes:
    if isinstance(item_id, bytes):
        return item_id
    if isinstance(item_id, str):
        return item_id.encode()
    raise TypeError(f"an item id is str or bytes, not {type(item_id).__name__}")


@dataclass(frozen=True)
class _RowLookup:
    """Item id -> catalog rows, without a Python object per item (see ``ItemCatalog.rows_of``).

    ``hashes`` int64 [m]: sorted, each the hash of exactly one catalog id; ``rows`` int32 [m]:
    the catalog row of ``hashes[i]``. Ids whose hash another catalog id shares (or that appear
    twice in the catalog) are not in those arrays but in ``collided`` (id bytes -> int64 rows),
    and their hashes in ``collided_hashes``; both are empty for any real catalog.
    """

    hashes: np.ndarray
    rows: np.ndarray
    collided: dict[bytes, np.ndarray]
    collided_hashes: frozenset[int]

    @classmethod
    def build(cls, item_ids: np.ndarray) -> _RowLookup:
        # no list of 1M bytes objects: each id is encoded, hashed and dropped
        h = np.fromiter(map(_id_hash, map(str.encode, map(str, item_ids))), np.int64, len(item_ids))
        order = np.argsort(h, kind="stable")
        hashes = h[order]
        same = hashes[1:] == hashes[:-1]
        if not same.any():
            return cls(hashes, order.astype(np.int32), {}, frozenset())
        shared = np.zeros(len(hashes), dtype=bool)
        shared[1:] |= same
        shared[:-1] |= same
        collided: dict[bytes, list[int]] = {}
        for row in order[shared].tolist():
            collided.setdefault(str(item_ids[row]).encode(), []).append(row)
        return cls(
            hashes[~shared],
            order[~shared].astype(np.int32),
            {k: np.asarray(sorted(v), np.int64) for k, v in collided.items()},
            frozenset(hashes[shared].tolist()),
        )

    @property
    def nbytes(self) -> int:
        return self.hashes.nbytes + self.rows.nbytes


@dataclass(frozen=True)
class ItemCatalog:
    """Static item metadata in catalog-row order (the FAISS id of an item is its row)."""

    item_ids: np.ndarray  # object [n] of str
    categories: np.ndarray  # int16 [n], index into CATEGORIES; NO_CATEGORY (-1) = uncategorised
    popularity: np.ndarray  # float32 [n], higher = more popular

    def __len__(self) -> int:
        return len(self.item_ids)

    @cached_property
    def popular_order(self) -> np.ndarray:
        """Every row, most popular first (int64). Built once per catalog, never per request."""
        return np.argsort(-self.popularity, kind="stable").astype(np.int64)

    @cached_property
    def popular_by_category(self) -> dict[int, np.ndarray]:
        """Category -> its rows, most popular first: a popular list within an allow-list."""
        order = self.popular_order
        ordered = self.categories[order]
        return {int(c): order[ordered == c] for c in np.unique(self.categories).tolist()}

    @cached_property
    def category_counts(self) -> np.ndarray:
        """int64 [len(CATEGORIES)]: items per category (what share an allow-list keeps)."""
        known = self.categories[self.categories >= 0].astype(np.int64)
        return np.bincount(known, minlength=len(_project_features.CATEGORIES))

    @cached_property
    def _row_lookup(self) -> _RowLookup:
        """The id -> row lookup behind ``rows_of``: 12 bytes per item (12 MB at 1M items),
        ~0.3 s to build at 1M items. Keyed by Python's per-process salted ``hash``: built at
        load in the process that queries it; never persist it or send it to another process."""
        return _RowLookup.build(self.item_ids)

    def rows_of(self, ids: Iterable[str | bytes]) -> np.ndarray:
        """Catalog rows of the ``ids`` that are in the catalog: int64, sorted, unique.

        Ids are str (the request) or bytes (Redis); a str id is its UTF-8 bytes, so both give
        the same row. Unknown ids are dropped, duplicates give one row. Cost: ~90 µs for 500
        ids on a 1M-item catalog (hash each id, one ``np.searchsorted`` of the sorted hashes).
        An unknown id is taken for a catalog id only if their 64-bit hashes are equal
        (probability ~ catalog size / 2**64 per id); two catalog ids sharing a hash are
        detected at build and mapped exactly.
        """
        keys = ids if isinstance(ids, list) else list(ids)
        if not keys:
            return np.empty(0, dtype=np.int64)
        if set(map(type, keys)) != {bytes}:
            keys = [_utf8(k) for k in keys]
        lookup = self._row_lookup
        queries = np.fromiter(map(_id_hash, keys), dtype=np.int64, count=len(keys))
        queries.sort()  # sorted queries: searchsorted walks the table cache-friendly (~2x)
        found = np.zeros(0, dtype=np.int64)
        if len(lookup.hashes):
            at = np.searchsorted(lookup.hashes, queries)
            np.minimum(at, len(lookup.hashes) - 1, out=at)
            found = lookup.rows[at[lookup.hashes[at] == queries]].astype(np.int64)
        if lookup.collided:
            extra = [lookup.collided.get(k) for k in keys if _id_hash(k) in lookup.collided_hashes]
            found = np.concatenate([found, *(r for r in extra if r is not None)])
        found.sort()
        if len(found) > 1:
            found = found[np.concatenate(([True], found[1:] != found[:-1]))]
        return found

    def warm(self) -> None:
        """Builds the per-catalog indexes now (at load), not on the first request."""
        _ = self.popular_by_category, self.category_counts, self._row_lookup

    def most_popular(self, n: int) -> np.ndarray:
        """Rows of the ``n`` most popular items, most popular first."""
        n = min(n, len(self))
        top = np.argpartition(-self.popularity, n - 1)[:n] if n < len(self) else np.arange(n)
        return top[np.argsort(-self.popularity[top], kind="stable")]


@dataclass(frozen=True)
class RecommendationArtifacts:
    version: str
    model: lgb.Booster
    assembler: FeatureAssembler
    index: faiss.Index
    item_embeddings: np.ndarray
    catalog: ItemCatalog
    manifest: dict[str, Any]
    warnings: tuple[str, ...] = ()
    predictor: TreePredictor | None = None  # set by serving (DS_SCORER); None = model.predict
    arm: str = "live"  # the rollout arm they serve: "live", "canary" or "shadow" (models/rollout.py)

    @classmethod
    def load(cls, version: ModelVersion, verify: bool = True) -> RecommendationArtifacts:
        """Loads and cross-checks a version.

        On failure: raises RegistryError naming the version and what is wrong (missing or
        corrupt file, features the registry cannot serve, inconsistent sizes).
        """
        where = f"{version.use_case}/{version.name}"
        if verify:
            version.verify()
        try:
            model = lgb.Booster(model_file=str(version.file(MODEL_FILE)))
            index = faiss.read_index(str(version.file(INDEX_FILE)))
            embeddings = np.load(version.file(EMBEDDINGS_FILE), mmap_mode="r")
            items = pq.read_table(version.file(ITEMS_FILE))
        except (OSError, RuntimeError, ValueError, lgb.basic.LightGBMError) as exc:
            raise RegistryError(f"{where}: cannot load artifacts: {exc}") from exc
        try:
            assembler = FeatureAssembler(model.feature_name())
        except ValueError as exc:
            raise RegistryError(f"{where}: {exc}") from exc
        catalog = ItemCatalog(
            item_ids=np.asarray(items.column("item_id").to_pylist(), dtype=object),
            categories=items.column("category").to_numpy().astype(np.int16),
            popularity=items.column("popularity").to_numpy().astype(np.float32),
        )
        n = len(catalog)
        if (
            index.ntotal > n
            or embeddings.shape != (n, _project_features.EMBEDDING_DIM)
            or index.d != _project_features.EMBEDDING_DIM
        ):
            raise RegistryError(
                f"{where}: inconsistent artifacts: {n} items, index of {index.ntotal} x {index.d}, "
                f"embeddings {embeddings.shape}"
            )
        if not _ids_are_catalog_rows(index, n):
            raise RegistryError(f"{where}: the index holds ids outside the catalog's {n} rows")
        lowest, highest = catalog.categories.min(initial=0), catalog.categories.max(initial=0)
        if lowest < NO_CATEGORY or highest >= len(_project_features.CATEGORIES):
            raise RegistryError(f"{where}: item categories outside the registry taxonomy")
        trained_vocabulary = version.manifest.get("vocabularies", {}).get("category")
        if trained_vocabulary is not None and tuple(trained_vocabulary) != tuple(
            _project_features.CATEGORIES
        ):
            # an index would name another category: allow-lists and caps would be wrong
            raise RegistryError(
                f"{where}: trained on another category vocabulary ({len(trained_vocabulary)} values) than "
                f"the project's ({len(_project_features.CATEGORIES)}): bootstrap again"
            )
        if not np.isfinite(embeddings).all() or not np.isfinite(catalog.popularity).all():
            # a NaN item vector poisons its cross features; a NaN popularity, the popular order
            raise RegistryError(f"{where}: item embeddings or popularity hold non-finite values")
        catalog.warm()
        warnings = []
        trained_on = version.manifest.get("feature_registry_version")
        if trained_on and trained_on != REGISTRY.version:
            # Its columns are servable (checked above), so serve it, but say so.
            warnings.append(f"trained on registry {trained_on}, serving registry {REGISTRY.version}")
        return cls(
            version.name, model, assembler, index, embeddings, catalog, version.manifest, tuple(warnings)
        )


def save_recommendation_artifacts(
    directory: Path,
    model: lgb.Booster,
    index: faiss.Index,
    item_embeddings: np.ndarray,
    item_ids: list[str] | np.ndarray,
    categories: np.ndarray,
    popularity: np.ndarray,
) -> None:
    """Writes the files of a recommendation version into a staging directory."""
    model.save_model(str(directory / MODEL_FILE))
    faiss.write_index(index, str(directory / INDEX_FILE))
    np.save(directory / EMBEDDINGS_FILE, np.ascontiguousarray(item_embeddings, dtype=np.float32))
    table = pa.table(
        {
            "item_id": pa.array([str(i) for i in item_ids], pa.string()),
            "category": pa.array(np.asarray(categories, np.int16)),
            "popularity": pa.array(np.asarray(popularity, np.float32)),
        }
    )
    pq.write_table(table, directory / ITEMS_FILE)


def _ids_are_catalog_rows(index: faiss.Index, n: int) -> bool:
    """FAISS ids must be catalog rows: explicit ids (IndexIDMap) in [0, n), else sequential."""
    concrete = faiss.downcast_index(index)
    if isinstance(concrete, faiss.IndexIDMap):
        ids = faiss.vector_to_array(concrete.id_map)
        return len(ids) == 0 or (int(ids.min()) >= 0 and int(ids.max()) < n)
    return index.ntotal == n
