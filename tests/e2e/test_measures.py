"""Acceptance: real claude instances against the scripted model server write a real pytest
file (one with the Write tool, one through Bash), their verify command runs pytest with
--junitxml in each workspace, and the quality in the results is the pass ratio of the JUnit
file this test parses itself."""

from __future__ import annotations

import json
import shlex
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from coordinator.config.loader import load_config
from coordinator.config.models import SyncMode
from coordinator.engine.instance import Limits
from coordinator.engine.orchestrator import Orchestrator
from coordinator.engine.state import Status
from coordinator.offline.launch import start_offline_server
from coordinator.plan import RunOptions, build_plan
from coordinator.results import build_results
from tests.e2e.harness import base_env, offline_plan, run_offline
from tests.engine.helpers import ROOT

pytestmark = pytest.mark.claude

VERIFY = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml=verify.xml"]

TESTS_A = """\
from calc import add


def test_add():
    assert add(2, 3) == 5


def test_add_negative():
    assert add(-2, -3) == -5


def test_add_wrong():
    assert add(2, 2) == 5
"""

TESTS_B = """\
import pytest


def test_one():
    assert 1 + 1 == 2


def test_two():
    assert "ab" * 2 == "abab"


def test_three():
    assert sorted([3, 1, 2]) == [1, 2, 3]


@pytest.mark.skip(reason="not today")
def test_skipped():
    raise AssertionError


def test_four():
    assert max(4, 2) == 4
"""


def response(n: int, text: str, tool: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "text": text,
        "usage": {
            "input_tokens": 100 + n,
            "output_tokens": 40 + n,
            "cache_creation_input_tokens": 200 if n == 0 else 10,
            "cache_read_input_tokens": 500 * n,
        },
    }
    if tool is not None:
        out["tool_uses"] = [tool]
    return out


def write(ws: Path, name: str, content: str) -> dict[str, Any]:
    return {"name": "Write", "input": {"file_path": str(ws / name), "content": content}}


def bash(command: str) -> dict[str, Any]:
    return {"name": "Bash", "input": {"command": command, "description": "write a file"}}


def junit_ratio(path: Path) -> tuple[float, dict[str, int]]:
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    ran = counts["tests"] - counts["skipped"]
    passed = ran - counts["failures"] - counts["errors"]
    return passed / ran, counts


async def test_quality_is_the_pass_ratio_of_the_junit_file_the_instance_tests_wrote(
    tmp_path: Path,
) -> None:
    ws_a = tmp_path / "a"
    script = {
        "conversations": {
            "a": {
                "responses": [
                    response(
                        0, "module", write(ws_a, "calc.py", "def add(a, b):\n    return a + b\n")
                    ),
                    response(1, "tests", write(ws_a, "test_calc.py", TESTS_A)),
                    response(2, "ini", write(ws_a, "pytest.ini", "[pytest]\n")),
                    response(3, "done PROGRESS: 100%"),
                ]
            },
            "b": {
                "responses": [
                    response(0, "ini", bash("printf '[pytest]\\n' > pytest.ini")),
                    response(
                        1,
                        "tests",
                        bash(f"printf %s {shlex.quote(TESTS_B)} > test_b.py && echo written"),
                    ),
                    response(2, "done PROGRESS: 100%"),
                ]
            },
        }
    }
    verify = {"argv": VERIFY, "junit": "verify.xml", "timeout_s": 60}
    config = {
        "orchestration": {"verify": verify},
        "instances": [
            {
                "name": "a",
                "command": "write calc and its tests",
                "workspace": "a",
                "allowed_tools": ["Write"],
                "scenario": {"expected_quality": 0.9},
            },
            {
                "name": "b",
                "command": "write tests through bash",
                "workspace": "b",
                "allowed_tools": ["Bash"],
                "scenario": {"expected_quality": 0.9},
            },
        ],
    }
    plan = offline_plan(tmp_path, config, "measures")
    _orch, outcome, server = await run_offline(plan, script, tmp_path / "home")
    results = build_results(plan, outcome)
    by_name = {i["name"]: i for i in results["instances"]}
    expected = {"a": (2 / 3, False), "b": (1.0, True)}
    for state in outcome.states:
        assert state.status is Status.COMPLETED, (state.error, list(state.stderr_tail))
        ratio, counts = junit_ratio(state.plan.workspace / "verify.xml")
        assert ratio == pytest.approx(expected[state.name][0])  # the tests really ran
        measures = by_name[state.name]["measures"]
        assert measures == state.measures()
        quality = measures["quality"]
        assert quality["source"] == "junit"
        assert quality["score"] == pytest.approx(ratio, abs=1e-6)
        assert quality["verify"]["junit"] == counts
        assert quality["met"] is expected[state.name][1] and quality["expected"] == 0.9
        assert quality["ran_after"] == "completed"
        assert quality["verify"]["argv"] == VERIFY and quality["verify"]["timed_out"] is False
        assert quality["verify"]["exit_code"] == (1 if state.name == "a" else 0)
        # tools: what ran, per name, and the tokens of the responses that asked for them
        tool = "Write" if state.name == "a" else "Bash"
        calls = 3 if state.name == "a" else 2
        assert measures["tools"][tool]["calls"] == calls == state.accountant.tool_calls[tool]
        assert measures["tools"][tool]["errors"] == 0 and measures["tools"][tool]["denials"] == 0
        served = [s for s in server.served if s.key == state.name and s.complete]
        asked = [s.usage for s in served[:calls]]  # each of the first responses asked for one
        assert measures["tools"][tool]["tokens"] == sum(
            u.input_tokens
            + u.output_tokens
            + u.cache_read_input_tokens
            + u.cache_creation_input_tokens
            for u in asked
        )
        # the series: from the start to the end, the last point the final totals
        series = measures["series"]
        assert 2 <= len(series) <= 240 and series[0][0] < 1.0 and series[0][1] == 0
        assert series[-1][1] == state.accountant.usage.total
        assert series[-1][4] == 100.0
        assert [p[0] for p in series] == sorted(p[0] for p in series)
        assert measures["memory"]["peak_mb"] is None or measures["memory"]["peak_mb"] > 10


