"""Service configuration: typed defaults, overridden by ``DS_<FIELD>`` environment variables.

Every knob a user may tune lives here with its unit in its name. Invalid values fail at
start with a message naming the variable.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
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
    workers: int = 0  # server processes on one port (SO_REUSEPORT); 0 = one per CPU core
    # Resource bounds per server process (README "Resource bounds"): worst-case request bytes
    # held at once ~ max_concurrent_rpcs x max_message_bytes (256 MiB with the defaults).
    max_message_bytes: int = 1024 * 1024  # largest message; a GetDecision at every limit is ~300 KB
    max_concurrent_rpcs: int = 256  # calls being handled at once; beyond: RESOURCE_EXHAUSTED
    # HTTP/2 streams per client connection; 0 = grpc's default (no limit). A limit makes a
    # burst on a fresh connection, before the client has the server's SETTINGS, see
    # UNAVAILABLE (REFUSED_STREAM); max_concurrent_rpcs is the bound that protects memory.
    max_concurrent_streams_per_connection: int = 0
    # Connections are closed (GOAWAY, in-flight calls finish) after this age, +-10 %, so clients
    # reconnect and load spreads again over workers and replicas; 0 = never.
    max_connection_age_s: float = 60.0
    max_connection_age_grace_s: float = 10.0  # how long in-flight calls of such a connection get
    # --- security (see server/security.py)
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None  # set = mutual TLS: clients need a cert signed by it
    auth_tokens: str = ""  # comma-separated bearer tokens; empty = no token check
    # --- storage
    data_dir: Path = Path("data")
    registry_dir: Path | str | None = None  # default: <data_dir>/registry; or s3://bucket/prefix
    # an s3:// registry: where verified local copies of its versions are kept
    # (default $DS_STORAGE_CACHE_DIR/registry, else <tmp>/decision-service-cache/registry)
    registry_cache_dir: Path | None = None
    registry_cache_versions: int = 3  # ... the most recently used copies kept per use case; 0 = all
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
    max_candidates_per_source: int = 2_000  # cap on what one source retrieves in one round
    retrieval_max_rounds: int = 3  # 1 + refill rounds (deeper) while filters leave < num_items
    # search-time index knobs; 0 = what the bootstrap measured and recorded in the manifest
    hnsw_ef_search: int = 0
    ivf_nprobe: int = 0
    scorer: str = "auto"  # "auto" (compiled trees when they load and match), "lightgbm", "compiled"
    scorer_max_abs_diff: float = 1e-5  # compiled vs LightGBM scores on a sample, checked at load
    exploration_share: float = 0.0  # share of slots given to uniformly explored candidates (0 = off)
    # --- model hot reload
    model_reload_interval_s: float = 2.0  # how often CURRENT is checked; 0 = never reload
    # --- rollout (models/rollout.py): shadow scoring off the answer path
    shadow_max_queue: int = 128  # decisions waiting for the shadow; beyond: skipped, counted
    # --- decision and outcome logs (collect)
    log_dir: str | None = None  # default <data_dir>/logs; or s3://..., gs://...
    log_enabled: bool = True
    log_queue_size: int = 20_000  # records; beyond it records are dropped, counted
    log_max_rows_per_file: int = 2_000  # a buffer is written as one file at this size...
    log_flush_interval_s: float = 5.0  # ...or this often; bounds what a SIGKILL loses
    log_compression: str = "zstd"
    log_row_group_bytes: int = 2 << 20  # Arrow bytes per row group appended to an open file
    # --- outcomes (observation API)
    max_outcomes_per_request: int = 1_000
    outcome_max_future_skew_s: float = 300.0  # occurred_at later than now + this is invalid
    # outcomes are attributable (decision index TTL) for the use case's longest label window
    # (each use case's outcome types: fraud 60 d, conversion 7 d, recommendation 24 h) plus
    # this grace for late delivery
    decision_index_grace_s: int = 86_400
    decision_index_local_size: int = 200_000  # decisions remembered in process
    # --- fraud pipeline
    fraud_review_score: int = 40               # risk score (0..99) from which payments are reviewed
    fraud_decline_score: int = 85              # ... and declined
    fraud_max_amount_eur: float = 10_000.0     # hard limit: decline above
    fraud_max_user_txn_10m: int = 12           # hard limit: decline from this many payments in 10 min
    fraud_degraded_fallback: str = "review"    # store/model unavailable: "review" or "open" (fail open)
    fraud_fail_open_max_amount_eur: float = 200.0  # with "open", larger amounts still go to review
    fraud_max_reasons: int = 3
    fraud_max_velocity_events: int = 1_000     # events read per party and request (bounds a burst)
    fraud_record_ttl_s: int = 30 * 86_400      # idempotency window of a transaction id
    fraud_absurd_amount_eur: float = 1_000_000.0  # validation: larger amounts are INVALID_ARGUMENT
    fraud_max_clock_skew_s: float = 300.0      # validation: occurred_at later than now + this
    fraud_max_transaction_age_s: float = 86_400.0  # validation: occurred_at older than now - this
    # --- observability
    telemetry_exporter: str = "none"  # none | console | otlp (OTEL_EXPORTER_OTLP_ENDPOINT)
    # Prometheus /metrics over HTTP (README "Metrics (Prometheus)"), beside any exporter:
    # unset / empty = off; 0 = any free port (logged). With --workers N the supervisor serves
    # it and merges its workers' series (label worker="<id>").
    metrics_port: int | None = None
    metrics_host: str = ""  # the /metrics listen address; "" = the server's host
    log_level: str = "INFO"

    @property
    def registry_root(self) -> Path | str:
        """A local directory, or an object-store URI (``s3://bucket/prefix``)."""
        return self.registry_dir or self.data_dir / "registry"

    @property
    def metrics_bind_host(self) -> str:
        """Where /metrics listens: ``metrics_host``, or the gRPC ``host`` when it is empty."""
        return self.metrics_host or self.host

    @property
    def log_root(self) -> str:
        return self.log_dir or str(self.data_dir / "logs")

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        config_file: str | os.PathLike[str] | None = None,
        **overrides: object,
    ) -> ServiceConfig:
        """Defaults, then the YAML file (``config_file`` or $DS_CONFIG), then ``DS_*``
        variables, then explicit ``overrides``. Errors name the key and the problem."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        path = config_file or env.get("DS_CONFIG")
        if path:
            values.update(_read_yaml(Path(path)))
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
            "max_message_bytes",
            "max_concurrent_rpcs",
            "max_num_items",
            "max_string_length",
            "ann_candidates",
            "popular_fallback_candidates",
            "max_items_per_category",
            "max_seen_items",
            "max_candidates_per_source",
            "retrieval_max_rounds",
            "log_queue_size",
            "log_max_rows_per_file",
            "log_row_group_bytes",
            "max_outcomes_per_request",
            "decision_index_local_size",
            "shadow_max_queue",
        ]
        for name in positive:
            if int(getattr(self, name)) <= 0 and not (name == "port" and self.port == 0):
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in [
            "max_exclusions",
            "max_allowed_categories",
            "max_context_attributes",
            "popular_candidates",
            "hnsw_ef_search",
            "ivf_nprobe",
            "registry_cache_versions",
        ]:
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.exploration_share < 1.0:
            raise ConfigError(f"exploration_share must be in [0, 1), got {self.exploration_share}")
        if self.max_concurrent_streams_per_connection < 0:
            raise ConfigError(
                f"max_concurrent_streams_per_connection must be >= 0 (0 = no limit), "
                f"got {self.max_concurrent_streams_per_connection}"
            )
        for name in ("max_connection_age_s", "max_connection_age_grace_s"):
            if float(getattr(self, name)) < 0:
                raise ConfigError(f"{name} must be >= 0 (0 = off), got {getattr(self, name)}")
        if self.model_reload_interval_s < 0:
            raise ConfigError(f"model_reload_interval_s must be >= 0, got {self.model_reload_interval_s}")
        if self.log_flush_interval_s <= 0:
            raise ConfigError(f"log_flush_interval_s must be > 0, got {self.log_flush_interval_s}")
        if not 0 < self.fraud_review_score <= self.fraud_decline_score <= 99:
            raise ConfigError(
                "need 0 < fraud_review_score <= fraud_decline_score <= 99, got "
                f"{self.fraud_review_score}, {self.fraud_decline_score}"
            )
        if self.scorer not in ("auto", "lightgbm", "compiled"):
            raise ConfigError(f"scorer must be 'auto', 'lightgbm' or 'compiled', got {self.scorer!r}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0 (0 = one per CPU core), got {self.workers}")
        if self.fraud_degraded_fallback not in ("review", "open"):
            raise ConfigError(
                f"fraud_degraded_fallback must be 'review' or 'open', got {self.fraud_degraded_fallback!r}"
            )
        if self.decision_index_grace_s < 0:
            raise ConfigError(f"decision_index_grace_s must be >= 0, got {self.decision_index_grace_s}")
        for name in ("fraud_max_velocity_events", "fraud_record_ttl_s", "fraud_max_user_txn_10m"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.telemetry_exporter not in ("none", "console", "otlp"):
            raise ConfigError(
                f"telemetry_exporter must be none, console or otlp, got {self.telemetry_exporter!r}"
            )
        if self.metrics_port is not None:
            if not 0 <= self.metrics_port <= 65535:
                raise ConfigError(
                    "metrics_port (DS_METRICS_PORT) must be a TCP port 0..65535 (0 = any free port; "
                    f"unset = no /metrics), got {self.metrics_port}"
                )
            same_host = self.metrics_bind_host == self.host
            if self.metrics_port != 0 and self.metrics_port == self.port and same_host:
                raise ConfigError(
                    f"metrics_port (DS_METRICS_PORT) {self.metrics_port} is the gRPC port (DS_PORT): "
                    "give /metrics a port of its own"
                )
        if self.metrics_host != self.metrics_host.strip() or any(c in self.metrics_host for c in "/ "):
            raise ConfigError(
                f"metrics_host (DS_METRICS_HOST) must be a bare address, got {self.metrics_host!r}"
            )
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://", "redis+cluster://")):
            raise ConfigError(
                "redis_url must be a redis://, rediss://, unix:// or "
                "redis+cluster://host:port[,host:port...] (a Redis Cluster) URL"
            )
        if self.redis_url.startswith("redis+cluster://"):
            from decision_service.features.redis_cluster import cluster_seeds

            try:
                cluster_seeds(self.redis_url)
            except ValueError as exc:
                raise ConfigError(f"redis_url: {exc}") from None


def _parse(var: str, raw: str, type_: object) -> object:
    t = str(type_)
    try:
        if "Path" in t:
            if "str" in t and "://" in raw:  # a location that may be a URI: s3://bucket/prefix
                return raw
            return Path(raw) if raw else None
        if t in ("int", "<class 'int'>"):
            return int(raw)
        if t == "int | None":  # empty = unset (DS_METRICS_PORT)
            return int(raw) if raw.strip() else None
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


_SECRET_WORDS = ("password", "token", "secret", "key_file", "private")


def _read_yaml(path: Path) -> dict[str, object]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of setting: value at the top level")
    fields = {f.name: f for f in dataclasses.fields(ServiceConfig)}
    out: dict[str, object] = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{path}: unknown key {key!r}{hint}")
        out[key] = _coerce(f"{path}: {key}", value, fields[key].type)
    return out


def _coerce(where: str, value: object, type_: object) -> object:
    t = str(type_)
    if value is None:
        if "None" in t:
            return None
        raise ConfigError(f"{where}: must not be empty")
    if isinstance(value, str):
        return _parse(where, value, type_)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if t.startswith("bool") and isinstance(value, bool):
        return value
    if t.startswith("int") and is_number and isinstance(value, int):
        return value
    if t.startswith("float") and is_number:
        return float(value)  # type: ignore[arg-type]
    raise ConfigError(f"{where}: expected {t}, got {type(value).__name__} {value!r}")


def describe(config: ServiceConfig) -> dict[str, object]:
    """The effective configuration as plain values, secrets masked (for ``config --print``)."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, Path):
            value = str(value)
        if isinstance(value, str) and "://" in value:
            value = _mask_url(value)
        elif value and any(word in f.name for word in _SECRET_WORDS):
            value = "****"
        out[f.name] = value
    return out


def mask_url(url: str) -> str:
    """``url`` with its password as ****: the userinfo is everything up to the last ``@``
    before the hosts (a password may hold ``/`` or ``@``), also in a redis+cluster:// node
    list; a ``password=`` query parameter too."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        userinfo, _, hosts = rest.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}:****@{hosts}" if colon else rest
    masked = f"{scheme}{sep}{rest}" if sep else url
    return re.sub(r"(?i)([?&]password=)[^&]*", r"\1****", masked)


_mask_url = mask_url
