"""The pool's pure rules: pool blocks read strictly, entries from parsed events, --since."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from coordinator.errors import UsageError
from coordinator.pool.blocks import Declared, Malformed, read_blocks
from coordinator.pool.digest import MAX_CHARS, MAX_ENTRIES, build_digest
from coordinator.pool.entries import Kind, PoolEntry
from coordinator.pool.extract import PoolExtractor
from coordinator.pool.query import parse_since
from runner.events import Assistant, ToolResult, ToolUse, UserToolResults

GOOD = "```pool\nACTION: researched\nTOPIC: auth\nSUMMARY: tokens last 1h\nAFFECTS: a.py, b.py\n```"


def test_a_good_block() -> None:
    assert read_blocks("text\n" + GOOD + "\nmore", "a") == [
        Declared("researched", "auth", "tokens last 1h", ("a.py", "b.py"), ())
    ]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("ACTION: completed\nTOPIC: t\n", "missing SUMMARY"),
        ("ACTION: completed\nTOPIC: t\nSUMMARY: s\nCOLOR: red\n", "unknown key 'COLOR'"),
        ("ACTION: completed\nACTION: blocked\nTOPIC: t\nSUMMARY: s\n", "ACTION given twice"),
        ("ACTION: completed\nTOPIC t\nSUMMARY: s\n", "line 2 is not KEY: value"),
        ("INSTANCE: b\nACTION: completed\nTOPIC: t\nSUMMARY: s\n", "INSTANCE 'b' is not"),
    ],
)
def test_a_malformed_block_is_a_note_naming_why(body: str, why: str) -> None:
    (got,) = read_blocks(f"```pool\n{body}```", "a")
    assert isinstance(got, Malformed) and got.why.startswith(why)


def test_an_unclosed_block() -> None:
    assert read_blocks(GOOD + "\n```pool\nACTION: completed\n", "a")[-1] == Malformed(
        "a ```pool block is not closed"
    )


def test_a_refused_write_is_no_entry_and_paths_are_relative_to_the_root() -> None:
    ex = PoolExtractor("o", "a", "/w/a", root="/w")
    ex.feed(
        Assistant(
            "m",
            None,
            None,
            (),
            (
                ToolUse("t1", "Write", {"file_path": "x.py"}),
                ToolUse("t2", "Edit", {"file_path": "/w/b/y.py"}),
            ),
            None,
        ),
        1.0,
    )
    got = ex.feed(
        UserToolResults((ToolResult("t1", True, "hook"), ToolResult("t2", False, ""))), 2.0
    )
    assert [(e.kind, e.action, e.summary) for e in got.entries] == [(Kind.FILE, "edited", "b/y.py")]
    assert got.writes == ["/w/b/y.py"]


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("1h", 3600), ("2h30m", 9000)])
def test_since(text: str, seconds: int) -> None:
    assert parse_since(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "1d", "h", "0m", "1h 2m", "-5m"])
def test_since_refused(text: str) -> None:
    with pytest.raises(UsageError):
        parse_since(text)


def _entry(n: int, kind: Kind = Kind.FILE, instance: str = "a") -> PoolEntry:
    return PoolEntry("o", instance, kind, "wrote", f"f{n}.py", float(n))


def test_the_digest_cuts_commands_and_milestones_first_then_the_oldest() -> None:
    entries = [_entry(i, Kind.COMMAND if i % 2 else Kind.FILE) for i in range(100)]
    digest = build_digest(entries)
    assert digest is not None
    lines = digest.splitlines()[1:]
    assert len(lines) == MAX_ENTRIES
    assert all("f" in line for line in lines)
    # 50 files and 50 commands: every command is cut before any file, then the oldest files
    assert lines[0] == "- a wrote: f20.py" and lines[-1] == "- a wrote: f98.py"
    assert "(60 earlier entries left out" in digest.splitlines()[0]


def test_the_digest_stays_under_its_character_bound() -> None:
    long = [PoolEntry("o", "a", Kind.SUMMARY, "completed", "x" * 1000, float(i)) for i in range(30)]
    digest = build_digest(long)
    assert digest is not None and len(digest) <= MAX_CHARS
    assert all(len(line) <= 200 for line in digest.splitlines()[1:])
    assert build_digest([]) is None


def test_an_instance_launched_later_hears_everything_others_did_then_only_news() -> None:
    from coordinator.config import parse_config
    from coordinator.plan import RunOptions, build_plan
    from coordinator.pool.driver import PoolDriver

    config = parse_config(
        {
            "orchestration": {"pool": {"share": True}},
            "instances": [{"name": "a", "command": "x"}, {"name": "b", "command": "y"}],
        }
    )
    plan = build_plan(
        config,
        RunOptions(orchestration_id="orch-x"),
        claude_bin="claude",
        config_path=None,
        cwd=Path("/tmp"),
        now=datetime.now(UTC),
    )
    assert all(i.streams_input for i in plan.instances)  # the first turn can carry a digest
    from coordinator.control.attempts import next_launch

    again = next_launch(
        plan.instances[0], turns_done=0, turn_started=True, session_exists=True, cost_spent=0.0
    )
    assert again is not None and again.streams_input  # so does a retry's or a resume's
    driver = PoolDriver(plan, note=lambda text: None, run_of=lambda name: None)
    driver.add(_entry(1))
    driver.add(_entry(2, instance="b"))
    first = driver.turn_text("b", "y")
    assert first.startswith("y\n\n[coordinator pool]") and "a wrote: f1.py" in first
    assert "f2.py" not in first  # its own entries are not news to it
    assert driver.turn_text("b", "again") == "again"  # nothing new since
    driver.add(_entry(3))
    assert "f3.py" in driver.turn_text("b", "z") and "f1.py" not in driver.turn_text("b", "z")


def test_ownership_first_writer_for_the_run() -> None:
    from coordinator.pool.conflicts import ConflictBook

    book = ConflictBook()
    assert book.wrote("/w/x", "x", "a") is None
    assert book.wrote("/w/x", "x", "a") is None  # its own again
    conflict = book.wrote("/w/x", "x", "b")
    assert conflict is not None and conflict.text() == "conflict: x written by a and b"
    assert book.wrote("/w/x", "x", "b") is None  # said once
    assert book.wrote("/w/x", "x", "c") is conflict
    assert conflict.text() == "conflict: x written by a, b and c"
    first = book.ask("/w/y", "y", "c")
    assert first.allow and first.conflict is None
    refused = book.ask("/w/y", "y", "a")
    assert not refused.allow and refused.owner == "c" and refused.conflict is not None
    assert not book.ask("/w/y", "y", "a").allow and book.ask("/w/y", "y", "a").conflict is None


def test_block_mode_passes_the_hook_in_settings_quoted_for_sh() -> None:
    import json
    import shlex

    from coordinator.config import parse_config
    from coordinator.plan import RunOptions, build_plan

    config = parse_config(
        {
            "orchestration": {"pool": {"conflicts": "block"}},
            "instances": [{"name": "it's", "command": "x"}],
        }
    )
    plan = build_plan(
        config,
        RunOptions(orchestration_id="orch-x"),
        claude_bin="claude",
        config_path=None,
        cwd=Path("/tmp"),
        now=datetime.now(UTC),
    )
    argv = list(plan.instances[0].argv)
    settings = json.loads(argv[argv.index("--settings") + 1])
    (matcher,) = settings["hooks"]["PreToolUse"]
    assert matcher["matcher"] == "Write|Edit|MultiEdit|NotebookEdit"
    command = shlex.split(matcher["hooks"][0]["command"])
    assert command[1:3] == ["-I", "-S"] and command[3].endswith("coordinator/pool/hook.py")
    assert command[4:] == ["--instance", "it's"]
