"""The offline half of the use-case seam: the registered hooks and the generic runners."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest

import offline.runs
from decision_service.use_cases import USE_CASES
from offline.runs.flywheel import configured, learned_fields, run_fresh, summary_json
from offline.use_cases import OFFLINE_USE_CASES, by_name
from offline.use_cases.base import Learned, OfflineUseCase

RUNS = Path(offline.runs.__file__).parent
GENERIC = ("demo.py", "flywheel.py", "workspace.py")
HOOKS = ("bootstrap", "demo", "requests", "start", "turn", "learn", "served_version")


def test_offline_use_cases_are_online_use_cases_once():
    names = [uc.name for uc in OFFLINE_USE_CASES]
    assert len(set(names)) == len(names)
    assert set(names) <= {u.name for u in USE_CASES}
    assert {"recommendation", "fraud"} <= set(names)
    for uc in OFFLINE_USE_CASES:
        assert by_name(uc.name) is uc
        assert uc.title and uc.label_wait_s >= 0
        assert uc.columns and all(isinstance(k, str) and w > 0 for k, w in uc.columns)
        assert all(callable(getattr(uc, hook)) for hook in HOOKS), uc.name
    keys = [k for uc in OFFLINE_USE_CASES for k, _ in uc.columns]
    assert len(set(keys)) == len(keys) and "turn" not in keys  # one table, one JSON row
    with pytest.raises(ValueError, match="unknown use case"):
        by_name("no-such-use-case")


def _code_without_docstrings(path: Path) -> ast.Module:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            body[0] = ast.Pass()  # type: ignore[index]
    return tree


def _words(text: str) -> set[str]:
    return set(text.replace(".", " ").replace("_", " ").replace("-", " ").replace("/", " ").split())


def test_the_generic_runners_name_no_use_case():
    names = {u.name for u in USE_CASES} | {u.request_field for u in USE_CASES}
    named = []
    for file in GENERIC:
        tree = _code_without_docstrings(RUNS / file)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                named += [f"{file}: {node.value!r}" for n in names if n == node.value or n in _words(node.value)]
            elif isinstance(node, ast.ImportFrom) and node.module:
                named += [f"{file}: from {node.module}" for n in names if n in _words(node.module)]
            elif isinstance(node, ast.alias):
                named += [f"{file}: import {node.name}" for n in names if n in _words(node.name)]
    assert not named, named


def test_settings_and_use_case_choice():
    first, *rest = OFFLINE_USE_CASES
    assert configured([], [first.name]) == [first]
    assert [u.name for u in configured([], None)] == [u.name for u in OFFLINE_USE_CASES]
    # registry order, whatever order they were asked in
    assert [u.name for u in configured([], [u.name for u in reversed(OFFLINE_USE_CASES)])] == [
        u.name for u in OFFLINE_USE_CASES
    ]
    with pytest.raises(ValueError):
        configured([], ["no-such-use-case"])
    with pytest.raises(ValueError, match="expected"):
        configured(["nonsense"], None)
    for uc in OFFLINE_USE_CASES:
        settings = [f for f in dataclasses.fields(uc) if f.name not in ("name", "title", "columns")]  # type: ignore[arg-type]
        for f in settings:
            value = getattr(uc, f.name)
            if isinstance(value, float) and not isinstance(value, bool):
                (changed,) = [u for u in configured([f"{uc.name}.{f.name}={value + 1}"], None) if u.name == uc.name]
                assert getattr(changed, f.name) == value + 1
        with pytest.raises(ValueError, match="no setting"):
            configured([f"{uc.name}.no_such_field=1"], None)


def test_a_learn_step_fills_its_prefixed_row_fields_then_its_extra():
    learned = Learned(10, "auc", 0.5, 0.6, "v0002", extra={"x_published": "v0009", "more": 1})
    assert learned_fields("x", learned) == {
        "x_training_rows": 10,
        "x_offline_metric": 0.5,
        "x_candidate_metric": 0.6,
        "x_published": "v0009",
        "more": 1,
    }


def test_one_flywheel_turn_of_every_use_case(tmp_path: Path, redis_server) -> None:
    use_cases: list[OfflineUseCase] = configured(
        [f"{uc.name}.days_per_turn=0.3" for uc in OFFLINE_USE_CASES if hasattr(uc, "days_per_turn")], None
    )
    rows = run_fresh(tmp_path / "fly", redis_server.url, "tiny", turns=1, decisions=40, threads=1,
                     use_cases=use_cases)
    assert len(rows) == 1
    summary = json.loads(summary_json(rows, use_cases))["turns"][0]
    assert set(summary) == {"turn"} | {k for uc in use_cases for k, _ in uc.columns}
    for uc in use_cases:
        assert rows[0][f"{uc.name}_training_rows"] > 0, uc.name
    assert rows[0]["decisions"] == 40 and rows[0]["training_rows"] > 0
    assert rows[0]["model_version"] == "v0002"  # the weak start after the shared bootstrap's v0001
    assert rows[0]["fraud_model_version"] == "v0001"
