"""The status report through the real command line, with the replay stand-in as claude:
plain lines into a pipe, errors only with --quiet, a live table on a terminal, NO_COLOR."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.status.rows import ICONS
from tests.engine.helpers import REPLAY, write_script
from tests.status.helpers import ANSI, colour_codes
from tests.unit.streams import api_response, init, result, usage

ID = "status-e2e"
HEADER = f"coordinator {ID} · "
ROW = re.compile(r"^  (\S) (\w+) status=(\w+) time=")
COLOUR_ENV = ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLORTERM")


def lines(*raw: bytes) -> list[str]:
    return [r.decode().rstrip("\n") for r in raw]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """``ok`` prints a tail and works for 2 s, then completes with 154 tokens; ``bad``
    exits 4 at once."""
    ok = write_script(
        tmp_path / "ok.replay.json",
        [
            {
                "lines": [
                    *lines(init(), *api_response("m1", 100, 20, cr=30, cc=4)),
                    *("early-1", "early-2", "early-3", "late-4", "late-5-" + "x" * 60),
                ]
            },
            {"sleep": 2.0},
            {"lines": lines(result(usage(100, 20, 30, 4), cost=0.0123))},
        ],
    )
    bad = write_script(tmp_path / "bad.replay.json", [{"exit": 4}])
    cfg = tmp_path / "cfg.json"
    cfg.write_text(
        json.dumps(
            {
                "orchestration": {"startup_delay": 0, "progress_instructions": False},
                "instances": [
                    {"name": "ok", "command": "go", "env": {"REPLAY_SCRIPT": str(ok)}},
                    {"name": "bad", "command": "go", "env": {"REPLAY_SCRIPT": str(bad)}},
                ],
            }
        )
    )
    return cfg


def run(
    config: Path, *flags: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    tmp = config.parent
    base = {k: v for k, v in os.environ.items() if k not in COLOUR_ENV}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "coordinator.cli",
            "run",
            "--config",
            str(config),
            "--claude-bin",
            REPLAY,
            "--no-db",
            "--workspace",
            str(tmp),
            "--output",
            str(tmp / "results.json"),
            "--log-file",
            str(tmp / "log.jsonl"),
            "--orchestration-id",
            ID,
            "--status-report-interval",
            "0.2",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, "COLUMNS": "200", **(env or {})},
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert out.returncode == 1, out.stderr  # "bad" failed
    assert "Traceback" not in out.stderr, out.stderr
    return out


def summary_ok(line: str) -> bool:
    return line.startswith(f"{ID}: ") and "154 tokens, $0.0123" in line


def test_a_pipe_gets_plain_report_lines(config: Path) -> None:
    out = run(config, "--max-console-lines", "2")
    assert "\x1b" not in out.stdout  # neither live display control codes nor colour
    *report, summary = out.stdout.splitlines()
    assert summary_ok(summary), summary
    headers = [i for i, ln in enumerate(report) if ln.startswith(HEADER)]
    assert headers and headers[0] == 0, report
    assert len(headers) >= 2  # at least one interval report, and the final one
    assert any(" · running 1" in report[i] for i in headers)  # while "ok" worked
    for i in headers:  # each report: the header, then one line per instance
        block = report[i + 1 : i + 3]
        found = [ROW.match(ln) for ln in block]
        assert all(found), block
        assert [m.group(2) for m in found if m] == ["ok", "bad"]
        assert all(ICONS[m.group(3)] == m.group(1) for m in found if m), block
    final = report[headers[-1] :]
    assert len(final) == 4
    assert final[3] == "  total tokens=154 cache_read=30 tools=0 cost=0.0123"
    assert final[0].endswith(" · completed 1 · failed 1")
    assert final[1].startswith("  ✓ ok status=completed time=")
    assert final[1].endswith(
        "tokens=154 vs_median=1.00 cache_read=30 tools=0 cost=0.0123 progress=100% last='completed'"
    )
    assert final[2].startswith("  ✗ bad status=failed ")
    assert final[2].endswith("last='exited with code 4 before its result'")


def test_quiet_prints_the_failure_and_the_summary_only(config: Path) -> None:
    out = run(config, "--quiet", env={"NO_COLOR": "1"})
    error, summary = out.stdout.splitlines()
    assert error == "✗ bad failed: exited with code 4 before its result"
    assert summary_ok(summary), summary


@pytest.mark.parametrize("no_color", [False, True])
def test_a_terminal_gets_the_live_table_coloured_unless_no_color(
    config: Path, no_color: bool
) -> None:
    env = {"FORCE_COLOR": "1", "TERM": "xterm-256color"}  # rich takes the pipe for a terminal
    if no_color:
        env["NO_COLOR"] = "1"
    out = run(config, "--max-console-lines", "2", "--max-line-length", "20", env=env)
    assert "\x1b[?25l" in out.stdout  # the Live display
    text = ANSI.sub("", out.stdout)
    assert "last event / reason" in text and "status=" not in text
    assert "exited with code 4 …" in text  # the reason, clipped to 20 characters too
    # the tail of the running instance: its output lines, clipped to 20 characters
    assert "── ok" in text
    assert "   [non-json] late-5-x…" in text
    assert "late-5-xx" not in text
    codes = colour_codes(out.stdout)
    if no_color:
        assert codes == []
    else:
        assert "\x1b[32m" in codes and "\x1b[31m" in codes  # ✓ ok green, ✗ bad red
