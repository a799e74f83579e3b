"""An account usage warning through the real claude CLI, run by the real engine, against the
scripted model server: the instance shows the warning while it runs (no status change),
keeps the latest rate-limit state, and the results and the status report carry it. An
instance with an API key next to it, served the same headers, sees none
(coordinator/limits/CLI-FACTS.md).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from coordinator.claude_bin import PROJECT_LOCAL
from coordinator.engine.instance import Limits
from coordinator.engine.orchestrator import Orchestrator
from coordinator.engine.state import InstanceState, Status
from coordinator.offline.server import ModelServer
from coordinator.plan import PlannedInstance
from coordinator.results import build_results
from coordinator.status.render import ReportOptions, render_report
from coordinator.status.rows import row_from_state
from runner.events import RateLimit
from tests.e2e.harness import base_env, offline_plan
from tests.e2e.test_offline_run import respond
from tests.engine.helpers import alive_cmdlines
from tests.status.helpers import lines_of, render_plain

pytestmark = [
    pytest.mark.claude,
    pytest.mark.skipif(
        not os.access(PROJECT_LOCAL, os.X_OK),
        reason=f"pinned claude CLI not installed at {PROJECT_LOCAL} (run make install)",
    ),
]


class Observing(Orchestrator):
    """Records (status, last event) each time the engine reports a change without tokens."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rows: dict[str, list[tuple[str, str]]] = {name: [] for name in self.states}
        self.hold_until_limited: set[str] = set()
        self.sub_limited = asyncio.Event()  # set once sub's rejection closed the gate

    def on_status(self, state: InstanceState) -> None:
        row = row_from_state(state)
        self.rows[state.name].append((row.status, row.last_event))
        super().on_status(state)

    async def _through_gate(self, state: InstanceState) -> bool:
        """``hold_until_limited`` reach the gate only once ``sub`` was rejected: on a busy
        machine the stagger may come before claude's first answer, and the point of the
        test is what the gate does once it is closed."""
        if state.name in self.hold_until_limited:
            await self.sub_limited.wait()
        return await super()._through_gate(state)


def login_env(server: ModelServer, home: Path) -> Callable[[PlannedInstance], dict[str, str]]:
    """``sub*`` instances log in with a subscription token, the others with an API key."""
    home.mkdir(parents=True, exist_ok=True)

    def env(inst: PlannedInstance) -> dict[str, str]:
        credential = (
            {"CLAUDE_CODE_OAUTH_TOKEN": "offline-oauth"}
            if inst.name.startswith("sub")
            else {"ANTHROPIC_API_KEY": "offline"}
        )
        return {
            "ANTHROPIC_BASE_URL": server.url,
            "HOME": str(home),
            "ANTHROPIC_CUSTOM_HEADERS": f"X-Coordinator-Instance: {inst.name}",
            "TZ": "UTC",
            **credential,
        }

    return env


def conversation(reset: int) -> dict[str, Any]:
    tool = {"name": "Bash", "input": {"command": "echo ok > out.txt"}}
    warning = {
        "status": "allowed_warning",
        "resets_at": reset,
        "utilization_5h": 0.82,
        "utilization_7d": 0.1,
    }
    return {
        "responses": [
            respond(0, tool=tool)
            | {"rate_limit": {"resets_at": reset, "utilization_5h": 0.3, "utilization_7d": 0.1}},
            respond(1, tool=tool) | {"rate_limit": warning},
            respond(2, text="done PROGRESS: 100%") | {"rate_limit": warning},
        ]
    }


async def test_allowed_warning_reaches_the_state_the_results_and_the_report(
    tmp_path: Path,
) -> None:
    reset = int(time.time()) + 3600  # ahead: the CLI drops a window whose reset is past
    instances = [
        {"name": name, "command": f"work on {name}", "workspace": name, "allowed_tools": ["Bash"]}
        for name in ("sub", "keyed")
    ]
    plan = offline_plan(tmp_path, {"instances": instances}, "usage-limits")
    script = {"conversations": {"sub": conversation(reset), "keyed": conversation(reset)}}
    base = {k: v for k, v in base_env().items() if not k.startswith("ANTHROPIC_")}
    async with ModelServer(script) as server:
        env = login_env(server, tmp_path / "home")
        orch = Observing(plan, base_env=base, limits=Limits(timeout=60), instance_env=env)
        outcome = await orch.run()
    by = {s.name: s for s in outcome.states}
    for state in outcome.states:
        assert state.status is Status.COMPLETED, (state.name, state.error, state.stderr_tail)
        assert alive_cmdlines(state.plan.session_id) == [], state.name

    sub, keyed = by["sub"], by["keyed"]
    local = datetime.fromtimestamp(reset).strftime("%H:%M")  # the report shows local time
    warning = f"usage warning: five_hour limit 82% used, resets {local}"
    # While it ran: the warning was the instance's last event, its status unchanged.
    assert ("running", warning) in orch.rows["sub"], orch.rows["sub"]
    assert orch.rows["keyed"] == [] or all("usage" not in text for _, text in orch.rows["keyed"])

    # The latest rate-limit state stays on the instance's state.
    assert isinstance(sub.rate_limit, RateLimit)
    assert (sub.rate_limit.status, sub.rate_limit.resets_at) == ("allowed_warning", reset)
    assert sub.rate_limit.utilization == pytest.approx(0.82)
    assert keyed.rate_limit is None  # an API key: the CLI writes no rate_limit_event

    results = {i["name"]: i for i in build_results(plan, outcome)["instances"]}
    assert results["sub"]["rate_limit"] == {
        "status": "allowed_warning",
        "resets_at": datetime.fromtimestamp(reset, UTC).isoformat(),
        "type": "five_hour",
        "utilization": 0.82,
        "windows": {"five_hour": 0.82, "seven_day": 0.1},
        "using_overage": False,
    }
    assert results["keyed"]["rate_limit"] is None

    rows = [row_from_state(by[name]) for name in ("sub", "keyed")]
    text = render_plain(render_report("t", 1.0, rows, [], ReportOptions()))
    assert [line for line in lines_of(text) if line.startswith("usage ")] == [
        f"usage 5h 82% · 7d 10% · {warning} (sub)"
    ]


