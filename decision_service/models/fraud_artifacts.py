"""Everything the fraud pipeline serves from, saved in and loaded from one registry version.

Files of a fraud version (see models/registry.py for the layout):
  model.txt              LightGBM binary model; its feature names are registry columns
  neighbours.faiss       FAISS index over standardized neighbour-space rows of labelled payments
  neighbour_labels.npy   uint8 [ntotal], 1 = chargeback known when the index was built
Manifest keys used here: ``neighbours`` {k, mean, std}, ``feature_medians`` and
``feature_minima`` (reason direction: features.registry.reads_low; minima optional).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import lightgbm as lgb
import numpy as np

from decision_service.features.assembly import RowAssembler
from decision_service.features.definitions import FRAUD_NEIGHBOUR_COLUMNS, REGISTRY
from decision_service.features.fraud import FRAUD_INPUT_GROUPS
from decision_service.models.published import PublishedModels
from decision_service.models.registry import ModelRegistry, ModelVersion, RegistryError
from decision_service.retrieval.neighbours import NeighbourIndex

FRAUD = "fraud"
MODEL_FILE = "model.txt"
INDEX_FILE = "neighbours.faiss"
LABELS_FILE = "neighbour_labels.npy"


@dataclass(frozen=True)
class FraudArtifacts:
    version: str
    model: lgb.Booster
    assembler: RowAssembler
    neighbours: NeighbourIndex
    medians: np.ndarray  # float32 [n model columns], training medians (reason direction)
    manifest: dict[str, Any]
    warnings: tuple[str, ...] = ()
    minima: np.ndarray | None = None  # float32 [n model columns], training minima (None: not recorded)
    arm: str = "live"  # the rollout arm they serve: "live", "canary" or "shadow" (models/rollout.py)

    @classmethod
    def load(cls, version: ModelVersion, verify: bool = True) -> FraudArtifacts:
        """Loads and cross-checks a version.

        On failure: RegistryError naming the version and what is wrong (missing or corrupt
        file, features the registry cannot serve, inconsistent neighbour index).
        """
        where = f"{version.use_case}/{version.name}"
        if verify:
            version.verify()
        try:
            model = lgb.Booster(model_file=str(version.file(MODEL_FILE)))
            index = faiss.read_index(str(version.file(INDEX_FILE)))
            labels = np.load(version.file(LABELS_FILE))
            nn = version.manifest["neighbours"]
            neighbours = NeighbourIndex(
                index,
                labels.astype(np.uint8),
                np.asarray(nn["mean"], np.float32),
                np.asarray(nn["std"], np.float32),
                int(nn["k"]),
            )
        except (OSError, RuntimeError, ValueError, KeyError, lgb.basic.LightGBMError) as exc:
            raise RegistryError(f"{where}: cannot load artifacts: {exc}") from exc
        columns = model.feature_name()
        try:
            assembler = RowAssembler(columns, FRAUD_INPUT_GROUPS)
        except ValueError as exc:
            raise RegistryError(f"{where}: {exc}") from exc
        missing_nn = [c for c in FRAUD_NEIGHBOUR_COLUMNS if c not in columns]
        if missing_nn:
            raise RegistryError(f"{where}: neighbour space needs model columns {', '.join(missing_nn)}")
        if index.ntotal != len(labels) or index.d != len(FRAUD_NEIGHBOUR_COLUMNS):
            raise RegistryError(
                f"{where}: neighbour index {index.ntotal} x {index.d} vs {len(labels)} labels"
            )
        medians_by_name = version.manifest.get("feature_medians", {})
        medians = np.asarray([medians_by_name.get(c, 0.0) for c in columns], np.float32)
        minima_by_name = version.manifest.get("feature_minima", {})
        minima = np.asarray([minima_by_name.get(c, -np.inf) for c in columns], np.float32)
        warnings = []
        trained_on = version.manifest.get("feature_registry_version")
        if trained_on and trained_on != REGISTRY.version:
            warnings.append(f"trained on registry {trained_on}, serving registry {REGISTRY.version}")
        return cls(
            version.name, model, assembler, neighbours, medians, version.manifest, tuple(warnings), minima
        )


def save_fraud_artifacts(directory: Path, model: lgb.Booster, neighbours: NeighbourIndex) -> dict[str, Any]:
    """Writes the files of a fraud version; returns the manifest's ``neighbours`` entry."""
    model.save_model(str(directory / MODEL_FILE))
    faiss.write_index(neighbours.index, str(directory / INDEX_FILE))
    np.save(directory / LABELS_FILE, neighbours.labels.astype(np.uint8))
    return {
        "k": neighbours.k,
        "mean": neighbours.mean.tolist(),
        "std": neighbours.std.tolist(),
        "rows": int(neighbours.index.ntotal),
        "positives": int(neighbours.labels.sum()),
        "columns": list(FRAUD_NEIGHBOUR_COLUMNS),
    }


class FraudModels(PublishedModels[FraudArtifacts]):
    """The current fraud artifacts, or None when no fraud version is published."""

    def __init__(self, registry: ModelRegistry) -> None:
        super().__init__(
            registry,
            FRAUD,
            FraudArtifacts.load,
            lambda a: f"({len(a.assembler.columns)} features, {a.neighbours.index.ntotal} neighbours)",
        )
