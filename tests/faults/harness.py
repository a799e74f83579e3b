"""A real ``coordinator run`` in a process of its own, over replay instances (the claude
stand-in), with its own state directory: what every fault test needs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from tests.engine.helpers import REPLAY, write_script
from tests.unit.streams import api_response, init, result, usage

COORDINATOR = [sys.executable, "-m", "coordinator.cli"]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a condition another process makes true (files, processes, rows)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def process_ended(pid: int) -> bool:
    """The process is gone or a zombie: an orphaned daemon is reparented to whatever PID 1
    the machine has, and not every init reaps (a container's often does not)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def lines_of(*chunks: bytes | list[bytes]) -> list[str]:
    out: list[str] = []
    for chunk in chunks:
        for raw in chunk if isinstance(chunk, list) else [chunk]:
            out.append(raw.decode().rstrip("\n"))
    return out


def answer(message_id: str, inp: int, out: int, cost: float = 0.01) -> list[str]:
    """An init line, one API response and the result that reconciles it."""
    return lines_of(init(), api_response(message_id, inp, out), result(usage(inp, out), cost=cost))


@dataclass
class CoordinatorRun:
    proc: subprocess.Popen[bytes]
    output: Path
    state_dir: Path
    stdout_path: Path
    stderr_path: Path

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def results(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.output.read_text())
        return data


def coordinator_env(state_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COORDINATOR_")}
    env.update({"NO_COLOR": "1", "COORDINATOR_STATE_DIR": str(state_dir), **extra})
    return env


def write_config(
    tmp_path: Path,
    scripts: dict[str, list[dict[str, Any]]],
    orchestration: dict[str, Any] | None = None,
) -> Path:
    """A config with one replay instance per script (no stagger, no progress prompt)."""
    instances = [
        {
            "command": "work",
            "name": name,
            "env": {"REPLAY_SCRIPT": str(write_script(tmp_path / f"{name}.replay.json", steps))},
        }
        for name, steps in scripts.items()
    ]
    config = tmp_path / "coordinator-config.json"
    config.write_text(
        json.dumps(
            {
                "orchestration": {
                    "progress_instructions": False,
                    "startup_delay": 0,
                    **(orchestration or {}),
                },
                "instances": instances,
            }
        )
    )
    return config


def start_run(
    tmp_path: Path,
    scripts: dict[str, list[dict[str, Any]]],
    *,
    orchestration: dict[str, Any] | None = None,
    args: Sequence[str] = ("--no-db",),
    env: dict[str, str] | None = None,
    state_dir: Path | None = None,
) -> CoordinatorRun:
    """``coordinator run`` (own session) over one replay instance per script."""
    config = write_config(tmp_path, scripts, orchestration)
    output = tmp_path / "results.json"
    state = state_dir or tmp_path / "state"
    out_path, err_path = tmp_path / "coordinator.stdout", tmp_path / "coordinator.stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            [
                *COORDINATOR,
                "run",
                "--config",
                str(config),
                "--claude-bin",
                REPLAY,
                "--output",
                str(output),
                "--workspace",
                str(tmp_path),
                "--status-report-interval",
                "0.5",
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            env={**coordinator_env(state), **(env or {})},
        )
    return CoordinatorRun(proc, output, state, out_path, err_path)


def coordinator(
    args: Sequence[str], state_dir: Path, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    """Any other coordinator command, to the end."""
    return subprocess.run(
        [*COORDINATOR, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=coordinator_env(state_dir, **env),
        stdin=subprocess.DEVNULL,
    )
