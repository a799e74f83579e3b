"""The database sink: live state -> rows, through the batched writer.

Off the hot path: a token change only marks its instance dirty; a flusher task turns dirty
instances into rows a few times a second. Milestones are rare and go straight to the writer
(which never blocks and buffers through an outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from datetime import UTC, datetime
from typing import Any

import structlog

from coordinator.db.dsn import resolve_dsn
from coordinator.db.postgres import PostgresStore
from coordinator.db.rows import CheckpointRow, InstanceRow, OrchestrationRow
from coordinator.db.writer import BatchedWriter
from coordinator.engine.state import InstanceState, MilestoneHit
from coordinator.plan import RunPlan
from coordinator.redact import mask_config
from coordinator.settings import Settings

log = structlog.get_logger("coordinator.db_sink")

FLUSH_INTERVAL_S = 0.25


def _ts(unix: float | None) -> datetime | None:
    return datetime.fromtimestamp(unix, UTC) if unix is not None else None


def instance_row(orchestration_id: str, state: InstanceState, host: str) -> InstanceRow:
    acct = state.accountant
    usage = acct.usage
    return InstanceRow(
        orchestration_id=orchestration_id,
        name=state.name,
        status=state.status.value,
        session_id=state.plan.session_id,
        pid=state.pid,
        host=host,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_creation_tokens=usage.cache_creation_tokens,
        total_tokens=usage.total,
        cost_usd=acct.cost_usd,
        tool_calls=dict(acct.tool_calls),
        turns=acct.num_turns or acct.messages,
        progress_pct=state.progress.pct,
        exit_code=state.exit_code,
        error=state.error,
        reason=state.reason or state.last_event,
        started_at=_ts(state.started_unix),
        ended_at=_ts(state.ended_unix),
        wait_s=round(state.waiting_s(), 3),
    )


def checkpoint_row(
    orchestration_id: str, state: InstanceState, hit: MilestoneHit, label: str
) -> CheckpointRow:
    acct = state.accountant
    usage = acct.usage
    return CheckpointRow(
        orchestration_id=orchestration_id,
        scenario_id=state.name,
        milestone_name=label,
        progress_pct=float(hit.pct),
        timestamp_unix=hit.at_unix_ms,
        state_snapshot={
            "status": state.status.value,
            "last_event": state.last_event,
            "turns_sent": state.turns_sent,
            "session_id": state.plan.session_id,
        },
        metrics={
            **usage.as_dict(),
            "cost_usd": round(acct.cost_usd, 6),
            "tool_calls": acct.tool_call_count,
            "elapsed_s": round(hit.elapsed_s, 3),
            "wait_s": round(state.waiting_s(), 3),
        },
    )


class DbSink:
    def __init__(self, store: PostgresStore, dsn_masked: str, dsn: str | None = None) -> None:
        self.store = store
        self.dsn_masked = dsn_masked
        self.dsn = dsn  # for the barrier's own connections; never logged (dsn_masked is)
        self.writer = BatchedWriter(store)
        self.host = socket.gethostname()
        self._orch_id = ""
        self._dirty: dict[str, InstanceState] = {}
        self._flusher: asyncio.Task[None] | None = None

    async def open(self, plan: RunPlan, host: str) -> None:
        self.host = host
        self._orch_id = plan.orchestration_id
        await self.store.create_orchestration(
            OrchestrationRow(
                id=plan.orchestration_id,
                status="running",
                host=host,
                sync_mode=plan.sync.mode.value,
                config=mask_config(plan.config.model_dump(mode="json")),  # env values
                budgets=plan.budget.model_dump(mode="json"),
            )
        )
        self.writer.start()
        self._flusher = asyncio.create_task(self._flush_dirty(), name="db-sink")

    def instance_changed(self, state: InstanceState) -> None:
        self._dirty[state.name] = state

    def milestone(self, state: InstanceState, hit: MilestoneHit, label: str) -> None:
        self.writer.submit_checkpoint(checkpoint_row(self._orch_id, state, hit, label))

    async def _flush_dirty(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            self._submit_dirty()

    def _submit_dirty(self) -> None:
        dirty, self._dirty = self._dirty, {}
        for state in dirty.values():
            self.writer.submit_instance(instance_row(self._orch_id, state, self.host))

    async def close(self, status: str, results: dict[str, Any]) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        self._submit_dirty()
        try:
            await self.writer.close()
            await self.store.finish_orchestration(self._orch_id, status, results)
        except Exception as exc:  # the results file is written already; say what is lost
            log.error("could not finish the orchestration in the database", error=str(exc))
        finally:
            await self.store.close()


async def open_db_sink(url: str | None, settings: Settings) -> DbSink:
    from coordinator.db import open_store

    resolved = await asyncio.to_thread(resolve_dsn, settings.database_dsn(url))
    store = await open_store(resolved.dsn)
    return DbSink(store, resolved.masked, resolved.dsn)
