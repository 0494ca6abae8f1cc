"""Everything the recommendation pipeline serves from, saved in and loaded from one version.

Files of a recommendation version (see models/registry.py for the layout):
  model.txt            LightGBM ranking model; its feature names are registry columns
  index.faiss          FAISS index over item embeddings; FAISS id = catalog row
  item_embeddings.npy  float32 [n_items, EMBEDDING_DIM], catalog row order
  items.parquet        item_id (string), category (int16), popularity (float32), catalog order
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import faiss
import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from decision_service.features.assembly import FeatureAssembler
from decision_service.features.definitions import CATEGORIES, EMBEDDING_DIM, REGISTRY
from decision_service.models.registry import ModelVersion, RegistryError
from decision_service.models.tree_predictor import TreePredictor

MODEL_FILE = "model.txt"
INDEX_FILE = "index.faiss"
EMBEDDINGS_FILE = "item_embeddings.npy"
ITEMS_FILE = "items.parquet"


@dataclass(frozen=True)
class ItemCatalog:
    """Static item metadata in catalog-row order (the FAISS id of an item is its row)."""

    item_ids: np.ndarray  # object [n] of str
    categories: np.ndarray  # int16 [n], index into CATEGORIES
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
        return np.bincount(self.categories.astype(np.int64), minlength=len(CATEGORIES))

    def warm(self) -> None:
        """Builds the per-catalog indexes now (at load), not on the first request."""
        _ = self.popular_by_category, self.category_counts

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
        if index.ntotal > n or embeddings.shape != (n, EMBEDDING_DIM) or index.d != EMBEDDING_DIM:
            raise RegistryError(
                f"{where}: inconsistent artifacts: {n} items, index of {index.ntotal} x {index.d}, "
                f"embeddings {embeddings.shape}"
            )
        if not _ids_are_catalog_rows(index, n):
            raise RegistryError(f"{where}: the index holds ids outside the catalog's {n} rows")
        if catalog.categories.min(initial=0) < 0 or catalog.categories.max(initial=0) >= len(CATEGORIES):
            raise RegistryError(f"{where}: item categories outside the registry taxonomy")
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
