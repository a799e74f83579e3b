"""The real pinned claude CLI against the offline server's unified rate-limit headers.

Pins the facts in coordinator/limits/CLI-FACTS.md: which login makes the CLI read the headers, the
``rate_limit_event`` lines it writes and when, how a rejected request ends, resuming the
session afterwards, and the CLI's answers to a reused or unknown session id.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from coordinator.limits import RateLimited, limit_of
from coordinator.offline import serve_in_thread
from runner.events import RateLimit, Result, parse_line
from tests.offline.conftest import _hermetic_env

pytestmark = pytest.mark.claude

LIMIT_TEXT = re.compile(r"^You've hit your 5-hour limit · resets \d{1,2}:\d{2}[ap]m \(UTC\)$")


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    events: list[dict[str, Any]]

    def of(self, type_: str, subtype: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e.get("type") == type_ and (subtype is None or e.get("subtype") == subtype)
        ]

    @property
    def result(self) -> dict[str, Any]:
        results = self.of("result")
        assert len(results) == 1, (self.stdout, self.stderr)
        return results[0]

    def typed(self, type_: str) -> list[Any]:
        return [parse_line(json.dumps(e).encode()) for e in self.of(type_)]


class Claude:
    """Headless claude runs sharing one HOME and workspace (so sessions can be resumed)."""

    def __init__(self, binary: str, root: Path, base_url: str) -> None:
        self.binary, self.base_url = binary, base_url
        self.home, self.workspace = root / "home", root / "workspace"
        self.home.mkdir()
        self.workspace.mkdir()

    def __call__(self, *args: str, oauth: bool = True, env: dict[str, str] | None = None) -> Run:
        child_env = _hermetic_env(self.home) | {"ANTHROPIC_BASE_URL": self.base_url, "TZ": "UTC"}
        if oauth:
            del child_env["ANTHROPIC_API_KEY"]
            child_env["CLAUDE_CODE_OAUTH_TOKEN"] = "offline-oauth-token"
        child_env |= env or {}
        argv = [self.binary, "-p", "--output-format", "stream-json", "--verbose"]
        argv += ["--permission-mode", "bypassPermissions", *args]
        proc = subprocess.Popen(
            argv,
            cwd=self.workspace,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(timeout=90)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        events = [json.loads(line) for line in stdout.split("\n") if line.startswith("{")]
        return Run(proc.returncode, stdout, stderr, events)


def _claude(claude_bin: str, tmp_path: Path, url: str) -> Claude:
    return Claude(claude_bin, tmp_path, url)


def _bash(command: str) -> list[dict[str, Any]]:
    return [{"name": "Bash", "input": {"command": command}}]


def test_oauth_login_reads_the_headers_and_a_rejection_ends_the_run(
    claude_bin: str, tmp_path: Path
) -> None:
    reset = int(time.time()) + 3600
    limit = {"resets_at": reset, "utilization_7d": 0.1}
    script = {
        "default": {
            "responses": [
                {"tool_uses": _bash("echo 1"), "rate_limit": limit | {"utilization_5h": 0.3}},
                {"tool_uses": _bash("echo 2"), "rate_limit": limit | {"utilization_5h": 0.3}},
                {
                    "tool_uses": _bash("echo 3"),
                    "rate_limit": limit | {"status": "allowed_warning", "utilization_5h": 0.82},
                },
                {"rate_limit": limit | {"status": "rejected", "utilization_5h": 1.0}},
            ]
        }
    }
    with serve_in_thread(script) as server:
        run = _claude(claude_bin, tmp_path, server.url)("--", "work")

    infos = [e["rate_limit_info"] for e in run.of("rate_limit_event")]
    # Written only when the info changes: the repeated "allowed 30%" gives no second line.
    assert [i["status"] for i in infos] == ["allowed", "allowed_warning", "rejected"]
    assert infos[0] == {
        "status": "allowed",
        "resetsAt": reset,
        "rateLimitType": "five_hour",
        "isUsingOverage": False,
        "unifiedWindows": {
            "five_hour": {"utilization": 0.3, "resetsAt": reset, "status": "allowed"},
            "seven_day": {
                "utilization": 0.1,
                "resetsAt": infos[0]["unifiedWindows"]["seven_day"]["resetsAt"],
                "status": "allowed",
            },
        },
    }
    warning = infos[1]
    assert (warning["utilization"], warning["surpassedThreshold"]) == (0.82, 0.82)
    assert "utilization" not in infos[0] and "utilization" not in infos[2]
    assert (infos[2]["resetsAt"], infos[2]["rateLimitType"]) == (reset, "five_hour")
    assert run.of("system", "init")[0]["apiKeySource"] == "none"

    # A rejection is not retried: four requests in all, no api_retry.
    assert [s.status for s in server.served] == [200, 200, 200, 429]
    assert run.of("system", "api_retry") == []
    result = run.result
    assert run.returncode == 1 and run.stderr == ""
    assert result["subtype"] == "success" and result["is_error"] is True
    assert (result["api_error_status"], result["api_error"]) == (429, "usage_limit_reached")
    assert (result["api_error_type"], result["terminal_reason"]) == (
        "rate_limit_error",
        "api_error",
    )
    assert LIMIT_TEXT.match(result["result"]), result["result"]

    # The typed events and the rule built on them.
    typed = run.typed("rate_limit_event")
    assert all(isinstance(e, RateLimit) for e in typed)
    assert typed[1].warning and typed[1].utilization == pytest.approx(0.82)
    (parsed,) = run.typed("result")
    assert isinstance(parsed, Result)
    assert limit_of(parsed, typed[-1]) == RateLimited(reset, "five_hour", "event", result["result"])
    # The text alone (no event) gives the same reset, to the minute.
    from_text = limit_of(parsed, None)
    assert from_text is not None and from_text.resets_at is not None
    assert reset - 60 < from_text.resets_at <= reset


def test_a_top_level_warning_alone_reads_as_allowed(claude_bin: str, tmp_path: Path) -> None:
    # Without the per-window headers the CLI does not warn: the server must send them.
    script = {
        "default": {"responses": [{"text": "hi", "rate_limit": {"status": "allowed_warning"}}]}
    }
    with serve_in_thread(script) as server:
        run = _claude(claude_bin, tmp_path, server.url)("--", "work")
    # The server's representative window gets -status and -surpassed-threshold (0.75 default).
    assert [e["rate_limit_info"]["status"] for e in run.of("rate_limit_event")] == [
        "allowed_warning"
    ]
    assert run.of("rate_limit_event")[0]["rate_limit_info"]["surpassedThreshold"] == 0.75


def test_api_key_gets_no_event_and_the_429_is_retried(claude_bin: str, tmp_path: Path) -> None:
    script = {"default": {"responses": [{"rate_limit": {"status": "rejected"}, "repeat": 3}]}}
    with serve_in_thread(script) as server:
        run = _claude(claude_bin, tmp_path, server.url)(
            "--", "work", oauth=False, env={"CLAUDE_CODE_MAX_RETRIES": "1"}
        )
    assert run.of("rate_limit_event") == []
    assert [s.status for s in server.served] == [429, 429]
    assert [e["error_status"] for e in run.of("system", "api_retry")] == [429]
    result = run.result
    assert run.returncode == 1 and result["is_error"] is True
    assert result["api_error_status"] == 429 and result.get("api_error") != "usage_limit_reached"
    assert result["result"].startswith("API Error: Request rejected (429) · ")
    (parsed,) = run.typed("result")
    assert limit_of(parsed, None) is None  # an ordinary error, not a usage limit


def test_resume_after_a_rejection_continues_the_conversation(
    claude_bin: str, tmp_path: Path
) -> None:
    script = {
        "default": {
            "responses": [
                {
                    "tool_uses": [
                        {"name": "Bash", "input": {"command": "echo 1"}, "id": "toolu_one"}
                    ]
                },
                {"rate_limit": {"status": "rejected", "resets_in_s": 5}},
                {"text": "finished"},
            ]
        }
    }
    session = str(uuid.uuid4())
    with serve_in_thread(script) as server:
        claude = _claude(claude_bin, tmp_path, server.url)
        first = claude("--session-id", session, "--", "do the work")
        assert first.returncode == 1 and first.result["api_error"] == "usage_limit_reached"
        resumed = claude("--resume", session, "--", "continue where you stopped")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.result["result"] == "finished" and resumed.result["session_id"] == session
    assert resumed.of("system", "init")[0]["session_id"] == session
    requests = server.requests
    assert [r.session_id for r in requests] == [session] * 3
    # The resumed request carries the earlier messages: the rejected request's four
    # (prompt, environment, tool_use, tool_result) with "continue" appended to the last one;
    # the CLI's synthetic "You've hit your limit" message is not sent.
    assert [r.message_count for r in requests] == [2, 4, 4]
    assert requests[2].tool_result_ids == ("toolu_one",)


def test_reused_session_id_and_unknown_resume(claude_bin: str, tmp_path: Path) -> None:
    session = str(uuid.uuid4())
    with serve_in_thread({"default": {"responses": [{"text": "one"}]}}) as server:
        claude = _claude(claude_bin, tmp_path, server.url)
        assert claude("--session-id", session, "--", "hi").returncode == 0
        reused = claude("--session-id", session, "--", "again")
        missing = str(uuid.uuid4())
        unknown = claude("--resume", missing, "--", "continue")
        assert len(server.served) == 1  # neither reached the API
    assert (reused.returncode, reused.stdout) == (1, "")
    assert reused.stderr == f"Error: Session ID {session} is already in use.\n"
    assert unknown.returncode == 1
    assert unknown.stderr == f"No conversation found with session ID: {missing}\n"
    result = unknown.result
    assert result["subtype"] == "error_during_execution" and result["is_error"] is True
    assert result["errors"] == [f"No conversation found with session ID: {missing}"]
    assert result["session_id"] == missing and unknown.of("system", "init") == []


def test_rejected_but_paid_by_overage_goes_on(claude_bin: str, tmp_path: Path) -> None:
    limit = {"status": "rejected", "overage_status": "allowed", "utilization_5h": 1.0}
    script = {"default": {"responses": [{"text": "paid", "rate_limit": limit}]}}
    with serve_in_thread(script) as server:
        run = _claude(claude_bin, tmp_path, server.url)("--", "work")
    assert run.returncode == 0 and run.result["result"] == "paid"
    (info,) = [e["rate_limit_info"] for e in run.of("rate_limit_event")]
    assert (info["status"], info["overageStatus"], info["isUsingOverage"]) == (
        "rejected",
        "allowed",
        True,
    )
    (event,) = run.typed("rate_limit_event")
    assert event.rejected and not event.limited
    (parsed,) = run.typed("result")
    assert limit_of(parsed, event) is None