async def test_a_usage_limit_pauses_the_account_and_the_instance_resumes_at_the_reset(
    tmp_path: Path,
) -> None:
    """``sub`` is rejected by its account's 5-hour limit with a reset a few seconds ahead:
    it shows ``rate_limited``, waits, resumes its session by itself at the reset and
    completes. ``later`` (same account, launched by the stagger during the limit) is not
    launched until the reset; ``keyed`` (another account) is not held up. Budgets and
    tokens count over both attempts of ``sub``: exactly what the server served."""
    tool = {"name": "Bash", "input": {"command": "echo one > a.txt"}}
    script = {
        "conversations": {
            "sub": {
                "responses": [
                    respond(0, tool=tool),
                    {"rate_limit": {"status": "rejected", "resets_in_s": 4}},
                    respond(1, text="finished PROGRESS: 100%"),
                ]
            },
            "sublater": {"responses": [respond(0, text="later done")]},
            "keyed": {"responses": [respond(0, text="keyed done")]},
        }
    }
    instances = [
        {"name": n, "command": f"work on {n}", "workspace": n, "allowed_tools": ["Bash"]}
        for n in ("sub", "sublater", "keyed")
    ]
    config = {
        "orchestration": {
            "startup_delay": 1.5,
            "usage_limit_jitter_s": 0.5,
            "budget": {"overall_tokens": 10_000_000, "mode": "warn"},
        },
        "instances": instances,
    }
    plan = offline_plan(tmp_path, config, "usage-limit-pause")
    base = {k: v for k, v in base_env().items() if not k.startswith("ANTHROPIC_")}
    async with ModelServer(script) as server:
        env = login_env(server, tmp_path / "home")
        orch = Observing(plan, base_env=base, limits=Limits(timeout=60), instance_env=env)
        orch.hold_until_limited = {"sublater"}
        seen: list[tuple[str, str, str]] = []
        changed = orch.sink.instance_changed

        def watch(state: InstanceState) -> None:
            seen.append((state.name, state.status.value, state.last_event))
            if state.name == "sub" and (state.limited_attempts or state.status.finished):
                orch.sub_limited.set()  # the gate closes before the instance is shown limited
            changed(state)

        orch.sink.instance_changed = watch  # type: ignore[method-assign]
        outcome = await orch.run()
    by = {s.name: s for s in outcome.states}
    for state in outcome.states:
        assert state.status is Status.COMPLETED, (state.name, state.error, state.stderr_tail)
        assert alive_cmdlines(state.plan.session_id) == [], state.name

    sub = by["sub"]
    assert sub.attempts == 2 and sub.limited_attempts == 1
    first, second = sub.attempt_log
    assert first.limit_resets_at is not None and second.resumed
    reset = first.limit_resets_at
    assert second.started_unix is not None and second.started_unix >= reset
    limited = [e for n, status, e in seen if n == "sub" and status == "rate_limited"]
    assert limited and limited[0].startswith("rate-limited until ")
    assert limited[0].endswith("(five_hour)")
    # no new instance on that account during the limit; the other account went on
    later = by["sublater"]
    assert later.attempt_log[0].started_unix is not None
    assert later.attempt_log[0].started_unix >= reset
    assert any(n == "sublater" and s == "rate_limited" for n, s, _ in seen)
    keyed = by["keyed"]
    assert keyed.attempt_log[0].started_unix is not None
    assert keyed.attempt_log[0].started_unix < reset
    # the resumed conversation continued, and the tokens of both attempts are all counted
    requests = [r for r in server.requests if r.key == "sub" and not r.auxiliary]
    assert len(requests) == 3 and requests[2].message_count >= requests[1].message_count
    assert sub.accountant.usage.total == server.usage_by_key()["sub"].total
    (overall,) = [b for b in orch.budgets.budgets if b.as_dict()["scope"] == "overall"]
    served_all = sum(u.total for u in server.usage_by_key().values())
    assert overall.used == served_all  # the budget counted both of sub's attempts
