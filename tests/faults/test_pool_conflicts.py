"""Two real claude instances write the same file in one workspace: the conflict is
reported live (a note while the second still runs), in the results and in Postgres; in
block mode the second write is refused BEFORE it happens by claude's own PreToolUse hook
(our program, asking the coordinator), the refusal names the owner, and the file keeps the
first instance's content."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from coordinator.db.postgres import PostgresStore
from coordinator.db.rows import OrchestrationRow
from coordinator.engine.instance import Limits
from coordinator.engine.orchestrator import Orchestrator, RunOutcome
from coordinator.engine.state import InstanceState, Status
from coordinator.offline.server import ModelServer
from coordinator.pool.entries import Kind
from runner.events import Event, UserToolResults
from tests.e2e.harness import base_env, offline_env, offline_plan

pytestmark = [pytest.mark.claude, pytest.mark.postgres]


def writes(content: str) -> dict[str, Any]:
    return {
        "tool_uses": [{"name": "Write", "input": {"file_path": "src/app.py", "content": content}}]
    }


def config(mode: str) -> dict[str, Any]:
    # lockstep: beta's second turn (its write) waits until alpha finished its only turn
    return {
        "orchestration": {"pool": {"conflicts": mode}, "sync": {"mode": "lockstep"}},
        "instances": [
            {"name": "alpha", "command": "write the app", "allowed_tools": ["Write"]},
            {
                "name": "beta",
                "pre_commands": ["look around"],
                "command": "write the app too",
                "allowed_tools": ["Write"],
            },
        ],
    }


SCRIPT = {
    "conversations": {
        "alpha": {"responses": [writes("alpha = 1\n"), {"text": "alpha wrote it"}]},
        "beta": {"responses": [{"text": "looked"}, writes("beta = 2\n"), {"text": "beta tried"}]},
    }
}


class Watching(Orchestrator):
    """Keeps every tool result text and, for each note, whether beta was still running."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tool_results: dict[str, list[tuple[bool, str]]] = {}
        self.live_notes: list[tuple[str, bool]] = []

    def on_stream(self, state: InstanceState, event: Event) -> None:
        if isinstance(event, UserToolResults):
            for res in event.results:
                self.tool_results.setdefault(state.name, []).append((res.is_error, res.text))
        super().on_stream(state, event)

    def _note(self, text: str) -> None:
        beta = self.states.get("beta") if hasattr(self, "states") else None
        self.live_notes.append((text, beta is not None and not beta.status.finished))
        super()._note(text)


async def run(tmp_path: Path, mode: str, store: PostgresStore) -> tuple[Watching, RunOutcome]:
    orch_id = f"orch-conflict-{mode}"
    plan = offline_plan(tmp_path, config(mode), orch_id)
    await store.create_orchestration(
        OrchestrationRow(id=orch_id, status="running", host="test", sync_mode="lockstep")
    )
    async with ModelServer(SCRIPT) as server:
        orch = Watching(
            plan,
            base_env=base_env(),
            limits=Limits(timeout=120),
            instance_env=offline_env(server, tmp_path / "home"),
            guardian=False,
            pool_store=store,
        )
        outcome = await orch.run()
    for state in outcome.states:
        assert state.status is Status.COMPLETED, (state.error, list(state.stderr_tail))
    return orch, outcome


async def test_warn_reports_the_conflict_live_in_results_and_database(
    tmp_path: Path, pg_store: PostgresStore
) -> None:
    orch, outcome = await run(tmp_path, "warn", pg_store)
    text = "conflict: src/app.py written by alpha and beta"
    assert (text, True) in orch.live_notes  # said while beta was still running
    assert outcome.pool["conflicts"] == [
        {"path": "src/app.py", "owner": "alpha", "writers": ["alpha", "beta"], "refused": []}
    ]
    stored = await pg_store.list_pool_entries("orch-conflict-warn")
    conflicts = [e for e in stored if e.kind is Kind.CONFLICT]
    assert [(e.instance, e.action, e.summary, e.affects) for e in conflicts] == [
        ("beta", "conflicted", text, ("src/app.py",))
    ]
    assert (tmp_path / "src" / "app.py").read_text() == "beta = 2\n"  # warn: it happened


async def test_block_refuses_the_second_writer_before_it_writes(
    tmp_path: Path, pg_store: PostgresStore
) -> None:
    orch, outcome = await run(tmp_path, "block", pg_store)
    assert (tmp_path / "src" / "app.py").read_text() == "alpha = 1\n"  # the owner's content
    refused = [text for is_error, text in orch.tool_results["beta"] if is_error]
    assert len(refused) == 1
    assert "src/app.py is owned by instance alpha" in refused[0]  # what the model read
    assert all(not is_error for is_error, _ in orch.tool_results["alpha"])
    text = "conflict: src/app.py written by alpha; refused to beta (owned by alpha)"
    assert (text, True) in orch.live_notes
    assert outcome.pool["conflicts"] == [
        {"path": "src/app.py", "owner": "alpha", "writers": ["alpha"], "refused": ["beta"]}
    ]
    beta = next(s for s in outcome.states if s.name == "beta")
    assert beta.accountant.permission_denials == {"Write": 1}  # the CLI counts it refused
    stored = await pg_store.list_pool_entries("orch-conflict-block")
    assert [(e.instance, e.action) for e in stored if e.kind is Kind.CONFLICT] == [
        ("beta", "refused")
    ]
    # beta's refused write is no file entry of beta's
    assert not [e for e in stored if e.kind is Kind.FILE and e.instance == "beta"]
    socket_dir = orch.pool._socket_dir  # the hook's socket directory is gone with the run
    assert socket_dir is not None and not socket_dir.exists()
