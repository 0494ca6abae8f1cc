"""Layering without back-arrows: server -> use_cases -> engine -> parts -> domain (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import decision_service

ROOT = Path(decision_service.__file__).parent
PARTS = ("stages", "decision_log", "outcomes", "models", "retrieval", "features")
BASE = ("domain", "errors", "telemetry", "rate_limited_log", "storage")


def _layer(module: str) -> int:
    """Higher layers may import lower ones only (devtools and _generated stand aside)."""
    top = module.split(".")[1] if module.count(".") else ""
    if top == "server":
        return 4
    if top == "use_cases":
        return 3
    if top == "engine":
        return 2
    if top in PARTS:
        return 1
    if top in BASE:
        return 0
    return -1


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("decision_service.")}


def test_kind_back_arrow_no_module_imports_a_layer_above_its_own():
    wrong = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(rel.parts)
        if "_generated" in module or "devtools" in module:
            continue
        own = _layer(module)
        if own < 0:
            continue
        for imported in _imports(path):
            if _layer(imported) > own:
                wrong.append(f"{module} imports {imported}")
    assert not wrong, "\n".join(sorted(wrong))


def _use_case_names() -> tuple[str, ...]:
    from decision_service.use_cases import USE_CASES

    names = []
    for u in USE_CASES:
        names += [f'"{u.name}"', f'"{u.request_field}"', f"use_cases.{u.name}"]
    return tuple(names)


_USE_CASE_NAMES = _use_case_names()


def test_the_generic_machinery_names_no_use_case():
    generic = [ROOT / "server", ROOT / "engine.py", ROOT / "models" / "reload.py", ROOT / "outcomes" / "recorder.py",
               ROOT / "outcomes" / "decision_index.py"]
    named = []
    for where in generic:
        for path in [where] if where.is_file() else where.rglob("*.py"):
            code = "\n".join(
                line for line in path.read_text().splitlines() if not line.lstrip().startswith(("#", '"""'))
            )
            for name in _USE_CASE_NAMES:
                if name in code:
                    named.append(f"{path.relative_to(ROOT)}: {name}")
    assert not named, named


def _backend_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    backend = ("redis", "hiredis", "decision_service.features.redis_store", "decision_service.features.redis_mux")
    return [n for n in names if n in backend or n.startswith(("redis.", "hiredis."))]


def test_kind_backend_leak_only_adapters_and_the_composition_root_know_redis():
    """Stages, use cases, the engine, the recorder and the models reach the online store
    through features/store.py (its read and write halves); only the backend modules (the
    store, the multiplexed client and its cluster twin), the
    decision index (its own small adapter), errors.py (the store's exception types) and the
    composition root (server/app.py, server/collect.py) import redis or the Redis backend."""
    allowed = {
        "features/redis_store.py", "features/redis_mux.py", "features/redis_cluster.py",
        "outcomes/decision_index.py", "errors.py",
        "server/app.py", "server/collect.py",
    }
    leaks = []
    for path in ROOT.rglob("*.py"):
        rel = str(path.relative_to(ROOT))
        if rel in allowed or rel.startswith(("_generated", "devtools")):
            continue
        leaks += [f"{rel} imports {n}" for n in _backend_imports(path)]
    assert not leaks, "\n".join(sorted(leaks))
