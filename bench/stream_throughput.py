"""Framing + parsing + accounting of a recorded stream on one core.

    python -m bench.stream_throughput [--lines 120000] [--repeat 5] [--profile]

The recorded stream (``bench.recorded``: >= 100k lines, mostly ``content_block_delta``,
three multi-MB tool results) is held in memory and fed in 256 KiB chunks, as the engine
reads a pipe, through ``LineFramer`` -> ``parse_line`` -> ``Accountant.feed``, reading
``usage`` and ``cost_usd`` whenever the totals change as the budget check does (the
engine's per-line path minus budgets, status tails and progress). Side by side, over the same
bytes: a plain ``io.BytesIO.readline()`` + ``json.loads`` loop (stdlib json; the naive
reader), and the same loop with ``orjson.loads`` for reference. Best of ``--repeat`` runs
each, interleaved. The accounted totals are asserted equal to the generator's ground truth.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from bench.recorded import Truth, generate
from runner.accounting import Accountant
from runner.events import Activity, Usage, parse_event, parse_line
from runner.framing import LineFramer
from runner.process import READ_CHUNK

TARGET_LINES_PER_S = 150_000


def pipeline(data: bytes) -> tuple[int, Accountant]:
    """What the engine does with every chunk it reads (InstanceRun._pump_stdout/_line): and
    whenever the totals change, read them as the budget check does (Orchestrator.on_tokens
    reads ``usage`` and ``cost_usd``)."""
    framer = LineFramer()
    acct = Accountant()
    feed = acct.feed
    lines = 0
    view = memoryview(data)
    for start in range(0, len(data), READ_CHUNK):
        chunk = bytes(view[start : start + READ_CHUNK])  # a fresh bytes object, like read()
        for line in framer.feed(chunk):
            lines += 1
            event = parse_line(line)
            if event is None or isinstance(event, Activity):
                continue
            if feed(event):
                _read_totals(acct)
    tail = framer.finish()
    if tail:
        lines += 1
        event = parse_line(tail)
        if event is not None and not isinstance(event, Activity) and feed(event):
            _read_totals(acct)
    return lines, acct


def _read_totals(acct: Accountant) -> tuple[Usage, float]:
    return acct.usage, acct.cost_usd


def pipeline_no_fast_path(data: bytes) -> int:
    """The same, but every line JSON-decoded (as if the CLI's key order changed and the
    ``content_block_delta`` prefix test in ``parse_line`` stopped matching)."""
    framer = LineFramer()
    acct = Accountant()
    lines = 0
    view = memoryview(data)
    for start in range(0, len(data), READ_CHUNK):
        for line in framer.feed(bytes(view[start : start + READ_CHUNK])):
            lines += 1
            stripped = line.lstrip()
            if not stripped.startswith(b"{"):
                continue
            obj = orjson.loads(stripped)
            event = parse_event(obj) if isinstance(obj, dict) else None
            if event is not None and not isinstance(event, Activity) and acct.feed(event):
                _read_totals(acct)
    return lines


def naive_json(data: bytes) -> int:
    buf = io.BytesIO(data)
    readline = buf.readline
    loads = json.loads
    lines = 0
    while line := readline():
        loads(line)
        lines += 1
    return lines


def naive_orjson(data: bytes) -> int:
    buf = io.BytesIO(data)
    readline = buf.readline
    loads = orjson.loads
    lines = 0
    while line := readline():
        loads(line)
        lines += 1
    return lines


def timed(fn: Callable[[], object]) -> float:
    gc.collect()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def check(truth: Truth, lines: int, acct: Accountant) -> None:
    want = Usage(
        truth.input_tokens,
        truth.output_tokens,
        truth.cache_read_tokens,
        truth.cache_creation_tokens,
    )
    assert lines == truth.lines, (lines, truth.lines)
    assert acct.streamed_usage == want, (acct.streamed_usage, want)  # deduplicated live sums
    assert acct.usage == want, (acct.usage, want)  # after reconciling with the result
    assert acct.messages == truth.messages, (acct.messages, truth.messages)
    assert acct.tool_call_count == truth.tool_calls, (acct.tool_call_count, truth.tool_calls)
    assert acct.results == 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=120_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", action="store_true", help="cProfile one pipeline run")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="coord-bench-") as tmp:
        path = Path(tmp) / "stream.jsonl"
        t0 = time.perf_counter()
        truth = generate(path, lines=args.lines, big=[2_500_000, 4_000_000, 3_000_000], seed=1)
        gen_s = time.perf_counter() - t0
        data = path.read_bytes()
    mb = len(data) / 1e6
    print(
        f"recorded stream: {truth.lines:,} lines, {mb:.1f} MB, {truth.big_lines} lines > 2 MB "
        f"(largest {truth.max_line_bytes / 1e6:.1f} MB), {truth.messages:,} API responses, "
        f"{truth.tool_calls:,} tool calls; generated in {gen_s:.2f}s"
    )

    lines, acct = pipeline(data)
    check(truth, lines, acct)
    assert naive_json(data) == truth.lines
    print(
        f"ground truth OK: {lines:,} lines, tokens {acct.usage.total:,} "
        f"(in {truth.input_tokens:,} / out {truth.output_tokens:,} / cache read "
        f"{truth.cache_read_tokens:,} / cache write {truth.cache_creation_tokens:,}), "
        f"{acct.messages:,} messages, {acct.tool_call_count:,} tool calls"
    )

    runs: dict[str, Callable[[], object]] = {
        "pipeline": lambda: pipeline(data),
        "json": lambda: naive_json(data),
        "orjson": lambda: naive_orjson(data),
        "no_fast_path": lambda: pipeline_no_fast_path(data),
    }
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(args.repeat):
        for name, fn in runs.items():
            best[name] = min(best[name], timed(fn))

    def rate(name: str) -> tuple[float, float]:
        return truth.lines / best[name], mb / best[name]

    load = os.getloadavg()[0]
    print(f"\none thread (one core), 256 KiB chunks, best of {args.repeat}; load avg {load:.2f}:")
    labels = {
        "pipeline": "LineFramer + parse_line + Accountant",
        "json": "BytesIO.readline + json.loads",
        "orjson": "BytesIO.readline + orjson.loads",
        "no_fast_path": "pipeline, no content_block_delta path",
    }
    for name, label in labels.items():
        lps, mbps = rate(name)
        print(f"  {label:<38} {best[name]:7.3f}s  {lps:>11,.0f} lines/s  {mbps:7.1f} MB/s")
    p_lps, p_mbps = rate("pipeline")
    ratio_json = best["json"] / best["pipeline"]
    ratio_orjson = best["orjson"] / best["pipeline"]
    print(f"  pipeline speed / readline+json.loads:   {ratio_json:.2f}x")
    print(f"  pipeline speed / readline+orjson.loads: {ratio_orjson:.2f}x")
    ok = p_lps >= TARGET_LINES_PER_S
    print(f"  target >= {TARGET_LINES_PER_S:,} lines/s: {'met' if ok else 'NOT met'}")

    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(pipeline, data)
        print("\ncProfile of one pipeline run (tottime):")
        pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(12)

    summary = {
        "bench": "stream_throughput",
        "lines": truth.lines,
        "mb": round(mb, 2),
        "pipeline_s": round(best["pipeline"], 4),
        "pipeline_lines_per_s": round(p_lps),
        "pipeline_mb_per_s": round(p_mbps, 1),
        "json_lines_per_s": round(rate("json")[0]),
        "orjson_lines_per_s": round(rate("orjson")[0]),
        "no_fast_path_lines_per_s": round(rate("no_fast_path")[0]),
        "ratio_vs_json": round(ratio_json, 2),
        "ratio_vs_orjson": round(ratio_orjson, 2),
        "target_lines_per_s": TARGET_LINES_PER_S,
        "target_met": ok,
        "truth_ok": True,
        "loadavg_1m": round(load, 2),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
