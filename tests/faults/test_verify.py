"""Verify commands that misbehave: one that hangs (and leaves a child behind) past its
timeout, a Ctrl-C of the coordinator while verify runs, a verify on an instance that failed,
a verify that prints a secret, and verify blocks that cannot work (refused before launch,
dry-run included, in one line, exit 2). The verify process group never survives."""

from __future__ import annotations

import json
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

from coordinator.engine.state import Status
from tests.engine.helpers import alive_cmdlines, run_replay
from tests.faults.harness import answer, coordinator, start_run, wait_for, write_config


def hanging_verify(token: str) -> list[str]:
    """A verify that starts a child (which starts nothing else) and then hangs: both carry
    ``token`` in their command line."""
    child = f"[{sys.executable!r}, '-c', 'import time; time.sleep(300)', {token!r}]"
    code = f"import subprocess, time; subprocess.Popen({child}); time.sleep(300)"
    return [sys.executable, "-c", code, token]


async def test_a_verify_past_its_timeout_is_reaped_with_what_it_started(tmp_path: Path) -> None:
    token = "verify-" + secrets.token_hex(6)
    started = time.monotonic()
    _orch, outcome = await run_replay(
        tmp_path,
        [{"name": "a", "command": "x", "scenario": {"expected_quality": 0.5}}],
        {"a": [{"lines": answer("m1", 10, 5)}]},
        orchestration={"verify": {"argv": hanging_verify(token), "timeout_s": 1.5}},
    )
    (state,) = outcome.states
    assert state.status is Status.COMPLETED
    quality = state.measures()["quality"]
    assert quality["verify"]["timed_out"] is True and quality["verify"]["exit_code"] is None
    assert 1.5 <= quality["verify"]["duration_s"] < 8
    assert (quality["score"], quality["met"], quality["source"]) == (0.0, False, "exit_status")
    assert time.monotonic() - started < 30
    assert alive_cmdlines(token) == []  # the verify and its child are gone


async def test_verify_runs_on_a_failed_instance_and_says_so(tmp_path: Path) -> None:
    ok = [sys.executable, "-c", "print('noise'); print('{\"quality\": 0.4, \"lint\": 2}')"]
    _orch, outcome = await run_replay(
        tmp_path,
        [{"name": "a", "command": "x", "verify": {"argv": ok}}],
        {"a": [{"lines": answer("m1", 10, 5)[:2]}, {"exit": 3}]},  # exits before its result
    )
    (state,) = outcome.states
    assert state.status is Status.FAILED
    quality = state.measures()["quality"]
    assert quality["ran_after"] == "failed"
    assert (quality["source"], quality["score"]) == ("metrics", 0.4)
    assert quality["metrics"] == {"quality": 0.4, "lint": 2.0} and quality["expected"] is None


async def test_a_secret_a_verify_prints_is_never_kept(tmp_path: Path) -> None:
    secret = "sk-verify-" + secrets.token_hex(8)
    leaky = [sys.executable, "-c", f'print(\'{{"{secret}": 1, "quality": 1}}\')']
    orch, outcome = await run_replay(
        tmp_path,
        [{"name": "a", "command": "x", "verify": {"argv": leaky, "env": {"API_TOKEN": secret}}}],
        {"a": [{"lines": answer("m1", 10, 5)}]},
    )
    (state,) = outcome.states
    measures = state.measures()
    assert measures["quality"]["score"] == 1.0
    assert len(measures["quality"]["metrics"]) == 2  # the secret-named metric, masked
    text = json.dumps(measures) + " ".join(orch.notes) + state.last_event
    assert secret not in text


def test_ctrl_c_during_verify_reaps_it_and_writes_the_results(tmp_path: Path) -> None:
    token = "verify-" + secrets.token_hex(6)
    run = start_run(
        tmp_path,
        {"a": [{"lines": answer("m1", 10, 5)}]},
        orchestration={"verify": {"argv": hanging_verify(token), "timeout_s": 300}},
    )
    try:
        wait_for(lambda: len(alive_cmdlines(token)) == 2, 60, "the verify and its child")
        run.proc.send_signal(signal.SIGINT)
        assert run.wait(30) == 130, run.stderr
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    assert alive_cmdlines(token) == []
    (inst,) = run.results()["instances"]
    assert inst["status"] == "completed"
    quality = inst["measures"]["quality"]
    assert quality["score"] is None and quality["met"] is None  # interrupted: not measured
    assert quality["verify"]["exit_code"] is None and quality["verify"]["timed_out"] is False


def dry_run(tmp_path: Path, verify: dict[str, Any]) -> tuple[int, str, str]:
    config = write_config(tmp_path, {"a": []}, {"verify": verify})
    done = coordinator(
        ["run", "--dry-run", "--no-db", "--config", str(config), "--workspace", str(tmp_path)],
        tmp_path / "state",
    )
    return done.returncode, done.stdout, done.stderr


def test_bad_verify_blocks_are_one_line_and_exit_2_in_dry_run(tmp_path: Path) -> None:
    cases = {
        "no-such-verifier-xyz": ("orchestration.verify.argv[0]", "not found on PATH"),
        "./missing/verifier": ("orchestration.verify.argv[0]", "not found"),
    }
    for program, (field, problem) in cases.items():
        code, _out, err = dry_run(tmp_path, {"argv": [program, "-q"]})
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and field in lines[0] and problem in lines[0], err
    for verify, field in (
        ({"argv": []}, "orchestration.verify.argv"),
        ({"argv": ["x"], "timeout_s": -1}, "orchestration.verify.timeout_s"),
        ({"argv": ["x"], "timeout_s": "60"}, "orchestration.verify.timeout_s"),
    ):
        code, _out, err = dry_run(tmp_path, verify)
        assert code == 2 and len(err.strip().splitlines()) == 1 and field in err, err


def test_dry_run_shows_the_verify_argv(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "pytest", "-q", "--junitxml=verify.xml"]
    code, out, err = dry_run(tmp_path, {"argv": argv, "junit": "verify.xml", "timeout_s": 30})
    assert code == 0, err
    assert f"verify     $ {sys.executable} -m pytest -q --junitxml=verify.xml" in out
    assert "(timeout 30s, junit verify.xml)" in out


def test_a_verify_outlives_no_sigkilled_coordinator(tmp_path: Path) -> None:
    """The guardian tracks the verify's group like an instance's: kill -9 of the
    coordinator while verify runs leaves nothing of it."""
    import os

    token = "verify-" + secrets.token_hex(6)
    run = start_run(
        tmp_path,
        {"a": [{"lines": answer("m1", 10, 5)}]},
        orchestration={"verify": {"argv": hanging_verify(token), "timeout_s": 300}},
    )
    try:
        wait_for(lambda: len(alive_cmdlines(token)) == 2, 60, "the verify and its child")
        os.kill(run.proc.pid, signal.SIGKILL)
        run.proc.wait(10)
        wait_for(lambda: alive_cmdlines(token) == [], 20, "the guardian to reap the verify")
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
