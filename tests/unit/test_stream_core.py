from __future__ import annotations

import orjson
import pytest

from runner.accounting import Accountant
from runner.events import (
    UNPARSED,
    Activity,
    ApiRetry,
    Assistant,
    MessageDelta,
    MessageStart,
    Other,
    Result,
    SystemInit,
    ToolUse,
    Usage,
    parse_line,
)
from runner.framing import LineFramer
from runner.progress import MilestoneTracker, ProgressTracker
from tests.unit.streams import api_response, init, line, result, usage


def feed_all(chunks: list[bytes], framer: LineFramer) -> list[bytes]:
    out: list[bytes] = []
    for c in chunks:
        out += framer.feed(c)
    return out


def test_framer_splits_only_on_newline_across_chunk_boundaries() -> None:
    data = b'{"a":1}\n{"b":"x\xe2\x80\xa8y\r"}\n{"c":3}\n'  # U+2028 and \r inside a line
    for size in (1, 2, 3, 7, len(data)):
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        framer = LineFramer()
        assert feed_all(chunks, framer) == [b'{"a":1}', b'{"b":"x\xe2\x80\xa8y\r"}', b'{"c":3}']
        assert framer.finish() is None


def test_framer_handles_a_50mb_line_and_keeps_a_truncated_tail() -> None:
    big = b'{"type":"user","x":"' + b"a" * (50 << 20) + b'"}'
    framer = LineFramer()
    chunks = [big[i : i + (1 << 18)] for i in range(0, len(big), 1 << 18)]
    lines = feed_all([*chunks, b"\n", b'{"tail":'], framer)
    assert len(lines) == 1 and len(lines[0]) == len(big)
    assert framer.finish() == b'{"tail":'


def test_framer_max_line_bytes_skips_instead_of_failing() -> None:
    framer = LineFramer(max_line_bytes=10)
    lines = feed_all([b"short\n", b"x" * 8, b"y" * 8, b"z\nafter\n"], framer)
    assert lines == [b"short", b"after"]
    assert framer.skipped_lines == 1


def test_bad_bytes_in_a_string_are_repaired_not_lost() -> None:
    ev = parse_line(
        result(usage(7, 2), cost=0.5).replace(b'"subtype"', b'"result":"\xff","subtype"')
    )
    assert isinstance(ev, Result) and ev.usage == Usage(7, 2) and ev.text == "\ufffd"
    pair = parse_line(b'{"type":"result","result":"\\ud83d\\ude00 \\udc00 x\\ud800"}')
    assert isinstance(pair, Result) and pair.text == "\U0001f600 \ufffd x\ufffd"


def test_parser_never_raises_and_classifies() -> None:
    assert parse_line(b"not json at all") is None
    assert parse_line(b"") is None
    assert parse_line(b'{"broken": ') is UNPARSED
    assert parse_line(b'{"type":"x",\xff}') is UNPARSED
    assert parse_line(b"[1,2]") is None
    assert isinstance(parse_line(b'{"type":"brand_new","subtype":"x"}'), Other)
    assert isinstance(parse_line(b'{"type":"system","subtype":"hook_started"}'), Other)
    assert isinstance(parse_line(b'{"type":"assistant","message":"weird"}'), Other)
    assert isinstance(parse_line(init()), SystemInit)
    retry = parse_line(
        line(
            {
                "type": "system",
                "subtype": "api_retry",
                "attempt": 3,
                "max_retries": 10,
                "retry_delay_ms": 500,
                "error_status": 401,
                "error": "authentication_failed",
            }
        )
    )
    assert isinstance(retry, ApiRetry) and retry.attempt == 3 and retry.error_status == 401
    kinds = [type(parse_line(raw.rstrip(b"\n"))) for raw in api_response("m1", 10, 5)]
    assert kinds == [MessageStart, Activity, Assistant, MessageDelta]


def account(raw_lines: list[bytes]) -> Accountant:
    acct = Accountant()
    for raw in raw_lines:
        ev = parse_line(raw.rstrip(b"\n"))
        if ev is not None:
            acct.feed(ev)
    return acct


