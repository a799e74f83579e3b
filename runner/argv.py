"""Build the argv of one claude instance. Pure: no I/O, no environment.

Facts this relies on (../shared/reference/claude-cli.md): ``--output-format stream-json``
needs ``--verbose`` with ``-p``; the variadic tool flags swallow a following prompt, so they
are always written in ``--flag=a,b`` form and the prompt goes after ``--``; exact live output
tokens need ``--include-partial-messages``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

# Linux refuses a single argument over 128 KiB (MAX_ARG_STRLEN, E2BIG) and all of argv and
# the environment together over ARG_MAX (a quarter of the stack limit, often 2 MiB). A
# prompt longer than this goes to claude's stdin instead, as a stream-json user turn.
ARGV_PROMPT_LIMIT = 100_000  # bytes, UTF-8


def prompt_fits_argv(prompt: str) -> bool:
    return len(prompt.encode(errors="replace")) <= ARGV_PROMPT_LIMIT


@dataclass(frozen=True, slots=True)
class LaunchSpec:
    session_id: str
    prompt: str | None  # None: turns are written to stdin as stream-json
    resume: bool = False
    permission_mode: str = "acceptEdits"
    allowed_tools: tuple[str, ...] | None = None
    disallowed_tools: tuple[str, ...] | None = None
    model: str | None = None
    max_turns: int | None = None
    append_system_prompt: str | None = None
    max_budget_usd: float | None = None
    include_partial_messages: bool = True
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    @property
    def streams_input(self) -> bool:
        return self.prompt is None


def build_argv(claude_bin: str, spec: LaunchSpec) -> list[str]:
    argv = [claude_bin, "-p", "--output-format", "stream-json", "--verbose"]
    if spec.include_partial_messages:
        argv.append("--include-partial-messages")
    if spec.streams_input:
        argv += ["--input-format", "stream-json"]
    argv += ["--resume" if spec.resume else "--session-id", spec.session_id]
    argv += ["--permission-mode", spec.permission_mode]
    if spec.allowed_tools is not None:
        argv.append("--allowedTools=" + ",".join(spec.allowed_tools))
    if spec.disallowed_tools is not None:
        argv.append("--disallowedTools=" + ",".join(spec.disallowed_tools))
    if spec.model:
        argv += ["--model", spec.model]
    if spec.max_turns is not None:
        argv += ["--max-turns", str(spec.max_turns)]
    if spec.append_system_prompt:
        argv += ["--append-system-prompt", spec.append_system_prompt]
    if spec.max_budget_usd is not None:
        argv += ["--max-budget-usd", f"{spec.max_budget_usd:g}"]
    argv += spec.extra_args
    if spec.prompt is not None:
        argv += ["--", spec.prompt]
    return argv


def user_turn_line(text: str, session_id: str) -> bytes:
    """One stream-json input line: a user turn for an instance started with
    ``--input-format stream-json``."""
    return (
        orjson.dumps(
            {
                "type": "user",
                "message": {"role": "user", "content": text},
                "parent_tool_use_id": None,
                "session_id": session_id,
            }
        )
        + b"\n"
    )
