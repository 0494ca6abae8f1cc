"""A project: the folder a team keeps its data contracts and feature definitions in.

Like a Feast feature repo, a project is a directory with

  project.yaml    name, the use cases it serves, where its data, registry and logs live,
                  the online store URL and the offline engine (every key documented in
                  ``decision-service init``'s scaffold)
  features.py     its sources, entities and feature groups (decision_service.features.
                  declarative + registry): what the service stores, serves, logs and trains on

Every process (the server, each offline job) works on ONE project: ``--project DIR`` on the
command line, else ``$DS_PROJECT``, else the current directory when it holds a project.yaml.
``decision_service.features.definitions`` exposes the active project's ``features.py``; nothing
about a particular dataset is compiled into the package.

Errors: ProjectError naming the file and the key (or the missing file) and what was expected.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

ENV = "DS_PROJECT"
PROJECT_FILE = "project.yaml"
FEATURES_FILE = "features.py"
KNOWN_USE_CASES = ("recommendation", "fraud", "conversion")
ENGINES = ("duckdb",)

_KEYS: dict[str, str] = {
    "name": "the project's name (letters, digits, - and _)",
    "description": "one line on what it serves",
    "use_cases": f"the use cases it serves: a list of {', '.join(KNOWN_USE_CASES)}",
    "data": "the folder its sources' relative paths start from (default: the project folder)",
    "registry": "model registry root (default: <project>/.ds/registry; or s3://bucket/prefix)",
    "logs": "decision log root, a folder or s3:// URL (default: <project>/.ds/logs)",
    "online_store": "online store URL, e.g. redis://127.0.0.1:6379/0 (default: none; serve needs one)",
    "engine": f"offline engine: {', '.join(ENGINES)}",
    "settings": "use-case settings (a mapping per use case, see the scaffold)",
}


SETTINGS: dict[str, dict[str, str]] = {
    "recommendation": {
        "train_from_share": "the split's start: the point by which this share of the events happened",
        "test_from_share": "the split's test start, as a share of the events",
        "train_from_day": "the split's start in days after the first event's day",
        "test_from_day": "the split's test start in days",
        "eval_at": "k of NDCG@k / recall@k",
        "max_train_users": "users sampled for training",
        "max_eval_users": "users sampled for evaluation",
        "target": "the labelled outcome retrain learns",
        "train_relevance": "all (graded events) or positive (the goal events only)",
        "extra_train_windows": "earlier training windows of the same length",
        "train_candidates": "augmented (retrieval + missed positives + negatives) or served",
        "k_random": "sampled negatives per user",
        "seed": "the training seed",
        "num_leaves": "LightGBM num_leaves",
        "min_data_in_leaf": "LightGBM min_data_in_leaf",
        "learning_rate": "LightGBM learning_rate",
        "feature_fraction": "LightGBM feature_fraction",
        "num_boost_round": "LightGBM boosting rounds",
        "early_stopping_rounds": "LightGBM early stopping patience",
    },
    "fraud": {
        "train_start_day": "days of history before the first training payment",
        "eval_days": "the last days, held out for evaluation",
        "maturity_days": "how long a fraud label takes to arrive",
        "k_neighbours": "labelled neighbours per payment",
    },
    "conversion": {},
}
"""Every ``settings.<use case>.<key>`` a project may set (offline/cli.py reads them)."""


class ProjectError(ValueError):
    """A project that cannot be used: names the file, the key and what was expected."""


@dataclass(frozen=True)
class Project:
    """A loaded project.yaml. Paths are absolute."""

    directory: Path
    name: str
    use_cases: tuple[str, ...]
    data_dir: Path
    registry_dir: Path | str  # a directory, or an object-store URI (s3://bucket/prefix)
    log_root: str
    online_store: str | None
    engine: str = "duckdb"
    description: str = ""
    settings: Mapping[str, Mapping[str, object]] = field(default_factory=dict)

    @property
    def features_file(self) -> Path:
        return self.directory / FEATURES_FILE

    @property
    def state_dir(self) -> Path:
        """Where runs keep what they derive (vocabularies, serving state): <project>/.ds."""
        return self.directory / ".ds"

    def setting(self, use_case: str, key: str, default: object) -> object:
        """``settings.<use_case>.<key>`` of project.yaml, else ``default``."""
        return dict(self.settings.get(use_case, {})).get(key, default)

    def serves(self, use_case: str) -> bool:
        return use_case in self.use_cases


def load(directory: str | Path) -> Project:
    """Reads ``directory``/project.yaml. On failure: ProjectError naming the file and key."""
    import yaml

    root = Path(directory).expanduser().resolve()
    path = root / PROJECT_FILE
    if not root.is_dir():
        raise ProjectError(f"{root}: not a project folder (it does not exist)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ProjectError(
            f"{path}: missing (a project folder holds project.yaml and features.py; "
            "`decision-service init DIR` writes both)"
        ) from None
    except yaml.YAMLError as exc:
        raise ProjectError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ProjectError(f"{path}: expected a mapping of key: value at the top level")
    for key in raw:
        if key not in _KEYS:
            close = difflib.get_close_matches(str(key), _KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(_KEYS)
            raise ProjectError(f"{path}: unknown key {key!r}{hint}; known keys: {known}")

    def text(key: str, default: str | None) -> str | None:
        if key not in raw:
            return default
        value = raw[key]
        if value is None:
            return default
        if not isinstance(value, str | int | float) or isinstance(value, bool) or str(value).strip() == "":
            raise ProjectError(f"{path}: {key} must be {_KEYS[key]}, got {value!r}")
        return str(value)

    name = text("name", None)
    if name is None or not all(c.isalnum() or c in "-_" for c in name):
        raise ProjectError(f"{path}: name must be {_KEYS['name']}, got {raw.get('name')!r}")
    use_cases = raw.get("use_cases")
    if isinstance(use_cases, str):
        use_cases = [use_cases]
    if not isinstance(use_cases, list) or not use_cases:
        raise ProjectError(f"{path}: use_cases must be {_KEYS['use_cases']}, got {use_cases!r}")
    for uc in use_cases:
        if uc not in KNOWN_USE_CASES:
            known = ", ".join(KNOWN_USE_CASES)
            raise ProjectError(f"{path}: use_cases: unknown use case {uc!r}; known: {known}")
    engine = text("engine", "duckdb")
    if engine not in ENGINES:
        raise ProjectError(f"{path}: engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    settings = raw.get("settings") or {}
    if not isinstance(settings, dict) or not all(
        k in use_cases and isinstance(v, dict) for k, v in settings.items()
    ):
        raise ProjectError(f"{path}: settings must map a served use case to its settings, got {settings!r}")
    for uc, values in settings.items():
        for key in values:
            if key not in SETTINGS[uc]:
                close = difflib.get_close_matches(str(key), SETTINGS[uc], n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                known = ", ".join(SETTINGS[uc]) or "none"
                raise ProjectError(f"{path}: settings.{uc}: unknown key {key!r}{hint}; known keys: {known}")

    def local(key: str, default: str) -> Path:
        value = text(key, default)
        assert value is not None
        p = Path(value).expanduser()
        return p if p.is_absolute() else root / p

    logs = text("logs", ".ds/logs")
    assert logs is not None
    log_root = logs if "://" in logs else str(local("logs", ".ds/logs"))
    registry = text("registry", ".ds/registry") or ""
    return Project(
        directory=root,
        name=name,
        use_cases=tuple(dict.fromkeys(use_cases)),
        data_dir=local("data", "."),
        registry_dir=registry if "://" in registry else local("registry", ".ds/registry"),
        log_root=log_root,
        online_store=text("online_store", None),
        engine=engine,
        description=text("description", "") or "",
        settings=settings,
    )


def locate(env: Mapping[str, str] | None = None, cwd: str | Path | None = None) -> Path:
    """The active project's folder: $DS_PROJECT, else ``cwd`` when it holds project.yaml.

    On failure: ProjectError saying how to name one."""
    env = os.environ if env is None else env
    if env.get(ENV):
        return Path(env[ENV]).expanduser().resolve()
    here = Path(cwd or os.getcwd())
    if (here / PROJECT_FILE).is_file():
        return here.resolve()
    raise ProjectError(
        f"no project: pass --project DIR, set {ENV}=DIR, or run in a folder with {PROJECT_FILE} "
        "(`decision-service init DIR` scaffolds one; examples/synthetic and examples/movielens are two)"
    )


def use(directory: str | Path) -> Project:
    """Makes ``directory`` the active project of this process (and of its children, by
    $DS_PROJECT). Must run before ``decision_service.features.definitions`` is first imported;
    later, naming another project is a ProjectError (the registry is bound at import)."""
    project = load(directory)
    loaded = sys.modules.get("decision_service.features.definitions")
    if loaded is not None and Path(loaded.PROJECT.directory) != project.directory:
        raise ProjectError(
            f"this process already works on project {loaded.PROJECT.directory}; "
            f"start another process for {project.directory}"
        )
    os.environ[ENV] = str(project.directory)
    return project


_ACTIVE: Project | None = None


def active() -> Project:
    """The project this process works on (located once, then cached)."""
    global _ACTIVE
    if _ACTIVE is None or str(_ACTIVE.directory) != os.environ.get(ENV, str(_ACTIVE.directory)):
        _ACTIVE = load(locate())
    return _ACTIVE


def load_features(project: Project) -> ModuleType:
    """Executes the project's features.py as module ``ds_project_features``.

    On failure: ProjectError naming the file (and the error it raised)."""
    path = project.features_file
    if not path.is_file():
        raise ProjectError(f"{path}: missing (it declares the project's sources and feature groups)")
    name = "ds_project_features"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise ProjectError(f"{path}: {type(exc).__name__}: {exc}") from exc
    return module
