"""Wires the collect half for a server: decision log, outcome log, decision index, recorder."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import redis.asyncio as aioredis

from decision_service.config import ServiceConfig
from decision_service.decision_log import fraud_log, outcome_log, recommendation_log
from decision_service.decision_log.fraud_log import FraudLogRecord
from decision_service.decision_log.outcome_log import OutcomeLogRecord
from decision_service.decision_log.recommendation_log import RecommendationLogRecord
from decision_service.decision_log.writer import LogWriterConfig, ParquetLogWriter
from decision_service.domain.outcomes import Effect
from decision_service.features.redis_mux import MultiplexedRedis
from decision_service.fraud_executor import FraudSideEffect
from decision_service.outcomes.decision_index import DecisionIndex, ttls_from_label_windows
from decision_service.outcomes.fraud_effects import mark_confirmed_fraud
from decision_service.outcomes.recorder import OutcomeRecorder
from decision_service.stages.base import SideEffect
from decision_service.stages.side_effects.fraud_decision import LogFraudDecision, RememberFraudDecision
from decision_service.stages.side_effects.log_served_decision import LogServedDecision
from decision_service.stages.side_effects.remember_decision import RememberDecision

log = logging.getLogger(__name__)


@dataclass
class Collect:
    decision_log: ParquetLogWriter[RecommendationLogRecord] | None
    fraud_log: ParquetLogWriter[FraudLogRecord] | None
    outcome_log: ParquetLogWriter[OutcomeLogRecord] | None
    index: DecisionIndex
    recorder: OutcomeRecorder | None

    @property
    def writers(self) -> list[ParquetLogWriter]:  # type: ignore[type-arg]
        return [w for _, w in self.labelled_writers()]

    def labelled_writers(self) -> list[tuple[str, ParquetLogWriter]]:  # type: ignore[type-arg]
        labelled = (
            ("decisions/recommendation", self.decision_log),
            ("decisions/fraud", self.fraud_log),
            ("outcomes", self.outcome_log),
        )
        return [(label, w) for label, w in labelled if w is not None]

    @classmethod
    def build(
        cls, config: ServiceConfig, client: aioredis.Redis, writes: MultiplexedRedis | None = None
    ) -> Collect:
        """``writes``: the request path's multiplexed connection, for the decision index write
        every answer waits for (redis-py ``client`` when None)."""
        index = DecisionIndex(
            client,
            ttls_from_label_windows(config.decision_index_grace_s),
            config.decision_index_local_size,
            writes,
        )
        if not config.log_enabled:
            log.warning("decision and outcome logging is OFF (DS_LOG_ENABLED=false)")
            return cls(None, None, None, index, None)
        writer_config = LogWriterConfig(
            queue_size=config.log_queue_size,
            max_rows_per_file=config.log_max_rows_per_file,
            flush_interval_s=config.log_flush_interval_s,
            compression=config.log_compression,
            row_group_bytes=config.log_row_group_bytes,
        )
        decisions = ParquetLogWriter(
            config.log_root,
            "decisions",
            recommendation_log.SCHEMA,
            recommendation_log.to_batch,
            recommendation_log.partition_of,
            writer_config,
        )
        fraud = ParquetLogWriter(
            config.log_root,
            "decisions",  # same log as recommendations, partition use_case=fraud
            fraud_log.SCHEMA,
            fraud_log.to_batch,
            fraud_log.partition_of,
            writer_config,
        )
        outcomes = ParquetLogWriter(
            config.log_root,
            "outcomes",
            outcome_log.SCHEMA,
            outcome_log.to_batch,
            outcome_log.partition_of,
            writer_config,
        )
        recorder = OutcomeRecorder(index, client, outcomes, config.max_seen_items)
        recorder.register(Effect.FRAUD_CONFIRMED, mark_confirmed_fraud)
        return cls(decisions, fraud, outcomes, index, recorder)

    def recommendation_side_effects(self) -> tuple[SideEffect, ...]:
        effects: list[SideEffect] = [RememberDecision(self.index)]
        if self.decision_log is not None:
            effects.append(LogServedDecision(self.decision_log))
        return tuple(effects)

    def fraud_side_effects(self) -> tuple[FraudSideEffect, ...]:
        effects: list[FraudSideEffect] = [RememberFraudDecision(self.index)]
        if self.fraud_log is not None:
            effects.append(LogFraudDecision(self.fraud_log))
        return tuple(effects)

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
