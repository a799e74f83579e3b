"""Postgres goes away during a run: the run ends on time, nothing is dropped.

Real Postgres (an embedded server of the test's own, stopped and started by the test), a
real ``coordinator run`` process, replay instances. What must hold:

- the run ends within the final flush's deadline, not never;
- the user sees one line that the database went away (no driver traceback) and one that
  says where the unwritten rows went;
- the rows go to a journal in the state directory and the next coordinator command that
  reaches the database replays them (one line), so the database ends up with every row;
- a signal during the final flush journals at once instead of dropping the buffered rows.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest

from coordinator.db import open_store
from tests.faults.harness import CoordinatorRun, answer, coordinator, start_run, wait_for
from tests.pg import DedicatedServer

pytestmark = pytest.mark.postgres

DEADLINE_S = 3.0  # the final flush: short for the first test


def outage_run(
    tmp_path: Path, server: DedicatedServer, *, orch_id: str, close_timeout: float = DEADLINE_S
) -> tuple[CoordinatorRun, Path]:
    """``a`` starts, says so, waits for the go-ahead, then finishes; ``b`` finishes at once."""
    started, go = tmp_path / "a.started", tmp_path / "a.go"
    run = start_run(
        tmp_path,
        {
            "a": [
                {"lines": answer("m1", 100, 20)[:2]},
                {"marker": str(started)},
                {"wait_file": str(go)},
                {"lines": answer("m1", 100, 20)[2:]},
            ],
            "b": [{"lines": answer("m2", 7, 3, cost=0.02)}],
        },
        args=["--database-url", server.dsn, "--orchestration-id", orch_id],
        env={"COORDINATOR_DB_CLOSE_TIMEOUT": str(close_timeout)},
    )
    wait_for(started.exists, 30, "instance a to start")
    return run, go


async def _rows(dsn: str, orch_id: str) -> tuple[str, dict[str, tuple[str, int]], list[str]]:
    store = await open_store(dsn)
    try:
        orch = await store.get_orchestration(orch_id)
        assert orch is not None
        instances = {
            r.name: (r.status, r.total_tokens) for r in await store.list_instances(orch_id)
        }
        checkpoints = [
            f"{c.scenario_id}:{c.milestone_name}" for c in await store.list_checkpoints(orch_id)
        ]
        return orch.status, instances, sorted(checkpoints)
    finally:
        await store.close()


def test_database_gone_at_the_end_journals_and_the_next_command_replays(
    tmp_path: Path, pg_dedicated_server: DedicatedServer
) -> None:
    run, go = outage_run(tmp_path, pg_dedicated_server, orch_id="outage-end")
    pg_dedicated_server.stop()
    go.touch()
    stopped = time.monotonic()
    code = run.wait(timeout=60)
    took = time.monotonic() - stopped
    stderr = run.stderr + run.stdout

    assert code == 0, stderr
    assert took < DEADLINE_S + 15, f"exit took {took:.1f}s with the database down"
    results = run.results()
    assert {i["name"]: i["status"] for i in results["instances"]} == {
        "a": "completed",
        "b": "completed",
    }
    assert "Traceback" not in stderr
    # the outage is said once to the user (the control channel may also log its retry)
    notes = [ln for ln in stderr.splitlines() if ln.startswith("! database unavailable")]
    assert len(notes) == 1, stderr
    journals = sorted((run.state_dir / "journal").glob("*.jsonl"))
    assert len(journals) == 1
    assert f"journalled to {journals[0]}" in stderr

    pg_dedicated_server.start()
    shown = coordinator(
        ["status", "outage-end", "--json", "--database-url", pg_dedicated_server.dsn],
        run.state_dir,
    )
    assert shown.returncode == 0, shown.stderr
    assert "replayed" in shown.stderr and "outage-end" in shown.stderr
    assert json.loads(shown.stdout)["orchestration"]["status"] == "completed"
    assert not list((run.state_dir / "journal").glob("*.jsonl"))

    status, instances, checkpoints = asyncio.run(_rows(pg_dedicated_server.dsn, "outage-end"))
    assert status == "completed"
    assert instances == {"a": ("completed", 120), "b": ("completed", 10)}
    milestones = ["30%", "50%", "70%", "90%", "completed", "started"]
    assert checkpoints == [f"{n}:{m}" for n in ("a", "b") for m in milestones]


def test_a_signal_during_the_final_flush_journals_at_once(
    tmp_path: Path, pg_dedicated_server: DedicatedServer
) -> None:
    run, go = outage_run(tmp_path, pg_dedicated_server, orch_id="outage-signal", close_timeout=60)
    pg_dedicated_server.stop()
    go.touch()
    # The results are written just before the final flush starts waiting for the database.
    wait_for(run.output.exists, 30, "the results file")
    run.proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    code = run.wait(timeout=30)
    assert time.monotonic() - sent < DEADLINE_S, "the signal did not cut the flush short"
    assert code == 0, run.stderr  # every instance had completed
    journals = list((run.state_dir / "journal").glob("*.jsonl"))
    assert len(journals) == 1, run.stderr
    lines = journals[0].read_bytes().splitlines()
    kinds = [json.loads(line)["kind"] for line in lines]
    assert kinds[0] == "orchestration" and kinds[-1] == "finish"
    assert kinds.count("instance") == 2  # both instances' final snapshots

    pg_dedicated_server.start()
    shown = coordinator(
        ["history", "--database-url", pg_dedicated_server.dsn],
        run.state_dir,
    )
    assert shown.returncode == 0, shown.stderr
    assert "replayed" in shown.stderr
    _status, instances, _checkpoints = asyncio.run(_rows(pg_dedicated_server.dsn, "outage-signal"))
    assert instances["a"] == ("completed", 120) and instances["b"] == ("completed", 10)
