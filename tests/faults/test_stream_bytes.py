"""Bad bytes in claude's stream lose no event: a line with invalid UTF-8 (or an escaped lone
surrogate, which JavaScript's JSON.stringify writes for a string cut inside a pair) still
counts its tokens, cost, tools and progress; a line that cannot be read at all is counted in
``skipped_lines``. Real processes: the replaying claude stand-in writes the raw bytes."""

from __future__ import annotations

from pathlib import Path

import orjson

from coordinator.engine.instance import Limits
from coordinator.engine.state import Status
from coordinator.results import build_results
from runner.events import Usage
from tests.engine.helpers import run_replay
from tests.unit.streams import api_response, init, result, usage

BAD = b"caf\xe9 \xff\xfe"  # Latin-1 and stray bytes: not UTF-8


def _assistant_only(msg_id: str, inp: int, out: int, text: str, tool: str) -> list[bytes]:
    """An API response as the CLI streams it without partial messages: assistant lines only,
    so their usage is the only source of the tokens."""
    lines = api_response(
        msg_id, inp, out, texts=(text,), tools=(("tu1", tool, {"command": "MARK"}),)
    )
    return [raw for raw in lines if raw.startswith(b'{"type":"assistant"')]


def _stream(path: Path, lines: list[bytes]) -> dict[str, str]:
    path.write_bytes(b"".join(lines))
    return {"file": str(path)}


async def test_bad_utf8_in_assistant_and_result_lines_still_counts(tmp_path: Path) -> None:
    # assistant lines carry 100 in / 1 out (the snapshot) and a bad byte in their text
    answer = [
        raw.replace(b"MARK", BAD)
        for raw in _assistant_only("m1", 100, 20, "MARK PROGRESS: 50%", "Bash")
    ]
    reported = usage(120, 30, 7, 11)
    final = result(reported, cost=0.4321).replace(b'"subtype"', b'"result":"MARK","subtype"')
    lone = result(reported, cost=0.25).replace(
        b'"subtype"', b'"result":"cut \\ud83d here","subtype"'
    )
    assert b"\\ud83d" in lone  # orjson refuses this escape alone: the whole line was lost
    _orch, outcome = await run_replay(
        tmp_path,
        [{"command": "go", "name": n} for n in ("bad-result", "lone-surrogate", "cut")],
        {
            "bad-result": [
                _stream(tmp_path / "a.jsonl", [init(), *answer, final.replace(b"MARK", BAD)])
            ],
            "lone-surrogate": [_stream(tmp_path / "b.jsonl", [init(), *answer, lone])],
            "cut": [_stream(tmp_path / "c.jsonl", [init(), *answer]), {"exit": 3}],
        },
    )
    by = {s.name: s for s in outcome.states}
    for name, cost in (("bad-result", 0.4321), ("lone-surrogate", 0.25)):
        state = by[name]
        assert state.status is Status.COMPLETED, (name, state.error)
        assert state.accountant.usage == Usage(120, 30, 7, 11), name
        assert state.accountant.cost_usd == cost, name
        assert state.accountant.tool_calls == {"Bash": 1}, name
        assert state.skipped_lines == 0, name
    cut = by["cut"]
    assert cut.status is Status.FAILED and cut.exit_code == 3
    assert cut.accountant.usage == Usage(100, 1)  # the assistant lines' own usage, kept
    assert cut.accountant.tool_calls == {"Bash": 1}
    assert cut.progress.pct == 50
    assert any("caf\ufffd" in t for t in cut.output_tail)
    results = build_results(_orch.plan, outcome)
    orjson.dumps(results)  # what was repaired can be written as results
    assert results["totals"]["total_tokens"] == 2 * (120 + 30 + 7 + 11) + 101


async def test_unparseable_lines_are_counted_in_skipped_lines(tmp_path: Path) -> None:
    lines = [
        init(),
        b'{"type":"assistant","message":{"id":"m1",\xff garbage\n',
        b'{"truncated": \n',
        b"plain text, not an event\n",  # not counted: not an event at all
        *api_response("m1", 10, 5),
        result(usage(10, 5), cost=0.01),
    ]
    _orch, outcome = await run_replay(
        tmp_path,
        [{"command": "go", "name": "a"}],
        {
            "a": [
                _stream(tmp_path / "a.jsonl", lines[:4]),
                {"bytes": 1 << 20},
                _stream(tmp_path / "b.jsonl", lines[4:]),
            ]
        },
        limits=Limits(max_line_bytes=4096),
    )
    state = outcome.states[0]
    assert state.status is Status.COMPLETED, state.error
    assert state.accountant.usage == Usage(10, 5)
    assert state.skipped_lines == 3  # two unparseable, one oversized
    assert build_results(_orch.plan, outcome)["instances"][0]["skipped_lines"] == 3
    assert any(t.startswith('[unparsed] {"truncated"') for t in state.output_tail)
