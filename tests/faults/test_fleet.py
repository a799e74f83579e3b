"""Several hosts, one orchestration: ``coordinator submit`` queues the instances, three
``coordinator runner`` processes (each a host of its own: its own HOME and state dir)
claim and run them on the same engine, a runner that is SIGKILLed loses its claims after
the lease and the others take them over, a runner stopped past its lease comes back to a
moved epoch and stops its copy. Real Postgres, real processes and signals; the replay
stand-in for claude (the fleet's mechanics are the point here, not the model)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.engine.helpers import REPLAY, alive_cmdlines
from tests.faults.harness import (
    COORDINATOR,
    answer,
    coordinator,
    coordinator_env,
    write_config,
)

pytestmark = [pytest.mark.postgres]

LEASE_S = "3"


@dataclass
class Host:
    """One runner process and the directories that make it a host of its own."""

    name: str
    proc: subprocess.Popen[bytes]
    state: Path
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_runner(
    tmp_path: Path, name: str, dsn: str, *, capacity: int = 1, labels: str | None = None
) -> Host:
    home = tmp_path / "hosts" / name
    (home / "home").mkdir(parents=True, exist_ok=True)
    state = home / "state"
    log = home / "runner.log"
    env = {**coordinator_env(state, COORDINATOR_LEASE_S=LEASE_S), "HOME": str(home / "home")}
    args = ["runner", "--database-url", dsn, "--capacity", str(capacity), "--name", name]
    if labels:
        args += ["--labels", labels]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*COORDINATOR, *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    return Host(name, proc, state, log)


def submit(
    tmp_path: Path, config: Path, dsn: str, orch_id: str, *extra: str, wait: bool = False
) -> subprocess.Popen[bytes]:
    out = tmp_path / f"submit-{orch_id}.out"
    with out.open("wb") as sink, (tmp_path / f"submit-{orch_id}.err").open("wb") as err:
        return subprocess.Popen(
            [
                *COORDINATOR,
                "submit",
                "--config",
                str(config),
                "--claude-bin",
                REPLAY,
                "--workspace",
                str(tmp_path),
                "--database-url",
                dsn,
                "--orchestration-id",
                orch_id,
                "--output",
                str(tmp_path / f"results-{orch_id}.json"),
                *(["--wait"] if wait else []),
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=err,
            start_new_session=True,
            env=coordinator_env(tmp_path / "submit-state", COORDINATOR_LEASE_S=LEASE_S),
        )


def status_json(tmp_path: Path, dsn: str, orch_id: str) -> dict[str, Any]:
    done = coordinator(
        ["status", orch_id, "--json", "--database-url", dsn], tmp_path / "status-state"
    )
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def rows(tmp_path: Path, dsn: str, orch_id: str) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in status_json(tmp_path, dsn, orch_id)["instances"]}


def slow_answer(tag: str, inp: int, out: int, seconds: float) -> list[dict[str, Any]]:
    """Works ``seconds`` (a sleep) and then answers: one API response and its result."""
    lines = answer(f"msg-{tag}", inp, out)
    return [{"lines": lines[:1]}, {"sleep": seconds}, {"lines": lines[1:]}]


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    started: list[Host] = []
    yield started
    for host in started:  # whatever the test did: no runner left behind
        if host.proc.poll() is None:
            os.killpg(host.proc.pid, signal.SIGKILL)
            host.proc.wait()


def test_one_orchestration_spread_over_three_runners(
    tmp_path: Path, pg_dsn: str, hosts: list[Host]
) -> None:
    """Submit queues six instances; three runners (capacity 1 each, three homes) share
    them; ``submit --wait`` writes the results once all ended; tokens exact per instance;
    ``status`` lists the runners; no process is left."""
    scripts = {f"w{i}": slow_answer(f"w{i}", 100 + i, 10 + i, 1.5) for i in range(6)}
    config = write_config(tmp_path, scripts)
    waiter = submit(tmp_path, config, pg_dsn, "fleet-a", wait=True)
    hosts += [start_runner(tmp_path, f"r{k}", pg_dsn) for k in range(3)]
    assert waiter.wait(timeout=120) == 0, (tmp_path / "submit-fleet-a.err").read_text()
    assert (tmp_path / "submit-fleet-a.out").read_text().strip() == "fleet-a"
    results = json.loads((tmp_path / "results-fleet-a.json").read_text())
    by_name = {i["name"]: i for i in results["instances"]}
    for i in range(6):
        inst = by_name[f"w{i}"]
        assert inst["status"] == "completed", inst
        assert (inst["input_tokens"], inst["output_tokens"]) == (100 + i, 10 + i)
    assert results["totals"]["total_tokens"] == sum(110 + 2 * i for i in range(6))
    snap = status_json(tmp_path, pg_dsn, "fleet-a")
    assert snap["orchestration"]["status"] == "completed"
    names = sorted(r["name"] for r in snap["runners"])
    assert names == ["r0", "r1", "r2"]  # every runner held some of them
    for r in snap["runners"]:
        assert r["capacity"] == 1 and r["held"] == []
    for host in hosts:
        assert host.stop() == 0, host.text()
    assert alive_cmdlines(str(tmp_path)) == []
