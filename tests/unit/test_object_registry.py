"""The model registry on an object store (moto's S3 server, started by the tests): publish,
conditional CURRENT writes (two publishers race, exactly one wins), version names that never
collide, incomplete versions ignored, checksums verified on download, the replica cache."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from decision_service.models.published import PublishedModels
from decision_service.models.registry import CurrentMovedError, ModelRegistry, ModelVersion, RegistryError
from decision_service.models.reload import ModelReloader
from decision_service.models.version_store import LocalVersionStore, ObjectVersionStore
from decision_service.storage.location import StorageError
from decision_service.storage.objects import S3Objects


def stage(registry: ModelRegistry, payload: bytes, use_case: str = "rec") -> Path:
    staging = registry.staging_dir(use_case)
    (staging / "model.txt").write_bytes(payload)
    (staging / "index.bin").write_bytes(payload * 3)
    return staging


def publish(registry: ModelRegistry, payload: bytes, **kwargs) -> str:
    return registry.publish("rec", stage(registry, payload), {"metrics": {"auc": 0.7}}, **kwargs).name


def keys(s3_server, bucket: str) -> list[str]:
    listed = s3_server.client().list_objects_v2(Bucket=bucket.removeprefix("s3://"))
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_publish_writes_the_layout_and_moves_current_on_s3(s3_bucket, s3_server, tmp_path):
    registry = ModelRegistry(f"{s3_bucket}/models", cache_dir=tmp_path / "pub-cache")
    assert not registry.has_current("rec")
    first = publish(registry, b"one")
    second = publish(registry, b"two")
    assert (first, second) == ("v0001", "v0002")
    assert registry.versions("rec") == ["v0001", "v0002"]
    assert keys(s3_server, s3_bucket) == [
        "models/rec/CURRENT",
        *(
            f"models/rec/versions/{v}/{f}"
            for v in ("v0001", "v0002")
            for f in (".claim", "index.bin", "manifest.json", "model.txt")
        ),
    ]
    # another machine: a fresh registry object and an empty cache
    replica = ModelRegistry(f"{s3_bucket}/models", cache_dir=tmp_path / "replica-cache")
    version = replica.current("rec")
    assert version.name == "v0002" and version.file("model.txt").read_bytes() == b"two"
    assert version.path.is_relative_to(tmp_path / "replica-cache")
    assert version.manifest["files"]["index.bin"]["bytes"] == 9 and version.manifest["metrics"] == {
        "auc": 0.7
    }
    version.verify()


def race(registry_a: ModelRegistry, registry_b: ModelRegistry) -> tuple[list[str], list[BaseException]]:
    """Both registries read CURRENT, then both publish at once (a barrier between): the
    window a non-conditional write would lose an update in."""
    for r in (registry_a, registry_b):
        r.current_name("rec")
    stagings = [stage(registry_a, b"A"), stage(registry_b, b"B")]
    barrier = threading.Barrier(2)
    won: list[str] = []
    lost: list[BaseException] = []

    def run(registry: ModelRegistry, staging: Path) -> None:
        barrier.wait()
        try:
            won.append(registry.publish("rec", staging, {}).name)
        except CurrentMovedError as exc:
            lost.append(exc)

    threads = [
        threading.Thread(target=run, args=(r, s))
        for r, s in zip((registry_a, registry_b), stagings, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return won, lost


@pytest.mark.parametrize("where", ["s3", "local"])
def test_two_racing_publishers_exactly_one_wins_and_the_loser_names_the_winner(where, s3_bucket, tmp_path):
    root = f"{s3_bucket}/models" if where == "s3" else tmp_path / "registry"
    seed = ModelRegistry(root, cache_dir=tmp_path / "c0")
    publish(seed, b"base")
    for _ in range(3):  # several rounds: the outcome must not depend on who is scheduled first
        a = ModelRegistry(root, cache_dir=tmp_path / "ca")
        b = ModelRegistry(root, cache_dir=tmp_path / "cb")
        won, lost = race(a, b)
        assert len(won) == 1 and len(lost) == 1, (won, lost)
        current = ModelRegistry(root, cache_dir=tmp_path / "c1").current_name("rec")
        assert current == won[0]
        assert lost[0].winner == won[0] and won[0] in str(lost[0])
        assert lost[0].version != won[0] and lost[0].version in seed.versions("rec")  # published, not current


def test_a_publisher_that_read_an_older_current_loses_even_without_overlap(s3_bucket, tmp_path):
    root = f"{s3_bucket}/models"
    publish(ModelRegistry(root, cache_dir=tmp_path / "c"), b"base")
    slow = ModelRegistry(root, cache_dir=tmp_path / "slow")
    assert slow.current_name("rec") == "v0001"  # its baseline: the publish gate compared against v0001
    fast = ModelRegistry(root, cache_dir=tmp_path / "fast")
    assert publish(fast, b"fast") == "v0002"
    with pytest.raises(CurrentMovedError, match="CURRENT moved to v0002") as info:
        publish(slow, b"slow")
    assert info.value.winner == "v0002" and info.value.version == "v0003"
    # it re-read CURRENT when it lost: a deliberate retry now succeeds
    slow.set_current("rec", "v0003")
    assert fast.current_name("rec") == "v0003"


def test_the_first_current_is_written_once(s3_bucket, tmp_path):
    root = f"{s3_bucket}/models"
    a, b = ModelRegistry(root, cache_dir=tmp_path / "a"), ModelRegistry(root, cache_dir=tmp_path / "b")
    assert not a.has_current("rec") and not b.has_current("rec")  # both saw no CURRENT
    publish(a, b"a")
    with pytest.raises(CurrentMovedError, match="moved to v0001"):
        publish(b, b"b")


@pytest.mark.parametrize("where", ["s3", "local"])
def test_concurrent_publishers_never_share_a_version_name(where, s3_bucket, tmp_path, monkeypatch):
    root = f"{s3_bucket}/models" if where == "s3" else tmp_path / "registry"
    store = ObjectVersionStore if where == "s3" else LocalVersionStore
    real_seal = store.seal
    barrier = threading.Barrier(4)

    def seal_after_everyone_listed(self, use_case, staging, manifest_for):
        barrier.wait()  # all four pick their name from the same listing
        return real_seal(self, use_case, staging, manifest_for)

    monkeypatch.setattr(store, "seal", seal_after_everyone_listed)
    names: list[str] = []
    registries = [ModelRegistry(root, cache_dir=tmp_path / f"c{i}") for i in range(4)]
    stagings = [stage(r, f"payload {i}".encode()) for i, r in enumerate(registries)]

    def run(r: ModelRegistry, s: Path) -> None:
        names.append(r.publish("rec", s, {}, make_current=False).name)

    threads = [threading.Thread(target=run, args=rs) for rs in zip(registries, stagings, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(names) == ["v0001", "v0002", "v0003", "v0004"]
    reader = ModelRegistry(root, cache_dir=tmp_path / "reader")
    payloads = {reader.get("rec", n).file("model.txt").read_bytes() for n in names}
    assert payloads == {f"payload {i}".encode() for i in range(4)}  # nobody overwrote another's files


def test_a_version_without_manifest_is_incomplete_and_ignored(s3_bucket, tmp_path, monkeypatch):
    root = f"{s3_bucket}/models"
    registry = ModelRegistry(root, cache_dir=tmp_path / "c")
    publish(registry, b"good")
    real_create = S3Objects.create

    def crash_before_the_manifest(self, key, data):
        if key.endswith("manifest.json"):
            raise OSError("publisher killed")
        return real_create(self, key, data)

    with monkeypatch.context() as patched, pytest.raises(OSError, match="killed"):
        patched.setattr(S3Objects, "create", crash_before_the_manifest)
        publish(registry, b"half")
    reader = ModelRegistry(root, cache_dir=tmp_path / "reader")
    assert reader.versions("rec") == ["v0001"]  # v0002's files are there, not its manifest
    assert reader.current_name("rec") == "v0001"
    with pytest.raises(RegistryError, match=r"v0002: no manifest .* \(incomplete"):
        reader.get("rec", "v0002")
    with pytest.raises(RegistryError, match="no published version 'v0002'"):
        reader.set_current("rec", "v0002")
    assert publish(reader, b"next") == "v0003"  # the half-written number is never reused


def test_a_corrupt_object_is_refused_and_nothing_is_cached(s3_bucket, s3_server, tmp_path):
    root = f"{s3_bucket}/models"
    publish(ModelRegistry(root, cache_dir=tmp_path / "pub"), b"model bytes")
    bucket = s3_bucket.removeprefix("s3://")
    s3_server.client().put_object(
        Bucket=bucket, Key="models/rec/versions/v0001/model.txt", Body=b"model bytez"
    )
    cache = tmp_path / "replica"
    with pytest.raises(RegistryError, match="model.txt fails its checksum"):
        ModelRegistry(root, cache_dir=cache).current("rec")
    s3_server.client().put_object(Bucket=bucket, Key="models/rec/versions/v0001/model.txt", Body=b"model")
    with pytest.raises(RegistryError, match="model.txt has the wrong size"):
        ModelRegistry(root, cache_dir=cache).current("rec")
    assert [p for p in cache.rglob("*") if p.is_file()] == []  # no partial or unverified copy


def test_an_interrupted_download_leaves_no_copy_and_the_next_load_succeeds(s3_bucket, tmp_path, monkeypatch):
    root = f"{s3_bucket}/models"
    publish(ModelRegistry(root, cache_dir=tmp_path / "pub"), b"payload")
    real_download = S3Objects.download

    def connection_reset_on_the_second_file(self, key, local):
        real_download(self, key, local)
        if key.endswith("model.txt"):
            local.write_bytes(local.read_bytes()[:3])  # a partial file reached the disk
            raise OSError("connection reset")

    cache = tmp_path / "replica"
    with monkeypatch.context() as patched, pytest.raises(OSError, match="connection reset"):
        patched.setattr(S3Objects, "download", connection_reset_on_the_second_file)
        ModelRegistry(root, cache_dir=cache).current("rec")
    assert [p for p in cache.rglob("*") if p.is_file()] == []
    assert ModelRegistry(root, cache_dir=cache).current("rec").file("model.txt").read_bytes() == b"payload"


def test_the_replica_cache_downloads_a_version_once(s3_bucket, tmp_path, monkeypatch):
    root = f"{s3_bucket}/models"
    publish(ModelRegistry(root, cache_dir=tmp_path / "pub"), b"payload")
    downloads: list[str] = []
    real_download = S3Objects.download

    def counted(self, key, local):
        downloads.append(key)
        real_download(self, key, local)

    monkeypatch.setattr(S3Objects, "download", counted)
    cache = tmp_path / "replica"
    first = ModelRegistry(root, cache_dir=cache).current("rec")
    assert sorted(k.rsplit("/", 1)[1] for k in downloads) == ["index.bin", "model.txt"]
    again = ModelRegistry(root, cache_dir=cache).current("rec")  # a restarted replica
    assert again.path == first.path and len(downloads) == 2
    manifest = json.loads((first.path / "manifest.json").read_text())
    assert manifest["version"] == "v0001" and set(manifest["files"]) == {"index.bin", "model.txt"}


def test_the_publisher_keeps_its_staging_as_the_verified_local_copy(s3_bucket, tmp_path, monkeypatch):
    registry = ModelRegistry(f"{s3_bucket}/models", cache_dir=tmp_path / "pub")
    version = registry.publish("rec", stage(registry, b"x"), {})
    monkeypatch.setattr(S3Objects, "download", lambda *a: pytest.fail("the publisher re-downloaded"))
    assert registry.current("rec").path == version.path
    version.verify()


@dataclass(frozen=True)
class Loaded:
    version: str
    payload: bytes
    warnings: tuple[str, ...] = ()


def test_hot_reload_polls_s3_retries_a_broken_download_and_refuses_a_corrupt_version(
    s3_bucket, s3_server, tmp_path, monkeypatch
):
    root = f"{s3_bucket}/models"
    publisher = ModelRegistry(root, cache_dir=tmp_path / "pub")
    publish(publisher, b"one")

    def load(version: ModelVersion) -> Loaded:
        version.verify()
        return Loaded(version.name, version.file("model.txt").read_bytes())

    models = PublishedModels(ModelRegistry(root, cache_dir=tmp_path / "replica"), "rec", load)
    assert models.load_current().payload == b"one"
    reloader = ModelReloader({"rec": models}, interval_s=0.05)
    assert asyncio.run(reloader.check()) is False  # nothing new

    publish(publisher, b"two")
    with monkeypatch.context() as patched:  # the store drops the connection: not the version's fault
        patched.setattr(S3Objects, "download", lambda *a: (_ for _ in ()).throw(StorageError("reset")))
        assert asyncio.run(reloader.check()) is False
    assert reloader.stats.refused == [] and models.get().version == "v0001"
    assert asyncio.run(reloader.check()) is True  # the next poll fetches it
    assert models.get() == Loaded("v0002", b"two")

    publish(publisher, b"three", make_current=False)
    bucket = s3_bucket.removeprefix("s3://")
    s3_server.client().put_object(Bucket=bucket, Key="models/rec/versions/v0003/model.txt", Body=b"thre3")
    publisher.set_current("rec", "v0003")
    assert asyncio.run(reloader.check()) is False
    assert (
        len(reloader.stats.refused) == 1
        and "v0003: rec/v0003: model.txt fails its checksum" in reloader.stats.refused[0]
    )
    assert models.get().version == "v0002"


def test_an_s3_registry_location_survives_the_config_and_project_yaml(tmp_path):
    from decision_service import project as projects
    from decision_service.config import ServiceConfig
    from decision_service.server.cli import project_env

    env = {"DS_REGISTRY_DIR": "s3://bucket/models", "DS_REGISTRY_CACHE_DIR": str(tmp_path / "cache")}
    config = ServiceConfig.from_env(env)
    assert config.registry_root == "s3://bucket/models" and config.registry_cache_dir == tmp_path / "cache"
    assert ServiceConfig.from_env({"DS_REGISTRY_DIR": "registry"}).registry_root == Path("registry")
    root = tmp_path / "shop"
    root.mkdir()
    (root / "project.yaml").write_text("name: shop\nuse_cases: [fraud]\nregistry: s3://bucket/models\n")
    (root / "features.py").write_text("REGISTRY = None\n")
    assert projects.load(root).registry_dir == "s3://bucket/models"
    assert project_env({"DS_PROJECT": str(root)})["DS_REGISTRY_DIR"] == "s3://bucket/models"


def test_the_replica_cache_keeps_the_most_recently_used_versions(s3_bucket, tmp_path):
    root = f"{s3_bucket}/models"
    publisher = ModelRegistry(root, cache_dir=tmp_path / "pub", cache_versions=0)  # 0: keeps all
    for payload in (b"1", b"2", b"3", b"4"):
        publish(publisher, payload)
    cache = tmp_path / "replica"
    replica = ModelRegistry(root, cache_dir=cache, cache_versions=2)

    def cached() -> list[str]:
        return sorted(p.parent.name for p in cache.rglob("manifest.json"))

    serving = replica.get("rec", "v0001")
    replica.get("rec", "v0002")
    replica.get("rec", "v0003")
    assert cached() == ["v0002", "v0003"]  # v0001's copy went when v0003 came
    assert serving.manifest["version"] == "v0001" and not serving.path.exists()
    assert replica.get("rec", "v0001").file("model.txt").read_bytes() == b"1"  # fetched again, verified
    assert cached() == ["v0001", "v0003"]
    assert not [p for p in cache.rglob(".stale-*")]
    assert sorted(p.parent.name for p in (tmp_path / "pub").rglob("manifest.json")) == [
        "v0001",
        "v0002",
        "v0003",
        "v0004",
    ]