async def test_the_offline_demo_tiers_really_differ(tmp_path: Path) -> None:
    """configs/demo.json offline: simple passes every test, medium leaves two failing (and
    misses its expectation), complex fails one at first, fixes it, and ends with every test
    passing, at the price of more tool calls and tokens."""

    demo = ROOT / "configs" / "demo.json"
    plan = build_plan(
        load_config(demo),
        RunOptions(
            orchestration_id="demo", workspace=tmp_path, startup_delay=0, sync_mode=SyncMode.FREE
        ),
        claude_bin=str(ROOT / "node_modules" / ".bin" / "claude"),
        config_path=demo,
        cwd=tmp_path,
        now=datetime.now(UTC),
    )
    for inst in plan.instances:
        inst.workspace.mkdir(parents=True)
    async with start_offline_server(plan, None) as env:
        orch = Orchestrator(
            plan,
            base_env={**base_env(), "HOME": str(tmp_path)},
            limits=Limits(timeout=240),
            instance_env=lambda inst: {
                **env,
                "ANTHROPIC_CUSTOM_HEADERS": f"X-Coordinator-Instance: {inst.name}",
            },
        )
        outcome = await orch.run()
    got = {}
    for state in outcome.states:
        assert state.status is Status.COMPLETED, (state.name, state.error)
        ratio, _counts = junit_ratio(state.plan.workspace / "verify.xml")
        measures = state.measures()
        assert measures["quality"]["score"] == pytest.approx(ratio, abs=1e-6)
        got[state.name] = (measures, state.accountant.usage.total)
    simple, medium, complex_ = (got[n][0] for n in ("simple", "medium", "complex"))
    assert simple["quality"]["score"] == 1.0 and simple["quality"]["met"] is True
    assert medium["quality"]["score"] == pytest.approx(7 / 9, abs=1e-6)
    assert medium["quality"]["met"] is False  # expected 0.85
    assert complex_["quality"]["score"] == 1.0 and complex_["quality"]["met"] is True
    # complex's first test run failed (a Bash error), the fix is a later Write, a second run
    assert complex_["tools"]["Bash"] == {**complex_["tools"]["Bash"], "calls": 2, "errors": 1}
    assert simple["tools"]["Bash"]["errors"] == 0
    tokens = [got[n][1] for n in ("simple", "medium", "complex")]
    assert tokens == sorted(tokens) and tokens[0] < tokens[2]
    calls = [sum(t["calls"] for t in got[n][0]["tools"].values()) for n in got]
    assert calls == sorted(calls)
    assert [got[n][0]["memory"]["limit_mb"] for n in got] == [256, 512, 1024]


async def test_structured_output_is_the_quality_of_an_instance_without_verify(
    tmp_path: Path,
) -> None:
    """Verified on the pinned CLI: with --json-schema the model answers by calling the tool
    StructuredOutput, and the result carries that input as structured_output."""
    schema = {
        "type": "object",
        "properties": {"accuracy": {"type": "number"}, "recall": {"type": "number"}},
        "required": ["accuracy", "recall"],
    }
    answer = {"accuracy": 0.9, "recall": 0.6, "note": "self-assessed"}
    script = {
        "conversations": {
            "self": {
                "responses": [
                    response(0, "scoring", {"name": "StructuredOutput", "input": answer}),
                    response(1, "done"),
                ]
            }
        }
    }
    config = {
        "instances": [
            {
                "name": "self",
                "command": "rate your work",
                "workspace": "self",
                "json_schema": schema,
                "scenario": {"expected_quality": 0.7, "quality_metrics": ["accuracy", "recall"]},
            }
        ]
    }
    plan = offline_plan(tmp_path, config, "structured")
    (inst,) = plan.instances
    flag = inst.argv.index("--json-schema")
    assert json.loads(inst.argv[flag + 1]) == schema
    _orch, outcome, _server = await run_offline(plan, script, tmp_path / "home")
    (state,) = outcome.states
    assert state.status is Status.COMPLETED, (state.error, list(state.stderr_tail))
    assert state.accountant.last_result is not None
    assert state.accountant.last_result.structured_output == answer
    quality = state.measures()["quality"]
    assert quality["source"] == "structured_output"
    assert quality["metrics"] == {"accuracy": 0.9, "recall": 0.6}
    assert quality["score"] == pytest.approx(0.75) and quality["met"] is True
    assert quality["verify"]["argv"] == [] and quality["verify"]["exit_code"] is None
