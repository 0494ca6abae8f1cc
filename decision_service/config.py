"""Service configuration: typed defaults, overridden by ``DS_<FIELD>`` environment variables.

Every knob a user may tune lives here with its unit in its name. Invalid values fail at
start with a message naming the variable.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ServiceConfig:
    # --- network
    host: str = "127.0.0.1"
    port: int = 50051
    grace_period_s: float = 5.0
    # --- storage
    data_dir: Path = Path("data")
    registry_dir: Path | None = None  # default: <data_dir>/registry
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_timeout_ms: int = 50
    redis_connect_timeout_ms: int = 100
    redis_max_connections: int = 64
    # --- latency budget
    request_budget_ms: int = 100  # server-side cap; a shorter client deadline wins
    # --- request limits
    max_num_items: int = 100
    max_exclusions: int = 1_000
    max_allowed_categories: int = 50
    max_context_attributes: int = 32
    max_string_length: int = 256
    # --- recommendation pipeline
    ann_candidates: int = 200
    popular_candidates: int = 50
    popular_fallback_candidates: int = 250
    max_items_per_category: int = 4
    max_seen_items: int = 500
    hnsw_ef_search: int = 128
    ivf_nprobe: int = 16
    # --- decision and outcome logs (collect)
    log_dir: str | None = None  # default <data_dir>/logs; or s3://..., gs://...
    log_enabled: bool = True
    log_queue_size: int = 20_000  # records; beyond it records are dropped, counted
    log_max_rows_per_file: int = 2_000  # a buffer is written as one file at this size...
    log_flush_interval_s: float = 5.0  # ...or this often; bounds what a SIGKILL loses
    log_compression: str = "zstd"
    # --- outcomes (observation API)
    max_outcomes_per_request: int = 1_000
    outcome_max_future_skew_s: float = 300.0  # occurred_at later than now + this is invalid
    decision_index_ttl_s: int = 7 * 86_400  # how long outcomes can be attributed via Redis
    decision_index_local_size: int = 200_000  # decisions remembered in process
    log_level: str = "INFO"

    @property
    def registry_root(self) -> Path:
        return self.registry_dir or self.data_dir / "registry"

    @property
    def log_root(self) -> str:
        return self.log_dir or str(self.data_dir / "logs")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> ServiceConfig:
        """Defaults, then ``DS_*`` variables, then explicit ``overrides``."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"DS_{f.name.upper()}")
            if raw is None and f.name == "redis_url":
                raw = env.get("REDIS_URL")
            if raw is not None:
                values[f.name] = _parse(f"DS_{f.name.upper()}", raw, f.type)
        values.update(overrides)
        config = cls(**values)  # type: ignore[arg-type]
        config.validate()
        return config

    def validate(self) -> None:
        positive = [
            "port",
            "redis_timeout_ms",
            "redis_connect_timeout_ms",
            "redis_max_connections",
            "request_budget_ms",
            "max_num_items",
            "max_string_length",
            "ann_candidates",
            "popular_fallback_candidates",
            "max_items_per_category",
            "max_seen_items",
            "hnsw_ef_search",
            "ivf_nprobe",
            "log_queue_size",
            "log_max_rows_per_file",
            "max_outcomes_per_request",
            "decision_index_ttl_s",
            "decision_index_local_size",
        ]
        for name in positive:
            if int(getattr(self, name)) <= 0 and not (name == "port" and self.port == 0):
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in [
            "max_exclusions",
            "max_allowed_categories",
            "max_context_attributes",
            "popular_candidates",
        ]:
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.log_flush_interval_s <= 0:
            raise ConfigError(f"log_flush_interval_s must be > 0, got {self.log_flush_interval_s}")
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("redis_url must be a redis://, rediss:// or unix:// URL")


def _parse(var: str, raw: str, type_: object) -> object:
    t = str(type_)
    try:
        if "Path" in t:
            return Path(raw) if raw else None
        if t in ("int", "<class 'int'>"):
            return int(raw)
        if t in ("float", "<class 'float'>"):
            return float(raw)
        if t in ("bool", "<class 'bool'>"):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return raw
    except ValueError:
        raise ConfigError(f"{var}={raw!r} is not a valid {t}") from None
