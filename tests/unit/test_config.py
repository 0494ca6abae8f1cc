"""Configuration: defaults < YAML file < DS_* environment < explicit overrides; clear errors."""

import re

import pytest

from decision_service.config import ConfigError, ServiceConfig, describe


def test_precedence_yaml_then_env_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("port: 6000\nrequest_budget_ms: 80\nmax_num_items: 7\nlog_enabled: false\n")
    env = {"DS_REQUEST_BUDGET_MS": "90"}
    config = ServiceConfig.from_env(env, config_file=path, max_num_items=9)
    assert (config.port, config.request_budget_ms, config.max_num_items) == (6000, 90, 9)
    assert config.log_enabled is False


def test_config_file_from_environment_variable(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("ann_candidates: 123\n")
    assert ServiceConfig.from_env({"DS_CONFIG": str(path)}).ann_candidates == 123


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("portt: 1\n", "unknown key 'portt' (did you mean 'port'?)"),
        ("port: abc\n", "port='abc' is not a valid int"),
        ("port: 1.5\n", "port: expected int"),
        ("log_enabled: 3\n", "log_enabled: expected bool"),
        ("- a\n- b\n", "expected a mapping"),
        ("port: [1\n", "not valid YAML"),
        ("max_num_items: 0\n", "max_num_items must be > 0"),
    ],
)
def test_bad_files_name_the_key_and_the_problem(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        ServiceConfig.from_env({}, config_file=path)


def test_bad_environment_values_name_the_variable():
    with pytest.raises(ConfigError, match="DS_PORT='x' is not a valid int"):
        ServiceConfig.from_env({"DS_PORT": "x"})
    with pytest.raises(ConfigError, match="DS_LOG_ENABLED"):
        ServiceConfig.from_env({"DS_LOG_ENABLED": "maybe"})


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        ServiceConfig.from_env({}, config_file=tmp_path / "nope.yaml")


def test_describe_masks_secrets():
    shown = describe(ServiceConfig(redis_url="redis://app:s3cret@db.internal:6380/1"))
    assert shown["redis_url"] == "redis://app:****@db.internal:6380/1"
    assert "s3cret" not in str(shown)


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3cret@redis.internal:6390/0",
        "redis://user:s3cret@127.0.0.1/0",
        "rediss://user:s3cret@host:6380",
        "redis+cluster://:s3cret@10.0.0.1:7000,10.0.0.2:7000/0",
        "redis+cluster://:top/s3cret@127.0.0.1:7000/0",  # a '/' in the password
        "redis://:a@s3cret@redis.internal:6390",  # a raw '@' in the password
        "redis://redis.internal:6390/0?password=s3cret&socket_timeout=1",
        "unix:///run/redis.sock?db=0&Password=s3cret",
    ],
)
def test_kind_a_password_never_shows_in_a_masked_url(url):
    from decision_service.config import mask_url

    masked = mask_url(url)
    assert "s3cret" not in masked and "****" in masked
    assert masked.split("://")[0] == url.split("://")[0]
