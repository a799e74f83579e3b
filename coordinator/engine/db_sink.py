"""The database sink: live state -> rows, through the batched writer.

Off the hot path: a token change only marks its instance dirty; a flusher task turns dirty
instances into rows a few times a second. Milestones are rare and go straight to the writer
(which never blocks and buffers through an outage).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from coordinator.db.journal import JournalEntry, write_journal
from coordinator.db.postgres import PostgresStore, is_transient
from coordinator.db.rows import CheckpointRow, InstanceRow, OrchestrationRow
from coordinator.db.store import OrchestrationExistsError
from coordinator.db.writer import BatchedWriter
from coordinator.engine.state import InstanceState, MilestoneHit
from coordinator.errors import CoordinatorError
from coordinator.plan import RunPlan
from coordinator.redact import mask_config
from coordinator.statedir import default_state_dir
from runner import aio

log = structlog.get_logger("coordinator.db_sink")

FLUSH_INTERVAL_S = 0.25
LEASE_S = 30.0  # a run whose coordinator is silent this long is shown as lost
OPEN_TIMEOUT_S = 10.0
CLOSE_DEADLINE_S = 15.0  # the final flush waits this long for a database that went away


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
        attempts=state.attempts,
        carry=carry_of(state),
        measures=state.measures(),
    )


def carry_of(state: InstanceState) -> dict[str, Any]:
    """What ``coordinator resume`` needs to continue the instance where it stopped."""
    acct = state.accountant
    return {
        "turns_done": state.turns_done,
        "turns_sent": state.turns_sent,
        "session_exists": state.session_exists,
        "api_messages": acct.messages,
        "num_turns": acct.num_turns,
        "milestones": [hit.pct for hit in state.milestone_hits],
        "attempt_log": [record.as_dict() for record in state.attempt_log],
        "retry_at_unix": state.retry_at_unix,
    }


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
    """Persists one run. Never blocks the engine, never loses a row: what the database
    cannot take by the end of the run (its final flush has a deadline) is journalled to the
    state directory and replayed by the next command that reaches a database."""

    def __init__(
        self,
        store: PostgresStore,
        dsn_masked: str,
        dsn: str | None = None,
        *,
        state_dir: Path | None = None,
        lease_s: float = LEASE_S,
        close_deadline_s: float = CLOSE_DEADLINE_S,
        launch: dict[str, Any] | None = None,
        reopened: OrchestrationRow | None = None,
        config_json: dict[str, Any] | None = None,
    ) -> None:
        self.launch = launch or {}
        # the plan's config as recorded (masked), when the caller has it already: a fleet
        # runner builds it once per run for all its engines
        self._config_json = config_json
        self.reopened = reopened  # a resumed run: its row exists and this process owns it
        self.store = store
        self.dsn_masked = dsn_masked
        self.dsn = dsn  # for the barrier's own connections; never logged (dsn_masked is)
        self.state_dir = state_dir or default_state_dir()
        self.lease_s = lease_s
        self.close_deadline_s = close_deadline_s
        self.writer = BatchedWriter(store, on_health=self._health)
        self.host = socket.gethostname()
        self.journalled: Path | None = None  # set by close() when rows had to be journalled
        self._orch: OrchestrationRow | None = None
        self._created = False
        self._dirty: dict[str, InstanceState] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._note: Callable[[str], None] = lambda text: None
        self._outage = False

    @property
    def _orch_id(self) -> str:
        return self._orch.id if self._orch is not None else ""

    async def open(
        self, plan: RunPlan, host: str, note: Callable[[str], None] | None = None
    ) -> None:
        """Record the orchestration. Its id already being stored is an error (exit 2); the
        database being away is not: rows are buffered until it is back, or journalled."""
        self.host = host
        if note is not None:
            self._note = note
        self._orch = OrchestrationRow(
            id=plan.orchestration_id,
            status="running",
            host=host,
            sync_mode=plan.sync.mode.value,
            config=self._config_json
            if self._config_json is not None
            else mask_config(plan.config.model_dump(mode="json")),  # env values
            budgets=plan.budget.model_dump(mode="json"),
            lease_s=self.lease_s,
            launch=self.launch,
        )
        if self.reopened is not None:  # resumed: the row is there and this process owns it
            self._created = True
            self.writer.start()
        else:
            try:
                await aio.wait_for(self._create(), OPEN_TIMEOUT_S)
            except OrchestrationExistsError:
                raise OrchestrationIdTakenError(plan.orchestration_id, self.dsn_masked) from None
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._health(False, str(exc) or type(exc).__name__)
                self._tasks.append(asyncio.create_task(self._create_later(), name="db-create"))
        self._tasks.append(asyncio.create_task(self._flush_dirty(), name="db-sink"))
        self._tasks.append(asyncio.create_task(self._heartbeat(), name="db-heartbeat"))

    async def _create(self) -> None:
        assert self._orch is not None
        await self.store.create_orchestration(self._orch)
        self._created = True
        self.writer.start()  # instance rows need their orchestration row first

    async def _create_later(self, delay: float = 0.5) -> None:
        while not self._created:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            try:
                await aio.wait_for(self._create(), OPEN_TIMEOUT_S)
            except OrchestrationExistsError:  # our own earlier attempt got through
                self._created = True
                self.writer.start()
            except Exception as exc:
                if not is_transient(exc):
                    log.error("could not record the orchestration", error=str(exc))
                    return
        self._health(True, None)

    def _health(self, healthy: bool, error: str | None) -> None:
        """One line when the database goes away and one when it is back; the driver's
        details go to the log file only."""
        if healthy == (not self._outage):
            return
        self._outage = not healthy
        if healthy:
            self._note("database back: buffered rows are being written")
        else:
            log.info("database unavailable", error=error)
            self._note(
                "database unavailable: rows are buffered and written when it is back "
                "(details in the log file)"
            )

    def instance_changed(self, state: InstanceState) -> None:
        self._dirty[state.name] = state

    def milestone(self, state: InstanceState, hit: MilestoneHit, label: str) -> None:
        self.writer.submit_checkpoint(checkpoint_row(self._orch_id, state, hit, label))

    async def _flush_dirty(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            self._submit_dirty()

    async def _heartbeat(self) -> None:
        """The run's lease: a coordinator that stops beating (killed, host gone) is shown
        as ``lost`` by status and history after ``lease_s``."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            if not self._created:
                continue
            try:
                await aio.wait_for(
                    self.store.heartbeat_orchestration(self._orch_id), self.lease_s / 3
                )
            except Exception as exc:  # an outage: the writer's line says so already
                log.info("heartbeat not written", error=str(exc) or type(exc).__name__)

    def _submit_dirty(self) -> None:
        dirty, self._dirty = self._dirty, {}
        for state in dirty.values():
            self.writer.submit_instance(instance_row(self._orch_id, state, self.host))

    async def close(
        self, status: str, results: dict[str, Any], *, deadline_s: float | None = None
    ) -> None:
        """Write what is left and the final status, within ``deadline_s`` (default
        ``close_deadline_s``); whatever the database did not take by then is journalled."""
        if await aio.cancel_all(self._tasks):
            log.info("a sink task did not end when cancelled: left behind")
        self._submit_dirty()
        deadline = asyncio.get_running_loop().time() + (
            self.close_deadline_s if deadline_s is None else deadline_s
        )

        def left() -> float:
            return max(0.0, deadline - asyncio.get_running_loop().time())

        finished = False
        try:
            if not self._created:
                with contextlib.suppress(Exception):
                    await aio.wait_for(self._create(), left() or 0.001)
            if self._created and not await self.writer.close(timeout=left() or 0.001):
                await aio.wait_for(
                    self.store.finish_orchestration(self._orch_id, status, results),
                    left() or 0.001,
                )
                finished = True
        except Exception as exc:  # journalled below; the note says so
            log.info("could not finish the orchestration in the database", error=str(exc))
        finally:
            if not finished:
                self._journal(status, results)
            with contextlib.suppress(Exception):
                await aio.wait_for(self.store.close(), max(left(), 1.0))

    def _journal(self, status: str, results: dict[str, Any]) -> None:
        assert self._orch is not None
        instances, checkpoints = self.writer.take_unwritten()
        entry = JournalEntry(self._orch, instances, checkpoints, (status, results))
        self.journalled = write_journal(self.state_dir, entry)
        log.info("rows journalled", path=str(self.journalled), rows=entry.rows)
        self._note(
            f"database unreachable at the end: {entry.rows} row(s) and the final status "
            f"journalled to {self.journalled}; the next coordinator command that reaches "
            "the database writes them"
        )


class OrchestrationIdTakenError(CoordinatorError):
    """The orchestration id is already recorded in the database."""

    exit_code = 2

    def __init__(self, orchestration_id: str, where: str) -> None:
        super().__init__(
            f"orchestration id {orchestration_id!r} already exists in {where}; "
            "choose another --orchestration-id (or orchestration.id) or leave it out"
        )