def test_accounting_dedupes_by_message_id_and_takes_final_output() -> None:
    # two content blocks -> two assistant lines with the same id and usage
    stream = api_response("m1", 100, 40, cr=1000, cc=50, texts=("a", "b"))
    acct = account(stream)
    assert acct.usage == Usage(100, 40, 1000, 50)
    # a second response, then a third with tools
    stream += api_response("m2", 20, 7, cr=1100)
    stream += api_response(
        "m3", 5, 3, tools=(("t1", "Bash", {"command": "ls"}), ("t2", "Write", {"file_path": "x"}))
    )
    acct = account(stream)
    assert acct.usage == Usage(125, 50, 2100, 50)
    assert acct.tool_calls == {"Bash": 1, "Write": 1}
    assert acct.messages == 3


def test_live_totals_exact_after_each_message_and_result_replaces() -> None:
    acct = Accountant()
    expected = Usage()
    for i, (inp, out) in enumerate([(10, 3), (20, 30), (5, 500)]):
        for raw in api_response(f"m{i}", inp, out):
            ev = parse_line(raw.rstrip(b"\n"))
            assert ev is not None
            acct.feed(ev)
        expected = expected + Usage(inp, out)
        assert acct.usage == expected
    # result.usage is authoritative: it replaces, never adds
    reported = usage(35, 533)
    ev = parse_line(result(reported, cost=0.5).rstrip(b"\n"))
    assert isinstance(ev, Result)
    acct.feed(ev)
    assert acct.usage == Usage(35, 533)
    assert acct.cost_usd == pytest.approx(0.5) and not acct.cost_is_estimate
    # a later turn in the same process streams more; its result covers that turn only,
    # while the cost is cumulative for the process (as the pinned CLI reports them)
    for raw in api_response("m9", 7, 2):
        ev2 = parse_line(raw.rstrip(b"\n"))
        assert ev2 is not None
        acct.feed(ev2)
    assert acct.usage == Usage(42, 535)
    assert acct.cost_is_estimate and acct.cost_usd > 0.5
    acct.feed(parse_line(result(usage(7, 2), cost=0.6).rstrip(b"\n")))
    assert acct.usage == Usage(42, 535) and acct.cost_usd == pytest.approx(0.6)
    assert acct.results == 2


def test_peer_bugs_do_not_happen() -> None:
    """max-of-fields, first-duplicate and sum-every-line all give wrong totals here."""
    stream = api_response("a", 100, 50, texts=("x", "y", "z")) + api_response("b", 80, 60)
    acct = account(stream)
    naive_sum = sum(
        orjson.loads(r)["message"]["usage"]["input_tokens"]
        for r in stream
        if b'"type":"assistant"' in r
    )
    assert naive_sum == 380  # what summing every line would give
    assert acct.usage == Usage(180, 110)


def test_permission_denials_and_retries() -> None:
    stream = api_response("m", 1, 1, tools=(("t9", "Bash", {"command": "rm"}),))
    stream.append(
        line(
            {
                "type": "user",
                "message": {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t9",
                            "is_error": True,
                            "content": "Claude requested permissions to use Bash, "
                            "but you haven't granted it yet.",
                        }
                    ],
                },
            }
        )
    )
    stream.append(
        line(
            {
                "type": "system",
                "subtype": "api_retry",
                "attempt": 1,
                "max_retries": 10,
                "retry_delay_ms": 1,
                "error_status": 529,
                "error": "overloaded",
            }
        )
    )
    acct = account(stream)
    assert acct.permission_denials == {"Bash": 1}
    assert acct.last_denial == "Bash"
    assert acct.api_retries == {"overloaded": 1}


def test_progress_sources_and_milestones() -> None:
    tracker = ProgressTracker(total_steps=2)
    ms = MilestoneTracker((30, 50, 70, 90))
    text = Assistant("m", None, None, ("working\nPROGRESS: 60%",), (), None)
    assert tracker.feed(text)
    assert tracker.pct == pytest.approx(30.0)  # 60% of the first of two steps
    assert ms.crossed(tracker.pct) == [30]
    tracker.step_done()
    assert tracker.pct == 50.0
    assert ms.crossed(tracker.pct) == [50]
    todos = {"todos": [{"status": "completed"}, {"status": "pending"}]}
    todo = Assistant("m2", None, None, (), (ToolUse("t", "TodoWrite", todos),), None)
    tracker.feed(todo)
    assert tracker.pct == 75.0
    assert ms.crossed(tracker.pct) == [70]
    assert not tracker.feed(Assistant("m3", None, None, ("PROGRESS: 10%",), (), None))
    assert tracker.pct == 75.0  # never backwards
    tracker.complete()
    assert ms.crossed(tracker.pct) == [90]
