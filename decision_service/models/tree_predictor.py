"""Tree-ensemble prediction behind one interface: LightGBM, or the same model compiled.

``DS_SCORER``:
  lightgbm   ``Booster.predict`` (one thread).
  compiled   the model compiled to native code with lleaves (LLVM); identical trees, about
             5-8x faster on a request's 200 rows. Start-up fails if it cannot be used.
  auto       compiled when lleaves is installed, compiles and matches LightGBM; otherwise
             LightGBM, with one WARNING line saying why.

Compiling takes seconds to a minute, so the shared object is cached next to the version:
``<version dir>/.compiled/<model sha256[:16]>-lleaves<version>-<host cpu>.so`` (or under the
system temp dir when the registry is read-only), written atomically and under a file lock,
so sibling workers and restarts compile once. ``precompile`` fills the cache at publish time.

Check at load: compiled and LightGBM scores on a sample of rows built from the model's own
split thresholds (exact thresholds, values between them, NaN, unseen categories) must agree
within ``scorer_max_abs_diff``; otherwise the compiled model is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import lightgbm as lgb
import numpy as np

log = logging.getLogger(__name__)

SCORERS = ("auto", "lightgbm", "compiled")
CACHE_DIR = ".compiled"
SAMPLE_ROWS = 512


class TreePredictor(Protocol):
    kind: str

    def predict(self, x: np.ndarray) -> np.ndarray:
        """float32/64 [n, n_features] in the model's feature order -> float64 [n]."""
        ...


class CompiledTreesUnavailable(RuntimeError):
    pass


class LleavesMissing(CompiledTreesUnavailable):
    """The optional ``compiled`` extra is not installed."""


class LightGbmPredictor:
    kind = "lightgbm"

    def __init__(self, model: lgb.Booster, num_threads: int = 1) -> None:
        self._model = model
        self._num_threads = num_threads

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._model.predict(x, num_threads=self._num_threads))


class CompiledPredictor:
    kind = "compiled"

    def __init__(self, compiled: Any, cache_file: Path) -> None:
        self._compiled = compiled
        self.cache_file = cache_file

    def predict(self, x: np.ndarray) -> np.ndarray:
        # lleaves reads C-contiguous float64 (it would convert anyway)
        return self._compiled.predict(np.ascontiguousarray(x, dtype=np.float64), n_jobs=1)


def make_predictor(
    model: lgb.Booster, model_file: Path, mode: str, max_abs_diff: float, where: str = ""
) -> TreePredictor:
    """The predictor ``mode`` asks for (see the module docstring).

    On failure: with ``compiled``, CompiledTreesUnavailable naming the reason; with ``auto``,
    the LightGBM predictor and one WARNING line.
    """
    if mode not in SCORERS:
        raise ValueError(f"scorer must be one of {SCORERS}, got {mode!r}")
    fallback = LightGbmPredictor(model)
    if mode == "lightgbm":
        return fallback
    try:
        compiled = compile_model(model_file)
        diff = max_abs_difference(model, compiled)
        if not diff <= max_abs_diff:
            raise CompiledTreesUnavailable(
                f"compiled scores differ from LightGBM by {diff:.3g} > {max_abs_diff:g} on a sample"
            )
    except Exception as exc:  # noqa: BLE001 - any failure here means "serve with LightGBM"
        if mode == "compiled":
            if isinstance(exc, CompiledTreesUnavailable):
                raise
            raise CompiledTreesUnavailable(f"{where}: cannot compile the model: {exc!r}") from exc
        # Not installing the optional extra is a choice, not a fault: say so quietly.
        level = logging.INFO if isinstance(exc, LleavesMissing) else logging.WARNING
        log.log(level, "%s: compiled trees unavailable, scoring with LightGBM: %s", where or model_file, exc)
        return fallback
    log.info("%s: scoring with compiled trees (max |diff| vs LightGBM %.2g)", where or model_file, diff)
    return compiled


