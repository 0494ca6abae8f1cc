"""THE feature registry of the active project: what the service stores, serves, logs and trains on.

This module is the active project's ``features.py`` (decision_service/project.py says which
project is active: ``--project DIR``, ``$DS_PROJECT``, or a project.yaml in the working
directory). Its public names are the project's: at least ``REGISTRY`` (a FeatureRegistry),
and the groups the served use cases read (recommendation: USER, USER_EMBEDDING, ITEM,
USER_ITEM, CATEGORIES, EMBEDDING_DIM, RECOMMENDATION_MODEL_FEATURES; fraud: PAYMENTS and
``FRAUD = fraud_features(PAYMENTS)`` (features/payments.py), which provides FRAUD_USER,
MERCHANT, DEVICE (None without devices), VELOCITY, VELOCITY_WINDOWS, FRAUD_REQUEST,
FRAUD_NEIGHBOURS, FRAUD_NEIGHBOUR_COLUMNS, FRAUD_MODEL_FEATURES and FRAUD_LEFT_OUT;
conversion: USER).

Everything else derives from it: the packed value layout (features/packed.py), the online
read (stages/hydrators), the training-set columns and the model's feature order (offline/),
and the served-feature log schema. A group's fingerprint is part of its Redis keys, so a
changed declaration never mixes old and new layouts.

On failure: importing it raises ProjectError (no project, a broken project file); importing
a name the project does not declare raises ImportError naming the project and the name.
"""

from __future__ import annotations

from decision_service import project as _project
from decision_service.features.payments import FraudFeatures as _FraudFeatures
from decision_service.features.registry import FeatureRegistry as _FeatureRegistry

PROJECT = _project.active()
"""The active project (decision_service/project.py)."""

_module = _project.load_features(PROJECT)
globals().update({k: v for k, v in vars(_module).items() if not k.startswith("_") and k != "PROJECT"})
if isinstance(globals().get("FRAUD"), _FraudFeatures):
    # the standard fraud groups of the project's PAYMENTS contract (features/payments.py);
    # a name the project declares itself wins
    globals().update({k: v for k, v in FRAUD.exports().items() if k not in vars(_module)})  # noqa: F821

if not isinstance(globals().get("REGISTRY"), _FeatureRegistry):
    raise _project.ProjectError(f"{PROJECT.features_file}: must define REGISTRY = FeatureRegistry(...)")


def __getattr__(name: str) -> object:
    if name.startswith("__"):
        raise AttributeError(name)
    raise ImportError(
        f"project {PROJECT.name!r} ({PROJECT.features_file}) does not declare {name}; "
        f"it serves {', '.join(PROJECT.use_cases)}"
    )
