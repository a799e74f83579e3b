"""Fixtures for the offline model server tests: running the real pinned claude CLI."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from coordinator.claude_bin import PROJECT_LOCAL


@dataclass
class ClaudeRun:
    """One finished headless claude run: exit code, parsed stream-json events, stderr."""

    returncode: int
    events: list[dict[str, Any]]
    stderr: str
    workspace: Path
    session_id: str
    seconds: float

    @property
    def result(self) -> dict[str, Any]:
        results = [e for e in self.events if e.get("type") == "result"]
        assert len(results) == 1, f"expected one result event, got {len(results)}: {self.stderr}"
        return results[0]

    def of(self, type_: str, subtype: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e.get("type") == type_ and (subtype is None or e.get("subtype") == subtype)
        ]


class RunClaude(Protocol):
    def __call__(
        self,
        base_url: str,
        prompt: str = ...,
        *,
        key: str | None = ...,
        env: Mapping[str, str] | None = ...,
        timeout: float = ...,
    ) -> ClaudeRun: ...


def _hermetic_env(home: Path) -> dict[str, str]:
    """The parent env without anything that could point the CLI elsewhere."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "CLAUDECODE" and not k.startswith(("ANTHROPIC_", "CLAUDE_"))
    }
    env.update(
        HOME=str(home),
        CLAUDE_CONFIG_DIR=str(home / ".claude"),
        IS_SANDBOX="1",  # bypassPermissions is refused as root without it
        ANTHROPIC_API_KEY="offline-test",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_AUTOUPDATER="1",
    )
    return env


@pytest.fixture
def claude_bin() -> str:
    if not os.access(PROJECT_LOCAL, os.X_OK):
        pytest.skip(f"pinned claude CLI not installed at {PROJECT_LOCAL} (run make install)")
    return str(PROJECT_LOCAL)


@pytest.fixture
def run_claude(claude_bin: str, tmp_path_factory: pytest.TempPathFactory) -> RunClaude:
    def run(
        base_url: str,
        prompt: str = "Do the scripted work.",
        *,
        key: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 90,
    ) -> ClaudeRun:
        root = tmp_path_factory.mktemp("claude")
        workspace, home = root / "workspace", root / "home"
        workspace.mkdir()
        home.mkdir()
        child_env = _hermetic_env(home) | {"ANTHROPIC_BASE_URL": base_url} | dict(env or {})
        if key is not None:
            child_env["ANTHROPIC_CUSTOM_HEADERS"] = f"X-Coordinator-Instance: {key}"
        session_id = str(uuid.uuid4())
        argv = [
            claude_bin,
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--include-partial-messages",
            "--session-id",
            session_id,
            "--permission-mode",
            "bypassPermissions",
            "--",
            prompt,
        ]
        began = time.monotonic()
        proc = subprocess.Popen(
            argv,
            cwd=workspace,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        finally:
            # The CLI leads its own process group: take tool children down with it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        events = [json.loads(line) for line in stdout.split("\n") if line.startswith("{")]
        return ClaudeRun(
            proc.returncode, events, stderr, workspace, session_id, time.monotonic() - began
        )

    return run
