"""StatusReporter while a run goes on: plain lines every interval and at the end when not on
a terminal, a rich Live table on one, errors only (each once) with --quiet. Driven by
awaiting what the console receives, never by sleeping."""

from __future__ import annotations

import asyncio
import io
import os
import time
from pathlib import Path

from rich.console import Console

from coordinator.engine.instance import Limits
from coordinator.engine.orchestrator import Orchestrator
from coordinator.engine.state import InstanceState, Status
from coordinator.plan import PlannedInstance
from coordinator.status.live import StatusReporter, note_printer
from coordinator.status.render import ReportOptions
from tests.engine.helpers import write_script
from tests.status.helpers import ANSI, WatchedFile, idle_orchestrator, lines_of, make_plan
from tests.unit.streams import api_response, init, line

HEADER = "coordinator t · "


def plain_console(file: io.StringIO) -> Console:
    return Console(file=file, width=250, highlight=False)  # as the CLI's, but into ``file``


def set_state(state: InstanceState, status: Status, last_event: str) -> None:
    state.status = status
    state.started_mono = state.started_mono or time.monotonic()
    if status.finished:
        state.ended_mono = time.monotonic()
    state.last_event = last_event


def blocks(text: str) -> list[list[str]]:
    """The reports in ``text``: each a header line and the instance lines under it; the
    totals line that ends every report is checked and left out."""
    out: list[list[str]] = []
    for ln in lines_of(text):
        if ln.startswith(HEADER):
            out.append([ln])
        else:
            assert out, f"a line before any header: {ln!r}"
            out[-1].append(ln)
    for block in out:
        assert block[-1].startswith("  total tokens="), block
        del block[-1]
    return out


async def test_plain_mode_reports_every_interval_and_once_more_at_the_end(
    tmp_path: Path,
) -> None:
    orch = idle_orchestrator(tmp_path, ["a", "b"])
    set_state(orch.states["a"], Status.RUNNING, "auth error, retry 3/10")
    f = WatchedFile()
    reporter = StatusReporter(plain_console(f), 0.01, ReportOptions())
    assert not reporter.live  # not a terminal: plain lines
    done = asyncio.Event()
    task = asyncio.create_task(reporter.run(orch, done))

    await f.until(lambda t: "last='auth error, retry 3/10'" in t)
    first = blocks(f.getvalue())[0]
    assert first[0].startswith(HEADER) and first[0].endswith(" · running 1 · pending 1")
    assert first[1].startswith("  ▶ a status=running time=")
    assert first[1].endswith(
        "tokens=0 vs_median=- cache_read=0 tools=0 cost=0.0000 progress=0% "
        "last='auth error, retry 3/10'"
    )
    assert first[2].startswith("  · b status=pending time=0.0s ")

    # a later interval shows what changed meanwhile
    set_state(orch.states["b"], Status.COMPLETED, "completed")
    await f.until(lambda t: "✓ b status=completed" in t)
    done.set()
    await asyncio.wait_for(task, 10)
    during = f.getvalue()
    reporter.final(orch)
    final = f.getvalue()[len(during) :]

    assert len(blocks(during)) >= 2
    for block in blocks(during + final):  # every report: the header, then one line each
        assert [ln[:6] for ln in block[1:]] in (["  ▶ a ", "  · b "], ["  ▶ a ", "  ✓ b "])
    assert len(blocks(final)) == 1  # the final report, once: run() printed none after done
    head, line_a, line_b = blocks(final)[0]
    assert head.endswith(" · running 1 · completed 1")
    assert "last='auth error, retry 3/10'" in line_a
    assert line_b.startswith("  ✓ b status=completed") and line_b.endswith("last='completed'")
    assert not ANSI.search(f.getvalue())


async def test_quiet_prints_each_failure_once_and_nothing_else(tmp_path: Path) -> None:
    orch = idle_orchestrator(tmp_path, ["ok", "bad", "slow", "capped", "stopped", "busy"])
    set_state(orch.states["ok"], Status.COMPLETED, "completed")
    set_state(orch.states["bad"], Status.FAILED, "exited with code 4 before its result")
    set_state(orch.states["stopped"], Status.CANCELLED, "interrupted by SIGINT")
    set_state(orch.states["busy"], Status.RUNNING, "tool: Bash")
    f = WatchedFile()
    # quiet wins over a live display
    reporter = StatusReporter(plain_console(f), 0.01, ReportOptions(), quiet=True, live=True)
    done = asyncio.Event()
    task = asyncio.create_task(reporter.run(orch, done))

    await f.until(lambda t: "bad failed" in t)
    set_state(orch.states["slow"], Status.TIMEOUT, "timed out after 5.0s")
    await f.until(lambda t: "slow timeout" in t)  # a later round, which saw "bad" again
    set_state(orch.states["capped"], Status.BLOCKED, "overall token budget exceeded")
    done.set()
    await asyncio.wait_for(task, 10)
    reporter.final(orch)
    reporter.final(orch)

    assert lines_of(f.getvalue()) == [
        "✗ bad failed: exited with code 4 before its result",
        "⏱ slow timeout: timed out after 5.0s",
        "⛔ capped blocked: overall token budget exceeded",
    ]


