"""The loop (organize + learn) works on what the service logged and served, never on the
simulator: no module under offline/loop imports offline.simulation or offline.runs, and
retrain rebuilds the recommendation index from the saved serving state alone."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow.parquet as pq
import pytest

from decision_service.models.recommendation_artifacts import ITEMS_FILE, RecommendationArtifacts
from decision_service.models.registry import ModelRegistry, ModelVersion

ROOT = Path(__file__).resolve().parents[2]
LOOP = ROOT / "offline" / "loop"
FORBIDDEN = ("offline.simulation", "offline.runs")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path``, including ones inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def test_no_loop_module_imports_the_simulator_or_the_runs():
    modules = sorted(LOOP.glob("*.py"))
    assert {"training_set.py", "retrain.py", "publish_gate.py"} <= {p.name for p in modules}
    bad = [
        f"{p.relative_to(ROOT)}:{line} imports {name}"
        for p in modules
        for line, name in imported_modules(p)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    ]
    assert bad == []


def test_importing_the_loop_loads_no_simulator_module():
    """Transitively too: the loop's modules import (at module level) nothing that does."""
    names = sorted(f"offline.loop.{p.stem}" for p in LOOP.glob("*.py") if p.stem != "__init__")
    # and what retrain calls lazily: the index rebuild and the re-materialization
    names += ["offline.features.build_index", "offline.features.materialize", "offline.features.snapshot",
              "offline.features.embeddings"]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_the_forbidden_import_check_sees_lazy_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from offline.simulation.world import World\n    import offline.runs.demo\n")
    assert [name for _, name in imported_modules(src)] == [
        "offline.simulation.world",
        "offline.simulation.world.World",
        "offline.runs.demo",
    ]


def test_rebuild_index_uses_the_serving_state_not_the_world(tiny_bootstrap, tmp_path):
    """The catalog rebuilt from the saved serving state is the one bootstrap published from
    the world; only the serving state is there to read (no world files next to it)."""
    from offline.loop.retrain import rebuild_index

    world_dir, _, base = tiny_bootstrap
    state = tmp_path / "state"
    shutil.copytree(world_dir / "serving", state / "serving")  # the serving state only, no world
    model = lgb.Booster(model_file=str(base.file("model.txt")))
    staging = tmp_path / "v9999"
    staging.mkdir()
    info = rebuild_index(staging, state, model, threads=1)
    assert info["rebuilt"] is True

    built, published = pq.read_table(staging / ITEMS_FILE), pq.read_table(base.file(ITEMS_FILE))
    assert built.column("item_id").to_pylist() == published.column("item_id").to_pylist()
    np.testing.assert_array_equal(
        built.column("category").to_numpy(), published.column("category").to_numpy()
    )
    np.testing.assert_array_equal(
        built.column("popularity").to_numpy(), published.column("popularity").to_numpy()
    )
    loaded = RecommendationArtifacts.load(
        ModelVersion("recommendation", staging.name, staging, {}), verify=False
    )
    assert loaded.index.ntotal == RecommendationArtifacts.load(base, verify=False).index.ntotal


def test_categories_outside_the_taxonomy_come_from_the_base_catalog(tiny_bootstrap):
    from offline.loop.retrain import serving_categories

    _, _, base = tiny_bootstrap
    items = pq.read_table(base.file(ITEMS_FILE))
    ids = items.column("item_id").to_pylist()
    broken = items.column("category").to_numpy().astype(np.float32)
    broken[3] = 0.5
    np.testing.assert_array_equal(serving_categories(broken, ids, base), items.column("category").to_numpy())
    with pytest.raises(ValueError, match="outside the taxonomy.*no base version"):
        serving_categories(broken, ids, None)
    with pytest.raises(ValueError, match="lists other items"):
        serving_categories(broken, ids[::-1], base)


def test_retrain_publishes_and_rematerializes_from_the_serving_state_alone(
    tiny_bootstrap, tmp_path, redis_server
):
    """retrain(..., world_dir=..., redis_url=...) with nothing but the saved serving state:
    the index is rebuilt and the features re-materialized without the simulated world."""
    from offline.loop.retrain import retrain
    from tests.offline.test_retrain import CFG, logged_slates

    world_dir, shared_registry, _ = tiny_bootstrap
    root = tmp_path / "registry"
    shutil.copytree(shared_registry, root)
    state = tmp_path / "state"
    shutil.copytree(world_dir / "serving", state / "serving")
    result = retrain(logged_slates(300), root, CFG, force=True, world_dir=state, redis_url=redis_server.url)
    assert result.published and result.training["materialized"]["items"] > 0
    version = ModelRegistry(root).current("recommendation")
    assert version.name == result.version and RecommendationArtifacts.load(version).index.ntotal > 0
    assert (state / "feature_history").is_dir()  # appended next to the serving state
