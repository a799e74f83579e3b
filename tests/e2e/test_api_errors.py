"""API error storms through the real claude CLI, run by the real engine, against the
scripted model server: what the status rows showed while the CLI retried, how the stormed
instances ended, and that a healthy instance next to them was not held up.

The 2.1.329 CLI's backoff (about 0.5, 1, 2 s ... with jitter) cannot be shortened from
the server (``retry-after`` is ignored, see coordinator/offline/server.py), so the
storms are capped with ``CLAUDE_CODE_MAX_RETRIES`` in the instances' config env.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from coordinator.claude_bin import PROJECT_LOCAL
from coordinator.engine.instance import Limits
from coordinator.engine.orchestrator import Orchestrator, RunOutcome
from coordinator.engine.state import InstanceState, Status
from coordinator.offline.server import ModelServer
from coordinator.status.rows import row_from_state
from tests.e2e.harness import base_env, offline_env, offline_plan
from tests.e2e.test_offline_run import respond, served_prefixes
from tests.engine.helpers import alive_cmdlines

pytestmark = [
    pytest.mark.claude,
    pytest.mark.skipif(
        not os.access(PROJECT_LOCAL, os.X_OK),
        reason=f"pinned claude CLI not installed at {PROJECT_LOCAL} (run make install)",
    ),
]

MAX_RETRIES = 3


class Observing(Orchestrator):
    """Records the status row each time the engine reports a change without tokens (an API
    retry, a denial) and at the end; snapshots everyone's status whenever one finishes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rows: dict[str, list[tuple[str, str]]] = {name: [] for name in self.states}
        self.at_finish: dict[str, dict[str, tuple[Status, int]]] = {}
        self.server: ModelServer | None = None

    def _row(self, state: InstanceState) -> None:
        row = row_from_state(state)
        self.rows[state.name].append((row.status, row.last_event))

    def on_status(self, state: InstanceState) -> None:
        self._row(state)
        super().on_status(state)

    def on_finished(self, state: InstanceState) -> None:
        assert self.server is not None
        self._row(state)
        self.at_finish[state.name] = {
            name: (other.status, self.server.served_count(name))
            for name, other in self.states.items()
        }
        super().on_finished(state)


async def run_observed(
    tmp_path: Path, instances: list[dict[str, Any]], script: dict[str, Any]
) -> tuple[Observing, RunOutcome, ModelServer]:
    plan = offline_plan(tmp_path, {"instances": instances}, "api-errors")
    async with ModelServer(script) as server:
        env = offline_env(server, tmp_path / "home")
        orch = Observing(plan, base_env=base_env(), limits=Limits(timeout=60), instance_env=env)
        orch.server = server
        outcome = await orch.run()
    for state in outcome.states:  # nothing of any instance survives the run
        assert alive_cmdlines(state.plan.session_id) == [], state.name
    return orch, outcome, server


def storm(status: int, **error: Any) -> dict[str, Any]:
    """Every request of the conversation answered with this HTTP error."""
    return {"responses": [], "after": {"error": {"status": status, **error}}}


def instance(name: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "command": f"work on {name}",
        "workspace": name,
        "allowed_tools": ["Bash"],
        "env": env or {},
    }


def retry_rows(orch: Observing, name: str) -> list[tuple[str, str]]:
    return [row for row in orch.rows[name] if "retry" in row[1]]


async def test_api_error_storms_surface_retries_fail_cleanly_and_spare_the_others(
    tmp_path: Path,
) -> None:
    capped = {"CLAUDE_CODE_MAX_RETRIES": str(MAX_RETRIES)}
    script = {
        "conversations": {
            "auth": storm(401),
            "busy": storm(529),
            "normal": {
                "responses": [
                    respond(0, tool={"name": "Bash", "input": {"command": "echo ok > out.txt"}}),
                    respond(1, text="done PROGRESS: 100%"),
                ]
            },
        }
    }
    orch, outcome, server = await run_observed(
        tmp_path,
        [instance("auth", capped), instance("busy", capped), instance("normal")],
        script,
    )
    by = {s.name: s for s in outcome.states}
    n = MAX_RETRIES

    # (a) while running, the status rows counted the retries 1..N, in order
    assert retry_rows(orch, "auth") == [
        ("running", f"auth error, retry {k}/{n}") for k in range(1, n + 1)
    ], orch.rows["auth"]
    assert retry_rows(orch, "busy") == [
        ("running", f"API overloaded, retry {k}/{n}") for k in range(1, n + 1)
    ], orch.rows["busy"]
    assert retry_rows(orch, "normal") == []

    # (b) then they failed, with an error naming the API error
    auth, busy = by["auth"], by["busy"]
    assert auth.status is Status.FAILED and auth.exit_code == 1
    assert auth.error is not None
    assert auth.error.startswith("success: API 401: Failed to authenticate. API Error: 401")
    assert busy.status is Status.FAILED and busy.exit_code == 1
    assert busy.error is not None and busy.error.startswith("success: API 529: API Error: 529")
    for state, kind, code in ((auth, "authentication_failed", 401), (busy, "overloaded", 529)):
        assert state.accountant.api_retries == {kind: n}
        assert state.accountant.usage.total == 0
        status, shown = orch.rows[state.name][-1]  # the row's final word
        assert status == "failed" and shown.startswith(f"success: API {code}: "), shown

    # (d) ground truth: the server answered each storm exactly N+1 times, all errors
    assert [s.status for s in server.served if s.key == "auth"] == [401] * (n + 1)
    assert [s.status for s in server.served if s.key == "busy"] == [529] * (n + 1)

    # (c) the normal instance completed, with exactly the tokens the server served ...
    normal = by["normal"]
    assert normal.status is Status.COMPLETED, (normal.error, list(normal.stderr_tail))
    prefixes = list(served_prefixes(server, "normal"))
    assert len(prefixes) == 2
    assert normal.accountant.usage == prefixes[-1]
    assert normal.accountant.tool_calls == {"Bash": 1}
    assert (tmp_path / "normal" / "out.txt").read_text() == "ok\n"
    # ... and was not held up by the storms: it finished while both were still running,
    # before the server had even received their last attempt
    others = orch.at_finish["normal"]
    for name in ("auth", "busy"):
        status, served = others[name]
        assert status is Status.RUNNING, (name, status)
        assert served < n + 1, (name, served)
    assert outcome.exit_code == 1


async def test_should_retry_false_fails_at_once(tmp_path: Path) -> None:
    """``x-should-retry: false`` on the error: no retry at all, for 401 and 529 alike.
    (Capped at one retry anyway, so that a regression fails fast instead of backing off
    for minutes.)"""
    capped = {"CLAUDE_CODE_MAX_RETRIES": "1"}
    script = {
        "conversations": {
            "auth": storm(401, should_retry=False),
            "busy": storm(529, should_retry=False),
        }
    }
    orch, outcome, server = await run_observed(
        tmp_path, [instance("auth", capped), instance("busy", capped)], script
    )
    by = {s.name: s for s in outcome.states}
    for name, status in (("auth", 401), ("busy", 529)):
        state = by[name]
        assert state.status is Status.FAILED and state.exit_code == 1
        assert state.error is not None and state.error.startswith(f"success: API {status}: ")
        assert state.accountant.api_retries == {}
        assert retry_rows(orch, name) == []
        assert server.served_count(name) == 1
