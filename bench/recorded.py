"""A realistic recorded claude stream, generated deterministically, with its ground truth.

    python -m bench.recorded --out DIR [--count 1] [--lines 120000] [--big 3000000 ...]

The shapes follow the real CLI with ``--output-format stream-json --verbose
--include-partial-messages`` (compact JSON, one object per ``\\n``): a ``system``/``init``
line, then API responses (``message_start``, per content block ``content_block_start``,
many ``content_block_delta``, ``content_block_stop`` and one ``assistant`` line carrying
the ``message_start`` usage snapshot whose ``output_tokens`` is a placeholder,
``message_delta`` with the final output tokens, ``message_stop``), ``user`` tool results
after tool calls (a few of them multi-MB, like a big file read), sub-agent responses
(``parent_tool_use_id`` set) after some ``Task`` calls, and a ``result`` at the end
whose usage is the cumulative total. Text is mostly ASCII with some UTF-8 (and U+2028,
which must not split a line).

The same (lines, big, seed) always gives byte-identical output. The :class:`Truth` is
computed while generating, independently of ``runner.accounting``.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil

from coordinator.config import parse_config
from coordinator.plan import RunOptions, RunPlan, build_plan

ROOT = Path(__file__).resolve().parents[1]
REPLAY = ROOT / "scripts" / "replay-claude"

MODEL = "claude-sonnet-4-5-20250929"
SUB_MODEL = "claude-haiku-4-5-20251001"
_VOCABULARY = (
    "the of and to in is that for it with as on this be are by file function test value "
    "return import class self data line stream token budget instance process group "
    "coordinator parse event résumé naïve — café µs λ"
)
WORDS = tuple(_VOCABULARY.split())


@dataclass(frozen=True, slots=True)
class Truth:
    """What a correct reader must find in the stream."""

    lines: int
    bytes: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    messages: int
    tool_calls: int
    big_lines: int
    max_line_bytes: int

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_creation_tokens
        )

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Truth:
        return cls(**{k: int(v) for k, v in raw.items()})


class _Writer:
    def __init__(self, out: Any, session: str) -> None:
        self.out = out
        self.session = session
        self.lines = 0
        self.bytes = 0
        self.max_line = 0

    def emit(self, obj: dict[str, Any]) -> None:
        data = orjson.dumps(obj) + b"\n"
        self.out.write(data)
        self.lines += 1
        self.bytes += len(data)
        self.max_line = max(self.max_line, len(data))

    def stream_event(self, event: dict[str, Any], parent: str | None, uid: str) -> None:
        self.emit(
            {
                "type": "stream_event",
                "event": event,
                "session_id": self.session,
                "parent_tool_use_id": parent,
                "uuid": uid,
            }
        )


class _Generator:
    def __init__(self, out: Any, seed: int) -> None:
        self.rng = random.Random(seed)
        self.session = f"{self.rng.getrandbits(128):032x}"
        self.w = _Writer(out, self.session)
        self.uid = 0
        self.msg = 0
        self.tool = 0
        self.tokens = [0, 0, 0, 0]  # input, output, cache read, cache creation
        self.last_tool = ""
        self.context = 12_000

    def _uuid(self) -> str:
        self.uid += 1
        return f"{self.uid:08x}-0000-4000-8000-{self.rng.getrandbits(48):012x}"

    def _text(self, lo: int, hi: int) -> str:
        rng = self.rng
        words = [rng.choice(WORDS) for _ in range(rng.randint(lo, hi))]
        if rng.random() < 0.01:
            words.append("\u2028")
        return " ".join(words)

    def init(self) -> None:
        self.w.emit(
            {
                "type": "system",
                "subtype": "init",
                "cwd": "/work/project",
                "session_id": self.session,
                "tools": ["Task", "Bash", "Glob", "Grep", "Read", "Edit", "Write", "TodoWrite"],
                "mcp_servers": [],
                "model": MODEL,
                "permissionMode": "acceptEdits",
                "slash_commands": ["compact", "context", "cost", "review"],
                "apiKeySource": "ANTHROPIC_API_KEY",
                "claude_code_version": "2.0.14",
                "output_style": "default",
                "agents": ["general-purpose"],
                "uuid": self._uuid(),
            }
        )

    def response(self, *, parent: str | None, tool: bool, deltas: int) -> str | None:
        """One API response; returns the tool_use id it asked for, if any."""
        rng = self.rng
        self.msg += 1
        msg_id = f"msg_01{self.msg:06d}{rng.getrandbits(64):016x}"
        model = MODEL if parent is None else SUB_MODEL
        cache_read = self.context
        cache_creation = rng.randint(0, 3000)
        inp = rng.randint(1, 40)
        output = rng.randint(20, 2500)
        self.context += cache_creation
        if self.context > 160_000:  # auto-compaction
            self.context = 12_000
        snapshot = {
            "input_tokens": inp,
            "cache_creation_input_tokens": cache_creation,
            "cache_read_input_tokens": cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": cache_creation,
                "ephemeral_1h_input_tokens": 0,
            },
            "output_tokens": 1,
            "service_tier": "standard",
        }
        w = self.w
        w.stream_event(
            {
                "type": "message_start",
                "message": {
                    "model": model,
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": snapshot,
                },
            },
            parent,
            self._uuid(),
        )
        blocks: list[dict[str, Any]] = []
        text_deltas = deltas if not tool else max(1, deltas // 3)
        parts = [self._text(1, 6) for _ in range(text_deltas)]
        blocks.append({"type": "text", "text": " ".join(parts)})
        self._block(0, {"type": "text", "text": ""}, parts, "text_delta", "text", parent)
        self._assistant(msg_id, model, blocks[-1], snapshot, parent)
        tool_id = None
        if tool:
            self.tool += 1
            tool_id = f"toolu_01{self.tool:06d}{rng.getrandbits(64):016x}"
            name = (
                rng.choice(("Bash", "Read", "Grep", "Edit")) if parent or self.tool % 9 else "Task"
            )
            tool_input = {"command": self._text(3, 12), "description": self._text(2, 5)}
            raw = json.dumps(tool_input)
            step = max(1, len(raw) // max(1, deltas - text_deltas))
            pieces = [raw[i : i + step] for i in range(0, len(raw), step)]
            start = {"type": "tool_use", "id": tool_id, "name": name, "input": {}}
            self.last_tool = name
            self._block(1, start, pieces, "input_json_delta", "partial_json", parent)
            blocks.append({"type": "tool_use", "id": tool_id, "name": name, "input": tool_input})
            self._assistant(msg_id, model, blocks[-1], snapshot, parent)
        w.stream_event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use" if tool else "end_turn", "stop_sequence": None},
                "usage": {
                    "input_tokens": inp,
                    "cache_creation_input_tokens": cache_creation,
                    "cache_read_input_tokens": cache_read,
                    "output_tokens": output,
                },
            },
            parent,
            self._uuid(),
        )
        w.stream_event({"type": "message_stop"}, parent, self._uuid())
        t = self.tokens
        t[0] += inp
        t[1] += output
        t[2] += cache_read
        t[3] += cache_creation
        return tool_id

    def _block(
        self,
        index: int,
        start: dict[str, Any],
        pieces: list[str],
        delta_type: str,
        key: str,
        parent: str | None,
    ) -> None:
        w = self.w
        w.stream_event(
            {"type": "content_block_start", "index": index, "content_block": start},
            parent,
            self._uuid(),
        )
        for piece in pieces:
            w.stream_event(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": delta_type, key: piece},
                },
                parent,
                self._uuid(),
            )
        w.stream_event({"type": "content_block_stop", "index": index}, parent, self._uuid())

    def _assistant(
        self,
        msg_id: str,
        model: str,
        block: dict[str, Any],
        snapshot: dict[str, Any],
        parent: str | None,
    ) -> None:
        self.w.emit(
            {
                "type": "assistant",
                "message": {
                    "id": msg_id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [block],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": snapshot,
                },
                "parent_tool_use_id": parent,
                "session_id": self.session,
                "uuid": self._uuid(),
            }
        )

    def tool_result(self, tool_id: str, size: int, parent: str | None) -> None:
        if size > 0:
            # a big file read: numbered source lines, JSON-escaped newlines and tabs
            row = "    return self._value  # line of a big file with some text in it\n"
            text = (row * (size // len(row) + 1))[:size]
        else:
            text = self._text(5, 120)
        self.w.emit(
            {
                "type": "user",
                "message": {
                    "role": "user",
                    "content": [
                        {
                            "tool_use_id": tool_id,
                            "type": "tool_result",
                            "content": text,
                            "is_error": self.rng.random() < 0.02,
                        }
                    ],
                },
                "parent_tool_use_id": parent,
                "session_id": self.session,
                "uuid": self._uuid(),
            }
        )

    def result(self, duration_ms: int) -> None:
        t = self.tokens
        self.w.emit(
            {
                "type": "result",
                "subtype": "success",
                "is_error": False,
                "duration_ms": duration_ms,
                "duration_api_ms": duration_ms - 1000,
                "num_turns": self.msg,
                "result": self._text(20, 60),
                "session_id": self.session,
                "total_cost_usd": round(self.msg * 0.0123, 6),
                "usage": {
                    "input_tokens": t[0],
                    "cache_creation_input_tokens": t[3],
                    "cache_read_input_tokens": t[2],
                    "output_tokens": t[1],
                    "server_tool_use": {"web_search_requests": 0},
                    "service_tier": "standard",
                },
                "modelUsage": {},
                "permission_denials": [],
                "uuid": self._uuid(),
            }
        )


def generate(
    path: Path, *, lines: int, big: Sequence[int] = (), seed: int = 1, result: bool = True
) -> Truth:
    """Write a stream of at least ``lines`` lines to ``path``; ``big`` are the sizes (bytes)
    of the multi-MB tool results, spread evenly through the stream; without ``result`` the
    stream stops before the final ``result`` line (a run still going)."""
    with path.open("wb", buffering=1 << 20) as out:
        gen = _Generator(out, seed)
        gen.init()
        big_at = [(k + 1) * lines // (len(big) + 1) for k in range(len(big))]
        pending_big = list(zip(big_at, big, strict=True))
        big_done = 0
        sub_parent: str | None = None
        sub_left = 0
        rng = gen.rng
        while gen.w.lines < lines - (1 if result else 0):
            parent = sub_parent if sub_left > 0 else None
            tool = rng.random() < 0.6
            tool_id = gen.response(parent=parent, tool=tool, deltas=rng.randint(10, 60))
            if parent is not None:
                sub_left -= 1
            if tool_id is None:
                continue
            size = 0
            if pending_big and gen.w.lines >= pending_big[0][0]:
                size = pending_big.pop(0)[1]
                big_done += 1
            gen.tool_result(tool_id, size, parent)
            if parent is None and gen.last_tool == "Task":
                sub_parent, sub_left = tool_id, rng.randint(2, 6)  # the sub-agent's turns
        while pending_big:  # a stream too short to reach them: still write them
            gen.tool_result("toolu_late", pending_big.pop(0)[1], None)
            big_done += 1
        if result:
            gen.result(duration_ms=60_000 + gen.msg * 1500)
        t = gen.tokens
        return Truth(
            lines=gen.w.lines,
            bytes=gen.w.bytes,
            input_tokens=t[0],
            output_tokens=t[1],
            cache_read_tokens=t[2],
            cache_creation_tokens=t[3],
            messages=gen.msg,
            tool_calls=gen.tool,
            big_lines=big_done,
            max_line_bytes=gen.w.max_line,
        )


def stream_path(out: Path, index: int) -> Path:
    return out / f"stream-{index:03d}.jsonl"


def truth_path(out: Path, index: int) -> Path:
    return out / f"truth-{index:03d}.json"


def load_truth(out: Path, index: int) -> Truth:
    return Truth.from_dict(json.loads(truth_path(out, index).read_text()))


def generate_in_children(
    out: Path, *, count: int, lines: int, big: Sequence[int], seed: int = 1, jobs: int = 2
) -> list[Truth]:
    """Generate ``count`` streams (seeds ``seed + i``) in ``jobs`` child processes, so that
    the caller's own peak RSS and CPU time stay its own."""
    out.mkdir(parents=True, exist_ok=True)
    per = -(-count // jobs)
    procs = []
    for start in range(0, count, per):
        argv = [sys.executable, "-m", "bench.recorded", "--out", str(out), "--start", str(start)]
        argv += ["--count", str(min(per, count - start)), "--lines", str(lines)]
        argv += ["--seed", str(seed), *[f"--big={b}" for b in big]]
        if not big:
            argv.append("--no-big")
        procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, cwd=ROOT))
    for proc in procs:
        if proc.wait() != 0:
            raise RuntimeError(f"bench.recorded failed: {proc.args!r}")
    return [load_truth(out, i) for i in range(count)]


