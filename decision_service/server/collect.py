"""Wires the collect half for a server: decision logs, outcome log, decision index, recorder."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from decision_service.config import ServiceConfig
from decision_service.decision_log import outcome_log, shadow_log
from decision_service.decision_log.outcome_log import OutcomeLogRecord
from decision_service.decision_log.writer import LogWriterConfig, ParquetLogWriter
from decision_service.features.redis_mux import MultiplexedRedis
from decision_service.features.store import StateWrites
from decision_service.outcomes.decision_index import DecisionIndex, ttls_from_label_windows
from decision_service.outcomes.recorder import EffectHandler, OutcomeRecorder
from decision_service.use_cases.base import UseCase

log = logging.getLogger(__name__)

DECISIONS = "decisions"
OUTCOMES = "outcomes"
SHADOW = "shadow"


@dataclass
class Collect:
    """The collect half of one server process, for every registered use case.

    ``decision_logs``: use case name -> its decision log writer (rows under
    ``decisions/use_case=<name>/``); empty when logging is off, as is ``outcome_log`` None.
    """

    decision_logs: dict[str, ParquetLogWriter[Any]]
    outcome_log: ParquetLogWriter[OutcomeLogRecord] | None
    index: DecisionIndex
    recorder: OutcomeRecorder | None
    shadow_log: ParquetLogWriter[Any] | None = None  # shadow scores (decision_log/shadow_log.py)

    @property
    def writers(self) -> list[ParquetLogWriter]:  # type: ignore[type-arg]
        return [w for _, w in self.labelled_writers()]

    def labelled_writers(self) -> list[tuple[str, ParquetLogWriter]]:  # type: ignore[type-arg]
        labelled: list[tuple[str, ParquetLogWriter]] = [  # type: ignore[type-arg]
            (f"{DECISIONS}/{name}", w) for name, w in self.decision_logs.items()
        ]
        if self.outcome_log is not None:
            labelled.append((OUTCOMES, self.outcome_log))
        if self.shadow_log is not None:
            labelled.append((SHADOW, self.shadow_log))
        return labelled

    @classmethod
    def build(
        cls,
        config: ServiceConfig,
        client: aioredis.Redis,
        use_cases: Sequence[UseCase],
        writes: MultiplexedRedis | None,
        state_writes: StateWrites,
    ) -> Collect:
        """Writers, decision index and outcome recorder for ``use_cases``.

        ``writes``: the request path's multiplexed connection, for the decision index write
        every answer waits for (redis-py ``client`` when None); ``state_writes``: the online
        store's write half, for the outcomes' effects.
        On failure: ValueError when an outcome type names an effect its use case has no
        handler for (a declaration error, found at start)."""
        outcome_types = [t for u in use_cases for t in u.outcome_types]
        index = DecisionIndex(
            client,
            ttls_from_label_windows(config.decision_index_grace_s, outcome_types),
            config.decision_index_local_size,
            writes,
            outcome_types=outcome_types,
        )
        handlers = _effect_handlers(config, use_cases)
        if not config.log_enabled:
            log.warning("decision and outcome logging is OFF (DS_LOG_ENABLED=false)")
            return cls({}, None, index, None)
        writer_config = LogWriterConfig(
            queue_size=config.log_queue_size,
            max_rows_per_file=config.log_max_rows_per_file,
            flush_interval_s=config.log_flush_interval_s,
            compression=config.log_compression,
            row_group_bytes=config.log_row_group_bytes,
        )
        decision_logs: dict[str, ParquetLogWriter[Any]] = {
            u.name: ParquetLogWriter(
                config.log_root, DECISIONS, u.log.schema, u.log.to_batch, u.log.partition_of, writer_config
            )
            for u in use_cases
            if u.log is not None
        }
        outcomes = ParquetLogWriter(
            config.log_root,
            OUTCOMES,
            outcome_log.SCHEMA,
            outcome_log.to_batch,
            outcome_log.partition_of,
            writer_config,
        )
        recorder = OutcomeRecorder(index, state_writes, outcomes, handlers)
        shadow = ParquetLogWriter(
            config.log_root,
            SHADOW,
            shadow_log.SCHEMA,
            shadow_log.to_batch,
            shadow_log.partition_of,
            writer_config,
        )
        return cls(decision_logs, outcomes, index, recorder, shadow)

    def start(self) -> None:
        for writer in self.writers:
            writer.start()
            log.info("writing the %s log under %s", writer.name, writer.root)

    async def stop(self) -> None:
        """Flushes every buffered record to Parquet (the decision index has nothing pending:
        each entry is written before its answer)."""
        for writer in self.writers:
            if writer is not None:
                await asyncio.to_thread(writer.close)
                s = writer.stats
                log.info(
                    "%s log closed: %d written in %d files, %d dropped (queue full %d, write errors %d)",
                    writer.name,
                    s.written_records,
                    s.written_files,
                    s.dropped,
                    s.dropped_queue_full,
                    s.dropped_write_error,
                )


def _effect_handlers(config: ServiceConfig, use_cases: Sequence[UseCase]) -> dict[str, EffectHandler]:
    handlers: dict[str, EffectHandler] = {}
    for u in use_cases:
        own = dict(u.effects(config)) if u.effects is not None else {}
        for t in u.outcome_types:
            missing = [e for e in t.effects if e not in own]
            if missing:
                raise ValueError(
                    f"use case {u.name}: outcome type {t.name!r} names effects without a handler: {missing}"
                )
        for name, handler in own.items():
            if name in handlers:
                raise ValueError(f"effect {name!r} is declared by two use cases")
            handlers[name] = handler
    return handlers
