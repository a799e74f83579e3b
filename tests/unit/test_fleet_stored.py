"""A runner builds each claimed run's plan once, however many of its instances it claims at
once: every engine of the run shares that plan (each used to build its own, concurrently:
a plan and its config per held engine, ~7 MB each at 1,000 instances)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from coordinator.fleet import runner as runner_mod
from coordinator.fleet.store import RunnerIdentity
from coordinator.settings import Settings


class _Store:
    """Only what ``Runner._stored`` reads of the store: the orchestration row, once the
    test opens the gate (by then every claim has asked)."""

    pool = None

    def __init__(self) -> None:
        self.reads = 0
        self.gate = asyncio.Event()

    async def get_orchestration(self, orchestration_id: str) -> object:
        self.reads += 1
        await self.gate.wait()
        return object()


def test_instances_claimed_together_share_one_build_of_their_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds: list[str] = []

    class _Run:
        class req:  # the attribute StoredRun carries
            offline = False

    def fake_stored_run(row: object, settings: Settings, url: str | None, **kw: Any) -> _Run:
        builds.append(threading.current_thread().name)
        return _Run()

    monkeypatch.setattr(runner_mod, "stored_run", fake_stored_run)
    store = _Store()
    me = RunnerIdentity(uuid.uuid4(), "r", "h", 1, 20, (), 30.0)
    runner = runner_mod.Runner(
        me,
        store=store,  # type: ignore[arg-type]
        queue=None,  # type: ignore[arg-type]
        dsn="postgresql://unused",
        masked="postgresql://unused",
        settings=Settings(state_dir=tmp_path),
        console=Console(file=None, quiet=True),
        database_url=None,
        base_env={},
    )

    async def claims() -> list[object]:
        tasks = [asyncio.ensure_future(runner._stored("orch-1")) for _ in range(20)]
        await asyncio.sleep(0)  # one turn of the loop: each claim runs to its first wait
        store.gate.set()
        return await asyncio.gather(*tasks)

    runs = asyncio.run(claims())
    assert len(builds) == 1, f"{len(builds)} builds of one run's plan"
    assert store.reads == 1
    assert all(run is runs[0] for run in runs)