def replay_plan(
    workdir: Path,
    names: Sequence[str],
    orchestration: dict[str, Any] | None = None,
    instance: dict[str, dict[str, Any]] | None = None,
) -> RunPlan:
    """A run plan whose 'claude' is the replay stand-in (scripts/replay-claude);
    ``instance`` adds config keys per instance name."""
    config = parse_config(
        {
            "orchestration": {
                "startup_delay": 0,
                "progress_instructions": False,
                "idle_timeout": 600,
                **(orchestration or {}),
            },
            "instances": [
                {"command": "go", "name": name, **(instance or {}).get(name, {})} for name in names
            ],
        }
    )
    return build_plan(
        config,
        RunOptions(orchestration_id=f"bench-{workdir.name}"),
        claude_bin=str(REPLAY),
        config_path=None,
        cwd=workdir,
        now=datetime.now(UTC),
    )


def write_scripts(workdir: Path, scripts: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    """One replay script per instance; returns the REPLAY_SCRIPT value of each."""
    paths = {}
    for name, steps in scripts.items():
        path = workdir / f"{name}.script.json"
        path.write_text(json.dumps(steps))
        paths[name] = str(path)
    return paths


def quiet_logging() -> None:
    """The engine logs every start/finish through structlog: keep the figures readable."""
    from coordinator.logs import configure_logging

    configure_logging(None, "error")


def live_descendants() -> list[str]:
    """Command lines of our live (non-zombie) descendants: must be empty after a run."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(" ".join(proc.cmdline()))
        except psutil.Error:
            continue
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--start", type=int, default=0, help="index of the first stream")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--no-big", action="store_true")
    ap.add_argument("--lines", type=int, default=120_000)
    ap.add_argument("--big", type=int, action="append", default=None, help="bytes; repeatable")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    big = args.big if args.big is not None else [2_500_000, 4_000_000, 3_000_000]
    if args.no_big:
        big = []
    for i in range(args.start, args.start + args.count):
        truth = generate(stream_path(args.out, i), lines=args.lines, big=big, seed=args.seed + i)
        truth_path(args.out, i).write_text(json.dumps(truth.as_dict()))
    print(json.dumps({"out": str(args.out), "count": args.count}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
