"""Every shipped ghz config (loadtests/ghz/*.json), run for real by ghz against real servers.

A short run of each (its own fixed request count) on the tiny worlds, asserted on ghz's JSON
report (``-O json``): the request count, and the status distribution the config's tags expect
(all OK, or all the one error code of an error-path config). Needs the ghz binary: `make
test-ghz` installs the pinned one first; elsewhere the module is skipped with the reason.
The ghz runs are marked ``slow`` too, so the default ``make test`` (``-m "not slow"``) never
selects them; only the static check of the configs runs there.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from decision_service.devtools.local_redis import LocalRedis
from loadtests.ghz_run import (
    INSTALL_HINT,
    PLACEHOLDER_TOKEN,
    ROOT,
    Target,
    find_ghz,
    load_redis,
    prepare,
    run_config,
    servers,
    shipped_configs,
    write_data,
)

GHZ = find_ghz()
needs_ghz = [
    pytest.mark.slow,
    pytest.mark.ghz,
    pytest.mark.skipif(GHZ is None, reason=f"{INSTALL_HINT}; `make test-ghz` installs it and runs this"),
    pytest.mark.timeout(900),
]
CONFIGS = {c.stem: c for c in shipped_configs()}


@pytest.fixture(scope="module")
def ghz_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Target], str]]:
    """(folder holding copies of the configs, the servers they target, their Redis URL).

    The configs' relative paths (../data, ../../protos) are kept by copying them into
    <tmp>/site/ghz next to <tmp>/site/data, with <tmp>/protos linked to the repo's protos,
    so the test never writes into the shared loadtests/data.
    """
    tmp = tmp_path_factory.mktemp("ghz")
    demo = prepare(tmp / "demo", preset="tiny")
    site = tmp / "site" / "ghz"
    site.mkdir(parents=True)
    for config in CONFIGS.values():
        shutil.copy(config, site / config.name)
    (tmp / "protos").symlink_to(ROOT / "protos")
    write_data(demo, out=tmp / "site" / "data", n=600)
    with LocalRedis() as redis_server:
        load_redis(demo, redis_server.url, tmp)
        with servers(demo, redis_server.url, tmp) as targets:
            yield site, targets, redis_server.url


def test_every_config_declares_its_server_and_expected_status() -> None:
    """Static (no ghz, runs in `make test`): the tags the driver and the test rely on."""
    assert len(CONFIGS) >= 8
    for name, path in CONFIGS.items():
        config = json.loads(path.read_text())
        assert config["tags"]["server"] in {"open", "secure"}, name
        assert config["tags"]["expect"], name
        assert config.get("total") and not config.get("duration"), f"{name}: short by default (a request count)"
        if config["tags"]["server"] == "secure" and config["tags"]["expect"] == "OK":
            assert config["metadata"]["authorization"] == f"Bearer {PLACEHOLDER_TOKEN}", name
    # the coverage: proto and reflection, a fixed rate, tokens, both error paths
    assert any("proto" in json.loads(p.read_text()) for p in CONFIGS.values())
    assert any("proto" not in json.loads(p.read_text()) for p in CONFIGS.values())
    assert any(json.loads(p.read_text()).get("rps") for p in CONFIGS.values())
    expects = {json.loads(p.read_text())["tags"]["expect"] for p in CONFIGS.values()}
    assert {"OK", "InvalidArgument", "Unauthenticated"} <= expects


@pytest.mark.parametrize("name", [pytest.param(n, marks=needs_ghz) for n in sorted(CONFIGS)])
def test_shipped_config_runs_with_the_expected_statuses(name: str, ghz_site) -> None:
    site, targets, _ = ghz_site
    config = json.loads(CONFIGS[name].read_text())
    target = targets[config["tags"]["server"]]
    assert GHZ is not None
    result = run_config(GHZ, site / f"{name}.json", target, fmt="json")
    report = result.report
    assert report is not None
    expected = config["tags"]["expect"]
    assert report["count"] == config["total"], report.get("errorDistribution")
    assert report["statusCodeDistribution"] == {expected: config["total"]}, report.get("errorDistribution")
    errors = report.get("errorDistribution") or {}
    if expected == "OK":
        assert not errors
        assert report["rps"] > 0 and report["latencyDistribution"]
    else:
        assert sum(errors.values()) == config["total"]
        assert all(f"code = {expected}" in message for message in errors)
        if expected == "InvalidArgument":  # the reply names the field
            assert all("num_items" in message for message in errors)


@pytest.mark.parametrize("name", [pytest.param("fraud", marks=needs_ghz)])
def test_fraud_config_sends_a_new_transaction_id_on_every_call(name: str, ghz_site) -> None:
    """A repeated id would be an idempotent replay, not a new check: every call of the fraud
    config must leave its own idempotency record (``fraud:txn:<id>``) in Redis."""
    site, targets, redis_url = ghz_site
    config = json.loads(CONFIGS[name].read_text())
    client = redis.Redis.from_url(redis_url)

    def records() -> int:
        return sum(1 for _ in client.scan_iter(match="fraud:txn:ghz-*", count=1000))

    before = records()
    assert GHZ is not None
    result = run_config(GHZ, site / f"{name}.json", targets["open"], fmt="json")
    assert result.status == {"OK": config["total"]}
    deadline = time.monotonic() + 10
    while records() - before < config["total"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert records() - before == config["total"]
    client.close()
