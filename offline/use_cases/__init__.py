"""The use cases' offline hooks. Adding one: its module here, and one entry in AVAILABLE.

``OFFLINE_USE_CASES`` holds the hooks of the use cases the active project serves.

``offline/runs/demo.py`` and ``offline/runs/flywheel.py`` iterate over ``OFFLINE_USE_CASES``
(see base.py for what a use case provides) and name none of them. Checked at import: every
name is a registered online use case (``decision_service.use_cases.USE_CASES``), once.
"""

from __future__ import annotations

import importlib

from decision_service.use_cases import USE_CASES
from offline.use_cases.base import OfflineUseCase

AVAILABLE: dict[str, tuple[str, str]] = {
    "recommendation": ("offline.use_cases.recommendation", "RECOMMENDATION"),
    "fraud": ("offline.use_cases.fraud", "FRAUD"),
    "conversion": ("offline.use_cases.conversion", "CONVERSION"),
}
"""Every offline hook this package has: use case name -> (module, attribute)."""

OFFLINE_USE_CASES: tuple[OfflineUseCase, ...] = tuple(
    getattr(importlib.import_module(AVAILABLE[u.name][0]), AVAILABLE[u.name][1])
    for u in USE_CASES
    if u.name in AVAILABLE
)


def by_name(name: str) -> OfflineUseCase:
    """The registered offline use case ``name``; ValueError naming the known ones."""
    for uc in OFFLINE_USE_CASES:
        if uc.name == name:
            return uc
    raise ValueError(f"unknown use case {name!r}; known: {', '.join(u.name for u in OFFLINE_USE_CASES)}")


def _check() -> None:
    names = [u.name for u in OFFLINE_USE_CASES]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"offline use case declared twice: {repeated}")
    online = {u.name for u in USE_CASES}
    unknown = sorted(set(names) - online)
    if unknown:
        raise ValueError(f"offline use case(s) {unknown} not registered online: {sorted(online)}")


_check()
