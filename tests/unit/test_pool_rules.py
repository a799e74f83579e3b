"""The pool's pure rules: pool blocks read strictly, entries from parsed events, --since."""

from __future__ import annotations

from datetime import timedelta

import pytest

from coordinator.errors import UsageError
from coordinator.pool.blocks import Declared, Malformed, read_blocks
from coordinator.pool.entries import Kind
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
