"""A fleet runner's journal (rows it could not write while the database was away) is
replayed fenced by its claim's epoch: written while the instance row still carries it,
dropped (and said so) once another runner took the instance over."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.db.journal import (
    JournalEntry,
    pending_journals,
    read_journal,
    replay_journals,
    write_journal,
)
from coordinator.db.memory import MemoryStore
from coordinator.db.postgres import PostgresStore
from coordinator.db.rows import CheckpointRow, InstanceRow, OrchestrationRow

ORCH = OrchestrationRow(id="orch-j", status="running", host="h", sync_mode="free")


def entry(status: str, epoch: int | None) -> JournalEntry:
    row = InstanceRow("orch-j", "x", status, total_tokens=7)
    mark = CheckpointRow("orch-j", "x", "50%", 50.0, 1)
    return JournalEntry(ORCH, [row], [mark], None, epoch)


def test_the_claim_epoch_survives_the_journal_file(tmp_path: Path) -> None:
    path = write_journal(tmp_path, entry("retrying", 3))
    assert read_journal(path).claim_epoch == 3
    assert read_journal(write_journal(tmp_path, entry("retrying", None))).claim_epoch is None


@pytest.mark.postgres
async def test_a_claims_journal_is_written_only_while_the_claim_holds(
    tmp_path: Path, pg_store: PostgresStore
) -> None:
    await pg_store.create_orchestration(ORCH)
    await pg_store.upsert_instances([InstanceRow("orch-j", "x", "running")])
    await pg_store.pool.execute("UPDATE instances SET claim_epoch = 2 WHERE name = 'x'")
    write_journal(tmp_path, entry("retrying", 1))  # a runner that lost its claim meanwhile
    [line] = await replay_journals(pg_store, tmp_path)
    assert "dropped: another runner took it over" in line
    assert pending_journals(tmp_path) == []
    [row] = await pg_store.list_instances("orch-j")
    assert (row.status, row.total_tokens) == ("running", 0)  # the new holder's row, as it was
    assert await pg_store.list_checkpoints("orch-j") == []
    write_journal(tmp_path, entry("completed", 2))  # the holder's own journal
    [line] = await replay_journals(pg_store, tmp_path)
    assert line.startswith("replayed 2 journalled row(s)")
    [row] = await pg_store.list_instances("orch-j")
    assert (row.status, row.total_tokens) == ("completed", 7)
    assert len(await pg_store.list_checkpoints("orch-j")) == 1


async def test_a_store_that_cannot_fence_never_writes_a_claims_rows(tmp_path: Path) -> None:
    store = MemoryStore()
    await store.create_orchestration(ORCH)
    write_journal(tmp_path, entry("retrying", 1))
    [line] = await replay_journals(store, tmp_path)
    assert "dropped" in line and await store.list_instances("orch-j") == []
