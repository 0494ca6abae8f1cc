import json

import pytest

from decision_service.models.registry import ModelRegistry, RegistryError


def publish(registry, payload=b"model", **manifest):
    staging = registry.staging_dir("rec")
    (staging / "model.txt").write_bytes(payload)
    return registry.publish("rec", staging, {"metrics": {"ndcg": 0.5}, **manifest})


def test_publish_numbers_versions_and_moves_the_pointer(tmp_path):
    registry = ModelRegistry(tmp_path)
    first = publish(registry)
    second = publish(registry, b"better")
    assert (first.name, second.name) == ("v0001", "v0002")
    assert registry.current("rec").name == "v0002"
    assert registry.versions("rec") == ["v0001", "v0002"]
    manifest = json.loads((second.path / "manifest.json").read_text())
    assert manifest["files"]["model.txt"]["bytes"] == 6 and manifest["metrics"] == {"ndcg": 0.5}
    assert not [p for p in (tmp_path / "rec").iterdir() if p.name.startswith(".staging")]


def test_publish_without_switching_keeps_current(tmp_path):
    registry = ModelRegistry(tmp_path)
    publish(registry)
    staging = registry.staging_dir("rec")
    (staging / "model.txt").write_bytes(b"x")
    registry.publish("rec", staging, {}, make_current=False)
    assert registry.current_name("rec") == "v0001"


def test_verify_detects_a_corrupted_file(tmp_path):
    registry = ModelRegistry(tmp_path)
    version = publish(registry)
    version.verify()
    (version.path / "model.txt").write_bytes(b"MODEL")
    with pytest.raises(RegistryError, match="checksum"):
        registry.current("rec").verify()


def test_missing_registry_says_how_to_fix_it(tmp_path):
    with pytest.raises(RegistryError, match="bootstrap"):
        ModelRegistry(tmp_path).current("rec")