def compile_model(model_file: Path) -> CompiledPredictor:
    """Loads the cached shared object or compiles it (once per model, CPU and lleaves).

    On failure: CompiledTreesUnavailable (lleaves/llvmlite missing) or whatever lleaves raises.
    """
    try:
        import lleaves
        import llvmlite.binding as llvm
    except ImportError as exc:
        raise LleavesMissing(f"lleaves is not installed: pip install -e '.[compiled]' ({exc})") from exc
    model_file = Path(model_file)
    digest = hashlib.sha256(model_file.read_bytes()).hexdigest()[:16]
    cpu = llvm.get_host_cpu_name() or "generic"
    name = f"{digest}-lleaves{metadata.version('lleaves')}-{cpu}.so"
    cache = _cache_dir(model_file.parent, digest) / name
    with _locked(cache.with_suffix(".lock")):
        compiled = lleaves.Model(model_file=str(model_file))
        if cache.is_file():
            compiled.compile(cache=str(cache))
        else:
            tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
            try:
                compiled.compile(cache=str(tmp))  # writes tmp, then loads it
                os.replace(tmp, cache)
            except BaseException:  # disk full, interrupted: leave no partial temp behind
                tmp.unlink(missing_ok=True)
                raise
    return CompiledPredictor(compiled, cache)


def precompile(model_file: Path) -> Path:
    """Fills the compile cache for ``model_file`` (publish time); returns the cached file."""
    return compile_model(model_file).cache_file


def max_abs_difference(model: lgb.Booster, compiled: TreePredictor, rows: int = SAMPLE_ROWS) -> float:
    x = sample_rows(model, rows)
    expected = np.asarray(model.predict(x, num_threads=1), np.float64)
    got = np.asarray(compiled.predict(x), np.float64)
    if got.shape != expected.shape:
        return float("inf")
    return float(np.max(np.abs(got - expected), initial=0.0))


def sample_rows(model: lgb.Booster, n: int, seed: int = 0) -> np.ndarray:
    """float32 rows that exercise the model's splits: exact thresholds, values around and
    between them, NaN (missing) and, for categorical features, seen and unseen categories."""
    rng = np.random.default_rng(seed)
    n_features = model.num_feature()
    numeric: list[list[float]] = [[] for _ in range(n_features)]
    categories: list[set[int]] = [set() for _ in range(n_features)]
    for tree in model.dump_model()["tree_info"]:
        stack = [tree["tree_structure"]]
        while stack:
            node = stack.pop()
            if "split_feature" not in node:
                continue
            f = node["split_feature"]
            if node.get("decision_type") == "==":
                categories[f].update(int(c) for c in str(node["threshold"]).split("||"))
            else:
                numeric[f].append(float(node["threshold"]))
            stack += [node["left_child"], node["right_child"]]
    x = np.empty((n, n_features), np.float32)
    for f in range(n_features):
        if categories[f]:
            seen = np.asarray(sorted(categories[f]), np.float32)
            col = rng.choice(np.append(seen, [seen.max() + 1, 0.0]), n)
        elif numeric[f]:
            t = np.asarray(numeric[f], np.float64)
            lo, hi = t.min(), t.max()
            span = max(hi - lo, 1.0)
            col = np.where(
                rng.random(n) < 0.4,
                rng.choice(t, n),  # on a threshold: the <= boundary
                rng.uniform(lo - 0.1 * span, hi + 0.1 * span, n),
            )
        else:
            col = rng.normal(size=n)
        col = np.asarray(col, np.float32)
        col[rng.random(n) < 0.05] = np.nan
        x[:, f] = col
    return x


def _cache_dir(version_dir: Path, digest: str) -> Path:
    for candidate in (version_dir / CACHE_DIR, Path(tempfile.gettempdir()) / "decision-service-compiled"):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            probe = candidate / f".probe-{os.getpid()}"
            probe.touch()
            probe.unlink()
            return candidate
        except OSError:
            continue
    raise CompiledTreesUnavailable(f"no writable cache directory for compiled model {digest}")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
