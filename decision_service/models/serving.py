"""Holds the artifacts a running service serves from (the seam hot reload swaps)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import faiss

from decision_service.config import ServiceConfig
from decision_service.models.recommendation_artifacts import MODEL_FILE, RecommendationArtifacts
from decision_service.models.registry import ModelRegistry, RegistryError
from decision_service.models.tree_predictor import CompiledTreesUnavailable, make_predictor

log = logging.getLogger(__name__)

RECOMMENDATION = "recommendation"


class RecommendationModels:
    """The current recommendation artifacts. ``get()`` is what each request snapshots."""

    def __init__(self, registry: ModelRegistry, config: ServiceConfig) -> None:
        self._registry = registry
        self._config = config
        self._current: RecommendationArtifacts | None = None

    def load_current(self) -> RecommendationArtifacts:
        """Loads the registry's CURRENT version. On failure: RegistryError, nothing swapped."""
        return self.install(self.prepare(self._registry.current_name(RECOMMENDATION)))

    @property
    def registry(self) -> ModelRegistry:
        return self._registry

    def prepare(self, name: str) -> RecommendationArtifacts:
        """Loads, checks and tunes a version without serving it (hot reload runs this off the
        event loop). On failure: RegistryError naming the version and the problem."""
        version = self._registry.get(RECOMMENDATION, name)
        artifacts = RecommendationArtifacts.load(version)
        tune_index(artifacts.index, self._config, version.manifest.get("index", {}).get("params", {}))
        where = f"{RECOMMENDATION}/{name}"
        try:
            predictor = make_predictor(
                artifacts.model,
                version.file(MODEL_FILE),
                self._config.scorer,
                self._config.scorer_max_abs_diff,
                where,
            )
        except CompiledTreesUnavailable as exc:  # DS_SCORER=compiled and it cannot be
            raise RegistryError(f"{where}: DS_SCORER=compiled: {exc}") from exc
        return dataclasses.replace(artifacts, predictor=predictor)

    def install(self, artifacts: RecommendationArtifacts) -> RecommendationArtifacts:
        """Serves ``artifacts`` from now on: one reference swap; requests in flight keep the
        snapshot they took."""
        self._current = artifacts
        log.info(
            "serving recommendation model %s (%d items, %d features, registry %s, %s scorer)",
            artifacts.version,
            len(artifacts.catalog),
            len(artifacts.assembler.columns),
            artifacts.manifest.get("feature_registry_version"),
            artifacts.predictor.kind if artifacts.predictor else "lightgbm",
        )
        for warning in artifacts.warnings:
            log.warning("recommendation model %s: %s", artifacts.version, warning)
        return artifacts

    def get(self) -> RecommendationArtifacts:
        if self._current is None:
            raise RuntimeError("no recommendation artifacts loaded")
        return self._current


def knobs_of(index: faiss.Index) -> faiss.Index:
    """The index whose search-time knobs (nprobe, efSearch) apply, inside the wrappers
    build_index puts around it. A view: ``index`` must stay alive while it is used."""
    concrete = faiss.downcast_index(index)
    if isinstance(concrete, faiss.IndexIDMap):  # ids = catalog rows around the searched index
        concrete = faiss.downcast_index(concrete.index)
    if isinstance(concrete, faiss.IndexRefine):  # exact re-ranking around a compressed index
        concrete = faiss.downcast_index(concrete.base_index)
    return concrete


def tune_index(index: faiss.Index, config: ServiceConfig, measured: Mapping[str, Any] | None = None) -> None:
    """Applies the search-time knobs to whichever index kind was built: the configured value,
    else the one the bootstrap measured its recall with (``measured``, the manifest's index
    params), else FAISS-typical defaults."""
    measured = measured or {}
    concrete = knobs_of(index)
    if hasattr(concrete, "hnsw"):
        concrete.hnsw.efSearch = config.hnsw_ef_search or int(measured.get("efSearch", 128))
    if hasattr(concrete, "nprobe"):
        concrete.nprobe = config.ivf_nprobe or int(measured.get("nprobe", 16))
