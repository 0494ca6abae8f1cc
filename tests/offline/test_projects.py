"""Projects: project.yaml, the active project's definitions, `decision-service init / validate /
bootstrap / serve` on data that is not the synthetic world, and MovieLens in its own format.

Every project other than the suite's own (examples/synthetic) runs in a subprocess: a process
works on one project (its feature registry is bound at import).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from decision_service import project as projects
from decision_service.devtools.local_redis import LocalRedis

REPO = Path(__file__).resolve().parents[2]


def _cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != projects.ENV}
    return subprocess.run(
        [sys.executable, "-m", "offline.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env={**clean, **(env or {})},
    )


# --- project.yaml ---------------------------------------------------------------------------


def _write(root: Path, yaml_text: str, features: str | None = "REGISTRY = None\n") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "project.yaml").write_text(yaml_text)
    if features is not None:
        (root / "features.py").write_text(features)
    return root


def test_a_project_yaml_is_read_with_defaults_relative_to_its_folder(tmp_path: Path) -> None:
    root = _write(tmp_path / "shop", "name: shop\nuse_cases: [recommendation]\ndata: files\n")
    p = projects.load(root)
    assert (p.name, p.use_cases, p.engine) == ("shop", ("recommendation",), "duckdb")
    assert p.data_dir == root.resolve() / "files"
    assert p.registry_dir == root.resolve() / ".ds" / "registry"
    assert p.log_root == str(root.resolve() / ".ds" / "logs")
    assert p.online_store is None
    s3 = projects.load(_write(tmp_path / "s3", "name: s3\nuse_cases: fraud\nlogs: s3://bucket/logs\n"))
    assert s3.log_root == "s3://bucket/logs" and s3.use_cases == ("fraud",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: shop\nuse_case: [fraud]\n", "unknown key 'use_case' (did you mean 'use_cases'?)"),
        ("use_cases: [fraud]\n", "name must be"),
        ("name: my shop\nuse_cases: [fraud]\n", "name must be"),
        ("name: shop\nuse_cases: [ranking]\n", "unknown use case 'ranking'"),
        ("name: shop\nuse_cases: []\n", "use_cases must be"),
        ("name: shop\nuse_cases: [fraud]\nengine: spark\n", "engine must be one of duckdb"),
        (
            "name: shop\nuse_cases: [fraud]\nsettings: {recommendation: {}}\n",
            "settings must map a served use case",
        ),
        (
            "name: shop\nuse_cases: [recommendation]\nsettings: {recommendation: {test_from_shares: 0.8}}\n",
            "settings.recommendation: unknown key 'test_from_shares' (did you mean 'test_from_share'?)",
        ),
        ("- just\n- a list\n", "expected a mapping"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_kind_bad_project_yaml_is_an_error_naming_the_file_and_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    root = _write(tmp_path / "p", text)
    with pytest.raises(projects.ProjectError) as err:
        projects.load(root)
    assert str(root / "project.yaml") in str(err.value)
    assert expected in str(err.value)


def test_kind_missing_project_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(projects.ProjectError, match="project.yaml: missing"):
        projects.load(tmp_path)
    with pytest.raises(projects.ProjectError, match="does not exist"):
        projects.load(tmp_path / "nowhere")
    root = _write(tmp_path / "nofeatures", "name: p\nuse_cases: [fraud]\n", features=None)
    with pytest.raises(projects.ProjectError, match=r"features.py: missing"):
        projects.load_features(projects.load(root))
    broken = _write(tmp_path / "broken", "name: p\nuse_cases: [fraud]\n", features="1 / 0\n")
    with pytest.raises(projects.ProjectError, match=r"features.py: ZeroDivisionError"):
        projects.load_features(projects.load(broken))


def test_the_active_project_comes_from_the_environment_or_the_working_folder(tmp_path: Path) -> None:
    root = _write(tmp_path / "here", "name: here\nuse_cases: [fraud]\n")
    assert projects.locate({projects.ENV: str(root)}) == root.resolve()
    assert projects.locate({}, cwd=root) == root.resolve()
    with pytest.raises(projects.ProjectError, match="no project: pass --project DIR"):
        projects.locate({}, cwd=tmp_path)


def test_this_process_keeps_the_project_its_registry_was_bound_to(tmp_path: Path) -> None:
    import decision_service.features.definitions as definitions

    assert definitions.PROJECT.name == "synthetic"
    other = _write(tmp_path / "other", "name: other\nuse_cases: [fraud]\n")
    with pytest.raises(projects.ProjectError, match="already works on project"):
        projects.use(other)


def test_kind_a_name_the_project_does_not_declare_is_an_import_error_naming_it(tmp_path: Path) -> None:
    """A recommendation-only project imports the server and the offline jobs; asking for a
    fraud group names the project and what it serves (not an AttributeError deep inside)."""
    root = _scaffolded(tmp_path)
    code = (
        "import decision_service.server.app, offline.use_cases\n"
        "from decision_service.use_cases import USE_CASES\n"
        "print([u.name for u in USE_CASES])\n"
        "from decision_service.features.definitions import FRAUD_USER\n"
    )
    clean = {k: v for k, v in os.environ.items() if k != projects.ENV}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={**clean, projects.ENV: str(root)},
    )
    assert "['recommendation']" in out.stdout, out.stderr
    assert "ImportError: project 'shop' " in out.stderr
    assert "does not declare FRAUD_USER; it serves recommendation" in out.stderr


# --- decision-service init / validate / bootstrap / serve ----------------------------------


def _scaffolded(tmp_path: Path) -> Path:
    root = tmp_path / "shop"
    out = _cli("init", str(root))
    assert out.returncode == 0, out.stderr
    return root


def test_init_validate_bootstrap_serve_a_new_project_with_unicode_categories(
    tmp_path: Path, redis_server: LocalRedis
) -> None:
    """The README's newcomer path: init -> validate -> bootstrap (materialized) -> serve ->
    GetDecision, with free-form category names learned from the data (`Bücher`, `jeux vidéo`)."""
    root = _scaffolded(tmp_path)
    assert _cli("init", str(root)).returncode == 2  # never over an existing project
    out = _cli("validate", "--project", str(root))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok: shop" in out.stdout
    assert "warning: items.csv: column 'category': 3 NULL values" in out.stdout, out.stdout
    redis_url = redis_server.url.rsplit("/", 1)[0] + "/7"
    out = _cli("bootstrap", "--project", str(root), "--redis-url", redis_url)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "published recommendation/v0001" in out.stdout
    vocabulary = json.loads((root / ".ds" / "vocabularies" / "category.json").read_text())["values"]
    assert "Bücher" in vocabulary and "jeux vidéo" in vocabulary
    manifest = json.loads(
        next(
            (root / ".ds" / "registry" / "recommendation" / "versions").glob("v0001/manifest.json")
        ).read_text()
    )
    assert manifest["vocabularies"]["category"] == vocabulary
    assert manifest["project"] == "shop"
    catalog = pq.read_table(
        root / ".ds" / "registry" / "recommendation" / "versions" / "v0001" / "items.parquet"
    )
    assert (catalog.column("category").to_numpy() == -1).sum() == 3  # uncategorised items are served

    from decision_service._generated.decision.v1 import decision_service_pb2 as pb
    from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
    from decision_service.devtools.server_process import ServerProcess

    clean = {k: v for k, v in os.environ.items() if k != projects.ENV}
    with (
        ServerProcess(root / ".ds" / "registry", redis_url, env={**clean, projects.ENV: str(root)}) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        stub = pb_grpc.DecisionServiceStub(channel)
        ask = pb.RecommendationRequest(user_id="user-0007", num_items=5, allowed_categories=["bücher"])
        answer = stub.GetDecision(pb.GetDecisionRequest(recommendation=ask), timeout=5)
        items = answer.recommendation.items
        assert len(items) == 5 and {i.category for i in items} == {"Bücher"}
        assert not answer.degraded, answer.degraded
        with pytest.raises(grpc.RpcError) as err:
            bad = pb.RecommendationRequest(user_id="user-0007", num_items=5, allowed_categories=["books"])
            stub.GetDecision(pb.GetDecisionRequest(recommendation=bad), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "allowed_categories[0]: unknown category 'books'; known: " in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            fraud = pb.GetDecisionRequest(fraud_check=pb.FraudCheckRequest(transaction_id="t1"))
            stub.GetDecision(fraud, timeout=5)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED, err.value.details()


def test_kind_a_run_that_fails_validation_writes_nothing(tmp_path: Path) -> None:
    """NULL ids in the events: bootstrap names file, column and row, and neither the registry
    nor the serving state gets anything (atomic publish stays atomic)."""
    root = _scaffolded(tmp_path)
    events = root / "data" / "events.csv"
    lines = events.read_text().splitlines()
    lines[5] = "," + lines[5].split(",", 1)[1]  # the 5th event loses its user id
    events.write_text("\n".join(lines) + "\n")
    out = _cli("bootstrap", "--project", str(root))
    assert out.returncode == 1
    assert "events.csv: column 'user_id': 1 NULL" in out.stderr, out.stderr
    assert "e.g. row 5" in out.stderr
    assert "nothing was written" in out.stderr
    assert not (root / ".ds" / "registry").exists()
    assert not (root / ".ds" / "serving").exists()
    assert not (root / ".ds" / "vocabularies").exists()  # learned, but not stored from bad sources
    out = _cli("validate", "--project", str(root))
    assert out.returncode == 1 and not (root / ".ds").exists()  # validate never writes


# --- MovieLens, in its own file format ------------------------------------------------------


def _movielens_like(data: Path, seed: int = 3) -> None:
    """A small slice in the exact recbole atomic-file format of ml-100k (typed tab-separated
    headers, epoch-second timestamps, space-separated genres): 300 users, 200 films."""
    rng = np.random.default_rng(seed)
    genres = ["Action", "Comedy", "Drama", "Children's", "Sci-Fi", "Film-Noir"]
    n_users, n_items, n = 300, 200, 12_000
    item_genres = [
        " ".join(sorted(rng.choice(genres, rng.integers(1, 3), replace=False))) for _ in range(n_items)
    ]
    taste = rng.integers(0, len(genres), n_users)
    quality = rng.pareto(1.2, n_items) + 0.2
    user = rng.integers(0, n_users, n)
    item = rng.choice(n_items, n, p=quality / quality.sum())
    by_taste = rng.random(n) < 0.6  # most films are chosen by taste, the rest by popularity
    for g, name in enumerate(genres):
        pool = np.flatnonzero([name in item_genres[i] for i in range(n_items)])
        pick = by_taste & (taste[user] == g)
        item[pick] = rng.choice(pool, pick.sum(), p=quality[pool] / quality[pool].sum())
    likes = np.array([genres[taste[u]] in item_genres[i] for u, i in zip(user, item, strict=True)])
    rating = np.clip(np.where(likes, 4, 2) + rng.integers(-1, 2, n), 1, 5)
    ts = 874_724_710 + np.sort(rng.integers(0, 215 * 86_400, n))
    data.mkdir(parents=True)

    def write(name: str, columns: dict[str, list[object]]) -> None:
        table = pa.table({k: pa.array([str(v) for v in vs]) for k, vs in columns.items()})
        options = pacsv.WriteOptions(delimiter="\t", quoting_style="none")
        pacsv.write_csv(table, data / name, write_options=options)

    write(
        "ml-100k.inter",
        {
            "user_id:token": (user + 1).tolist(),
            "item_id:token": (item + 1).tolist(),
            "rating:float": rating.tolist(),
            "timestamp:float": ts.tolist(),
        },
    )
    write(
        "ml-100k.item",
        {
            "item_id:token": list(range(1, n_items + 1)),
            "movie_title:token_seq": [f"Film {i}" for i in range(n_items)],
            "release_year:token": rng.integers(1950, 1998, n_items).tolist(),
            "class:token_seq": item_genres,
        },
    )
    write(
        "ml-100k.user",
        {
            "user_id:token": list(range(1, n_users + 1)),
            "age:token": rng.integers(15, 70, n_users).tolist(),
            "gender:token": rng.choice(["M", "F"], n_users).tolist(),
            "occupation:token": rng.choice(["student", "writer", "engineer"], n_users).tolist(),
            "zip_code:token": ["12345"] * n_users,
        },
    )


def test_movielens_project_on_a_slice_in_its_own_format(tmp_path: Path, redis_server: LocalRedis) -> None:
    """examples/movielens as shipped (its project.yaml and features.py, unchanged) on a small
    generated slice in ml-100k's format: validates, bootstraps (its split by event share), the
    ranker it publishes orders the retrieved candidates better than popularity does, and the
    served decisions take the project's own outcome types (a `like`) into a training set."""
    root = tmp_path / "movielens"
    root.mkdir()
    for name in ("project.yaml", "features.py"):
        shutil.copy(REPO / "examples" / "movielens" / name, root / name)
    _movielens_like(root / "data" / "ml-100k")
    out = _cli("validate", "--project", str(root))
    assert out.returncode == 0, out.stdout + out.stderr
    redis_url = redis_server.url.rsplit("/", 1)[0] + "/8"
    out = _cli("bootstrap", "--project", str(root), "--redis-url", redis_url)
    assert out.returncode == 0, out.stdout + out.stderr
    vocabulary = json.loads((root / ".ds" / "vocabularies" / "genre.json").read_text())["values"]
    assert set(vocabulary) <= {"Action", "Comedy", "Drama", "Children's", "Sci-Fi", "Film-Noir"}
    manifest = json.loads(
        (root / ".ds" / "registry" / "recommendation" / "versions" / "v0001" / "manifest.json").read_text()
    )
    m = manifest["metrics"]
    assert manifest["vocabularies"]["category"] == vocabulary
    # what the server ranks: the retrieved candidates of the held-out users, by each order
    assert m["retrieved_only_model_ndcg@10"] > m["retrieved_only_popularity_ndcg@10"], m

    from decision_service._generated.decision.v1 import decision_service_pb2 as pb
    from decision_service._generated.decision.v1 import decision_service_pb2_grpc as pb_grpc
    from decision_service.devtools.server_process import ServerProcess

    clean = {k: v for k, v in os.environ.items() if k != projects.ENV}
    with (
        ServerProcess(root / ".ds" / "registry", redis_url, env={**clean, projects.ENV: str(root)}) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        stub = pb_grpc.DecisionServiceStub(channel)
        ask = pb.GetDecisionRequest(recommendation=pb.RecommendationRequest(user_id="7", num_items=5))
        answer = stub.GetDecision(ask, timeout=5)
        liked = answer.recommendation.items[0].item_id
        like = pb.Outcome(decision_id=answer.decision_id, type="like", item_id=liked)
        assert stub.RecordOutcome(pb.RecordOutcomeRequest(outcomes=[like]), timeout=5).acks[0].decision_known
        with pytest.raises(grpc.RpcError) as err:  # not one of this project's outcome types
            buy = pb.Outcome(decision_id=answer.decision_id, type="purchase", item_id=liked)
            stub.RecordOutcome(pb.RecordOutcomeRequest(outcomes=[buy]), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "like" in err.value.details(), err.value.details()
        server.terminate(timeout_s=30)  # flushes the logs
    import time

    later = int(time.time() * 1000) + 8 * 86_400_000  # every label window has closed
    out = _cli("training-set", "--project", str(root), "--as-of-ms", str(later))
    assert out.returncode == 0, out.stdout + out.stderr
    rows = pq.read_table(root / ".ds" / "training" / "recommendation.parquet")
    assert {"click", "like"} <= set(rows.column_names) and "purchase" not in rows.column_names
    assert rows.num_rows == 5 and rows.column("like").to_pylist().count(True) == 1


@pytest.mark.slow
def test_movielens_100k_in_full_the_ranker_beats_both_baselines(tmp_path: Path) -> None:
    """`make example-movielens` in a test: fetch the real ml-100k (PyPI), validate, bootstrap,
    serve, gRPC calls; the demo exits 0 only when the ranker beats popularity and
    embedding-only retrieval on NDCG@10 of the held-out likes."""
    fetch = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "movielens" / "fetch.py"),
            "--into",
            str(tmp_path / "data" / "ml-100k"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if fetch.returncode != 0:
        pytest.skip(f"MovieLens could not be fetched from PyPI (recbole 1.2.1): {fetch.stderr[-300:]}")
    root = tmp_path
    for name in ("project.yaml", "features.py"):
        shutil.copy(REPO / "examples" / "movielens" / name, root / name)
    clean = {k: v for k, v in os.environ.items() if k not in (projects.ENV, "REDIS_URL")}
    out = subprocess.run(
        [sys.executable, "-m", "offline.runs.project_demo", "--project", str(root)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
        env=clean,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "ranker vs popularity" in out.stdout and "ranker vs embedding" in out.stdout


def test_kind_vocabulary_without_its_source_says_what_to_copy(tmp_path: Path) -> None:
    """A serving machine with the project folder but not its data: the stored vocabulary is
    read; when it is missing too, the error names the file to copy (not a bare 'no csv')."""
    from decision_service.features.declarative import Table
    from offline.features.compiler import SourceError
    from offline.features.vocabulary import learned, persist_learned, vocabulary_path

    root = _write(tmp_path / "p", "name: p\nuse_cases: [recommendation]\n")
    proj = projects.load(root)
    items = Table("items", "items.csv", key="item_id", format="csv")
    with pytest.raises(SourceError, match=r"vocabulary 'category' is not stored .* Copy .*vocabularies"):
        learned("category", items, "category", proj)
    (root / "items.csv").write_text("item_id,category\na,Bücher\nb,toys\nc,Bücher\nd,\n")
    assert learned("category", items, "category", proj) == ("Bücher", "toys")  # by frequency
    assert not vocabulary_path("category", proj).exists()  # learned: stored only by bootstrap
    assert persist_learned() == [vocabulary_path("category", proj)]
    (root / "items.csv").unlink()
    assert vocabulary_path("category", proj).is_file()
    assert learned("category", items, "category", proj) == ("Bücher", "toys")  # stored, source gone
