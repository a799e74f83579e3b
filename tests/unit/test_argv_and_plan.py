from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from coordinator.config import parse_config
from coordinator.config.models import PermissionMode, SyncMode
from coordinator.dryrun import bypass_refusal, render_json, render_text
from coordinator.plan import RunOptions, RunPlan, build_plan
from coordinator.sessions import session_uuid
from runner.argv import LaunchSpec, build_argv

NOW = datetime(2026, 11, 21, 3, 0, tzinfo=UTC)


def plan_of(data: Mapping[str, Any], tmp_path: Path, **opts: Any) -> RunPlan:
    return build_plan(
        parse_config(data),
        RunOptions(**opts),
        claude_bin="claude",
        config_path=None,
        cwd=tmp_path,
        now=NOW,
    )


def test_argv_has_required_stream_flags_and_prompt_after_double_dash() -> None:
    argv = build_argv(
        "claude",
        LaunchSpec(session_id="s", prompt="/maketests backend", allowed_tools=("Bash", "Edit")),
    )
    assert argv[:5] == ["claude", "-p", "--output-format", "stream-json", "--verbose"]
    assert "--include-partial-messages" in argv
    assert "--allowedTools=Bash,Edit" in argv  # '=' form: the flag is variadic
    assert argv[-2:] == ["--", "/maketests backend"]
    assert argv[argv.index("--permission-mode") + 1] == "acceptEdits"


def test_multi_turn_uses_stream_json_input_and_no_prompt() -> None:
    argv = build_argv("claude", LaunchSpec(session_id="s", prompt=None, resume=True))
    assert "--input-format" in argv and "--" not in argv
    assert argv[argv.index("--resume") + 1] == "s"


def test_session_ids() -> None:
    given = str(uuid.uuid4())
    ws = Path("/w")
    assert session_uuid("o", "n", given, ws) == given
    named = session_uuid("o", "n", "my-session", ws)
    assert uuid.UUID(named).version == 5
    assert named == session_uuid("o", "other-name", "my-session", ws)  # keyed by session name
    assert named == session_uuid("o2", "n", "my-session", ws)  # the same in every run
    assert named != session_uuid("o", "n", "my-session", Path("/elsewhere"))
    assert session_uuid("o", "n", None, ws) != session_uuid("o2", "n", None, ws)


def test_plan_stagger_budgets_and_overrides(tmp_path: Path) -> None:
    data = {
        "orchestration": {"startup_delay": 2, "budget": {"command_budgets": {"/a": 10}}},
        "instances": [
            {"command": "/a x", "name": "one"},
            {"command": "/a y", "name": "two", "steps": ["next"], "permission_mode": "plan"},
            {"command": "free text", "name": "three"},
        ],
    }
    plan = plan_of(
        data,
        tmp_path,
        command_budgets={"/b": 5},
        sync_mode=SyncMode.LOCKSTEP,
        orchestration_id="fixed",
    )
    assert [i.offset_s for i in plan.instances] == [0, 2, 4]
    assert plan.budget.command_budgets == {"/a": 10, "/b": 5}
    assert plan.sync.mode is SyncMode.LOCKSTEP
    one, two, three = plan.instances
    assert one.permission_mode is PermissionMode.ACCEPT_EDITS  # the default
    assert two.permission_mode is PermissionMode.PLAN
    assert two.streams_input and two.turns == ("/a y", "next")
    assert "--input-format" in two.argv
    assert three.slash_command is None
    assert one.session_id == session_uuid("fixed", "one", None, Path("/unused"))


def test_dry_run_masks_secrets_and_warns_about_bypass(tmp_path: Path) -> None:
    data = {
        "instances": [
            {
                "command": "do it",
                "name": "x",
                "permission_mode": "bypassPermissions",
                "env": {"MY_API_KEY": "sk-very-secret-value"},
                "append_system_prompt": "the key is sk-very-secret-value",
            }
        ]
    }
    plan = plan_of(data, tmp_path)
    text = render_text(plan, environ={})
    js = render_json(plan, environ={})
    for out in (text, js):
        assert "sk-very-secret-value" not in out
        assert "***" in out
    assert "bypassPermissions" in text and "WARNING" in text
    assert bypass_refusal(plan, 0, {}) is not None
    assert bypass_refusal(plan, 0, {"IS_SANDBOX": "1"}) is None
    assert bypass_refusal(plan, 1000, {}) is None


def test_clear_history_starts_fresh_session_even_when_resuming(tmp_path: Path) -> None:
    sid = str(uuid.uuid4())
    data: dict[str, Any] = {
        "instances": [{"command": "x", "session_id": sid, "resume": True, "clear_history": True}]
    }
    inst = plan_of(data, tmp_path).instances[0]
    assert not inst.resume and "--session-id" in inst.argv
    data["instances"][0]["clear_history"] = False
    data["instances"][0]["compact_history"] = True
    inst = plan_of(data, tmp_path).instances[0]
    assert inst.resume and inst.turns == ("/compact", "x")
