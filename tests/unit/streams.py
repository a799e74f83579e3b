"""Build stream-json lines shaped like the real CLI's (for pure-core tests and benches)."""

from __future__ import annotations

from typing import Any

import orjson


def line(obj: dict[str, Any]) -> bytes:
    return orjson.dumps(obj) + b"\n"


def usage(inp: int, out: int, cr: int = 0, cc: int = 0) -> dict[str, int]:
    return {
        "input_tokens": inp,
        "output_tokens": out,
        "cache_read_input_tokens": cr,
        "cache_creation_input_tokens": cc,
    }


def api_response(
    msg_id: str,
    inp: int,
    out: int,
    cr: int = 0,
    cc: int = 0,
    *,
    texts: tuple[str, ...] = ("ok",),
    tools: tuple[tuple[str, str, dict[str, Any]], ...] = (),
    model: str = "claude-sonnet-4-5",
    session: str = "s",
) -> list[bytes]:
    """One API response as the CLI streams it with --include-partial-messages: a
    message_start stream event, deltas, one assistant line per content block (all with the
    snapshot usage, output a placeholder 1), then message_delta with the final output."""
    snap = usage(inp, 1, cr, cc)
    lines = [
        line(
            {
                "type": "stream_event",
                "event": {
                    "type": "message_start",
                    "message": {"id": msg_id, "model": model, "usage": snap},
                },
                "session_id": session,
                "parent_tool_use_id": None,
            }
        ),
    ]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": t} for t in texts]
    blocks += [
        {"type": "tool_use", "id": tid, "name": name, "input": inp_} for tid, name, inp_ in tools
    ]
    for block in blocks:
        lines.append(
            line(
                {
                    "type": "stream_event",
                    "event": {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": "x"},
                    },
                    "session_id": session,
                    "parent_tool_use_id": None,
                }
            )
        )
        lines.append(
            line(
                {
                    "type": "assistant",
                    "message": {
                        "id": msg_id,
                        "model": model,
                        "role": "assistant",
                        "content": [block],
                        "usage": snap,
                    },
                    "parent_tool_use_id": None,
                    "session_id": session,
                }
            )
        )
    lines.append(
        line(
            {
                "type": "stream_event",
                "event": {
                    "type": "message_delta",
                    "delta": {"stop_reason": "tool_use" if tools else "end_turn"},
                    "usage": {"output_tokens": out},
                },
                "session_id": session,
                "parent_tool_use_id": None,
            }
        )
    )
    return lines


def result(
    total: dict[str, int],
    *,
    cost: float = 0.01,
    turns: int = 1,
    is_error: bool = False,
    subtype: str = "success",
) -> bytes:
    return line(
        {
            "type": "result",
            "subtype": subtype,
            "is_error": is_error,
            "num_turns": turns,
            "duration_ms": 10,
            "session_id": "s",
            "total_cost_usd": cost,
            "usage": total,
            "modelUsage": {},
            "permission_denials": [],
        }
    )


def init() -> bytes:
    return line(
        {
            "type": "system",
            "subtype": "init",
            "session_id": "s",
            "model": "m",
            "cwd": "/",
            "tools": ["Bash"],
            "slash_commands": ["compact"],
            "permissionMode": "acceptEdits",
            "claude_code_version": "2.1.329",
            "apiKeySource": "ANTHROPIC_API_KEY",
        }
    )