async def test_live_mode_draws_the_table_on_a_terminal(tmp_path: Path) -> None:
    orch = idle_orchestrator(tmp_path, ["a", "b"])
    a = orch.states["a"]
    set_state(a, Status.RUNNING, "permission denied: Bash")
    a.output_tail.extend(["first out", "second out", "third out"])
    set_state(orch.states["b"], Status.FAILED, "killed by SIGKILL")
    f = io.StringIO()
    console = Console(file=f, width=200, force_terminal=True, color_system=None, highlight=False)
    reporter = StatusReporter(console, 0.5, ReportOptions(max_console_lines=2))
    assert reporter.live  # a terminal: the Live display
    done = asyncio.Event()
    done.set()
    await asyncio.wait_for(reporter.run(orch, done), 10)
    out = f.getvalue()
    assert "\x1b[?25l" in out  # cursor hidden while live
    text = ANSI.sub("", out)
    assert "last event / reason" in text
    assert "permission denied: Bash" in text and "killed by SIGKILL" in text
    assert "── a" in text and "   second out" in text and "   third out" in text
    assert "first out" not in text
    assert "status=" not in text  # not the plain lines
    reporter.final(orch)
    assert f.getvalue() == out  # the live display already shows the end


def test_notes_are_printed_only_without_a_live_display() -> None:
    f = io.StringIO()
    console = plain_console(f)
    note_printer(console, enabled=False)("shown in the live table instead")
    note_printer(console, enabled=True)("overall token budget reached 80%")
    assert f.getvalue() == "! overall token budget reached 80%\n"


def make_orchestrator(tmp_path: Path, scripts: dict[str, list[dict[str, object]]]) -> Orchestrator:
    """A real Orchestrator whose instances are the replay stand-in running ``scripts``."""
    plan = make_plan(tmp_path, list(scripts))
    paths = {n: write_script(tmp_path / f"{n}.json", steps) for n, steps in scripts.items()}

    def env(inst: PlannedInstance) -> dict[str, str]:
        return {"REPLAY_SCRIPT": str(paths[inst.name])}

    return Orchestrator(plan, base_env=dict(os.environ), limits=Limits(), instance_env=env)


def text_lines(*raw: bytes) -> list[str]:
    return [r.decode().rstrip("\n") for r in raw]


async def test_plain_reports_of_a_real_run_show_retries_and_denials(tmp_path: Path) -> None:
    retry = line(
        {
            "type": "system",
            "subtype": "api_retry",
            "attempt": 3,
            "max_retries": 10,
            "retry_delay_ms": 1000,
            "error_status": 401,
            "error": "authentication_failed",
        }
    )
    denial = line(
        {
            "type": "user",
            "message": {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "tu1",
                        "is_error": True,
                        "content": "Claude requested permissions to use Bash, "
                        "but you haven't granted it yet.",
                    }
                ],
            },
        }
    )
    bash = (("tu1", "Bash", {"command": "make"}),)
    orch = make_orchestrator(
        tmp_path,
        {
            "auth": [{"lines": text_lines(init(), retry)}, {"sleep": 120}],
            "denied": [
                {"lines": text_lines(init(), *api_response("m1", 700, 300, tools=bash), denial)},
                {"sleep": 120},
            ],
        },
    )
    f = WatchedFile()
    reporter = StatusReporter(plain_console(f), 0.05, ReportOptions())
    done = asyncio.Event()
    report = asyncio.create_task(reporter.run(orch, done))
    running = asyncio.create_task(orch.run())
    try:
        seen = await f.until(
            lambda t: "last='auth error, retry 3/10'" in t and "last='permission denied: Bash'" in t
        )
    finally:
        orch.cancel("test over")
        outcome = await asyncio.wait_for(running, 30)
        done.set()
        await asyncio.wait_for(report, 10)
    assert outcome.interrupted
    denied_lines = [ln for ln in lines_of(seen) if "last='permission denied: Bash'" in ln]
    assert denied_lines[-1].startswith("  ▶ denied status=running ")
    assert "tokens=1000 " in denied_lines[-1] and " tools=1 " in denied_lines[-1]
    reporter.final(orch)
    _head, *rows = blocks(f.getvalue())[-1]
    assert [r.split(" status=")[0] for r in rows] == ["  ⊘ auth", "  ⊘ denied"]
    assert all("status=cancelled" in r and r.endswith("last='test over'") for r in rows)


# Stream text is printed verbatim, never read as rich markup (a "[/tmp/x.log]" in a model's
# text used to raise MarkupError and end the report, and with it the run's results).
def test_plain_lines_print_bracketed_text_verbatim(tmp_path: Path) -> None:
    orch = idle_orchestrator(tmp_path, ["a"])
    set_state(orch.states["a"], Status.RUNNING, "Reading [/tmp/x.log]")
    f = io.StringIO()
    StatusReporter(plain_console(f), 1, ReportOptions()).final(orch)
    assert "last='Reading [/tmp/x.log]'" in f.getvalue()


def test_quiet_lines_print_bracketed_text_verbatim(tmp_path: Path) -> None:
    orch = idle_orchestrator(tmp_path, ["a"])
    set_state(orch.states["a"], Status.FAILED, "exited with code 1: see [/tmp/x.log]")
    f = io.StringIO()
    StatusReporter(plain_console(f), 1, ReportOptions(), quiet=True).final(orch)
    assert f.getvalue() == "✗ a failed: exited with code 1: see [/tmp/x.log]\n"
