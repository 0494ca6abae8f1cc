"""Everything conversion scoring serves from, saved in and loaded from one registry version.

Files of a conversion version (models/registry.py has the layout):
  model.txt   LightGBM binary model; its feature names are columns of features.FEATURES
Manifest keys used here:
  ``calibration``      {"a", "b"}: probability = sigmoid(a * margin + b) (Platt scaling of
                       the model's raw log-odds margin, fitted on the latest training rows,
                       which neither the trees nor early stopping saw)
  ``base_rate``        the training positive rate: answered when the model cannot score
  ``feature_medians``  column -> training median (the direction of a reason: high / low)
  ``feature_minima``   column -> training minimum (a value at the median that is also the
                       minimum, e.g. an empty cart, reads as low, not high)
  ``conversion_inputs_version``  features.conversion.INPUTS_VERSION it was trained on
                       (another layout or category encoding is refused at load)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from decision_service.features.conversion import FEATURES, INPUT_COLUMNS, INPUTS_VERSION
from decision_service.features.definitions import REGISTRY
from decision_service.models.published import PublishedModels
from decision_service.models.registry import ModelRegistry, ModelVersion, RegistryError

MODEL_FILE = "model.txt"


@dataclass(frozen=True)
class ConversionArtifacts:
    version: str
    model: lgb.Booster
    columns: tuple[str, ...]  # the model's feature order
    input_pos: np.ndarray  # int64 [n columns]: each model column's index in INPUT_COLUMNS
    medians: np.ndarray  # float32 [n columns]: training medians
    minima: np.ndarray  # float32 [n columns]: training minima (-inf when not recorded)
    calibration: tuple[float, float]  # (a, b)
    base_rate: float
    manifest: dict[str, Any]
    warnings: tuple[str, ...] = ()
    arm: str = "live"  # the rollout arm they serve: "live", "canary" or "shadow" (models/rollout.py)

    @classmethod
    def load(cls, version: ModelVersion, verify: bool = True) -> ConversionArtifacts:
        """Loads and cross-checks a version.

        On failure: RegistryError naming the version and what is wrong (missing or corrupt
        file, a column no conversion input provides, a bad calibration or base rate)."""
        where = f"{version.use_case}/{version.name}"
        if verify:
            version.verify()
        try:
            model = lgb.Booster(model_file=str(version.file(MODEL_FILE)))
        except (OSError, lgb.basic.LightGBMError) as exc:
            raise RegistryError(f"{where}: cannot load {MODEL_FILE}: {exc}") from exc
        columns = tuple(model.feature_name())
        unknown = [c for c in columns if c not in FEATURES]
        if unknown:
            raise RegistryError(f"{where}: no conversion input provides {', '.join(unknown)}")
        m = version.manifest
        try:
            a, b = float(m["calibration"]["a"]), float(m["calibration"]["b"])
            base_rate = float(m["base_rate"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(
                f"{where}: manifest needs calibration {{a, b}} and base_rate ({exc})"
            ) from exc
        if not (math.isfinite(a) and math.isfinite(b) and 0.0 <= base_rate <= 1.0):
            raise RegistryError(f"{where}: bad calibration ({a}, {b}) or base_rate {base_rate}")
        inputs_version = m.get("conversion_inputs_version")
        if inputs_version != INPUTS_VERSION:
            raise RegistryError(
                f"{where}: trained on conversion inputs {inputs_version}, this service encodes "
                f"{INPUTS_VERSION} (features/conversion.py changed: retrain)"
            )
        medians_by_name = m.get("feature_medians", {})
        warnings = []
        trained_on = m.get("feature_registry_version")
        if trained_on and trained_on != REGISTRY.version:
            warnings.append(f"trained on registry {trained_on}, serving registry {REGISTRY.version}")
        return cls(
            version.name,
            model,
            columns,
            np.asarray([INPUT_COLUMNS.index(c) for c in columns], np.int64),
            np.asarray([medians_by_name.get(c, FEATURES[c].default) for c in columns], np.float32),
            np.asarray([m.get("feature_minima", {}).get(c, -np.inf) for c in columns], np.float32),
            (a, b),
            base_rate,
            m,
            tuple(warnings),
        )

    def row(self, inputs: np.ndarray) -> np.ndarray:
        """float32 [1, n columns] in model order from the inputs (features.conversion.inputs)."""
        return inputs[self.input_pos][None, :]


def save_conversion_artifacts(
    directory: Path,
    model: lgb.Booster,
    calibration: tuple[float, float],
    base_rate: float,
    medians: dict[str, float],
    minima: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Writes the files of a conversion version; returns its manifest entries."""
    model.save_model(str(directory / MODEL_FILE))
    return {
        "feature_registry_version": REGISTRY.version,
        "model_features": model.feature_name(),
        "calibration": {"a": float(calibration[0]), "b": float(calibration[1])},
        "base_rate": float(base_rate),
        "feature_medians": {k: float(v) for k, v in medians.items()},
        "feature_minima": {k: float(v) for k, v in (minima or {}).items()},
        "conversion_inputs_version": INPUTS_VERSION,
    }


class ConversionModels(PublishedModels[ConversionArtifacts]):
    """The current conversion artifacts (the holder hot reload swaps), or none published."""

    def __init__(self, registry: ModelRegistry, use_case: str) -> None:
        super().__init__(
            registry, use_case, ConversionArtifacts.load, lambda a: f"({len(a.columns)} features)"
        )
