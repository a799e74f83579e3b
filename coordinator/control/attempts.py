"""Attempts of one instance: what a relaunch sends, and whether a failure earns one. Pure.

An instance that did not finish is launched again as a new attempt of the same instance:
it continues its own claude session (``--resume <uuid>``) with a short "continue where you
stopped" turn for the turn it was in, then the turns it never reached. Its tokens, cost and
tool calls carry on (see ``runner.accounting.Accountant.next_process``).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from coordinator.plan import PlannedInstance
from runner.argv import build_argv, prompt_fits_argv

CONTINUE_PROMPT = (
    "Continue where you stopped. Your previous run of this task was interrupted before it "
    "finished; check what is already done, then finish the task."
)

# HTTP statuses of a failed API call that are worth another attempt later: overloaded,
# server errors, a gateway that timed out, a 429 that is not an account usage limit.
TRANSIENT_API_STATUSES = frozenset({408, 429, 500, 502, 503, 504, 529})
# Errors a new attempt would only repeat: bad credentials, a bad request, no permission.
FINAL_API_STATUSES = frozenset({400, 401, 402, 403, 404, 413})


@dataclass(frozen=True, slots=True)
class AttemptLaunch:
    argv: tuple[str, ...]
    turns: tuple[str, ...]  # what this process is given, in order
    first_turn: int  # the index in the plan's turns of turns[0]
    resumed: bool  # continues the instance's earlier session
    streams_input: bool


def first_launch(inst: PlannedInstance) -> AttemptLaunch:
    return AttemptLaunch(inst.argv, inst.turns, 0, inst.resume, inst.streams_input)


def next_launch(
    inst: PlannedInstance,
    *,
    turns_done: int,
    turn_started: bool,
    session_exists: bool,
    cost_spent: float,
    continue_text: str = CONTINUE_PROMPT,
) -> AttemptLaunch | None:
    """The launch of a later attempt; None when its cost cap (``max_cost_usd`` or the
    overall cost budget, which claude enforces per process) is already spent."""
    spec = inst.launch
    rest = inst.turns[turns_done:]
    if session_exists and turn_started and rest:
        turns: tuple[str, ...] = (continue_text, *rest[1:])
    else:
        turns = rest or (continue_text,)
    cap = spec.max_budget_usd
    if cap is not None:
        cap = round(cap - cost_spent, 6)
        if cap <= 0:
            return None
    # a shared pool's digest goes with each turn when it is sent: always on stdin
    on_stdin = len(turns) > 1 or not prompt_fits_argv(turns[0]) or inst.shares_pool
    spec = dataclasses.replace(
        spec,
        prompt=None if on_stdin else turns[0],
        resume=session_exists or spec.resume,
        max_budget_usd=cap,
    )
    return AttemptLaunch(
        tuple(build_argv(inst.claude_bin, spec)),
        turns,
        min(turns_done, max(len(inst.turns) - 1, 0)),
        spec.resume,
        on_stdin,
    )


@dataclass(frozen=True, slots=True)
class Ending:
    """How an attempt ended, as far as the retry rules need to know."""

    status: str  # the engine's Status value
    stopped_by_coordinator: bool  # a budget block, a timeout, a cancel, a stop command
    exit_code: int | None
    had_result: bool
    result_is_error: bool
    api_error_status: int | None
    error: str | None
    idle_timeout: bool = False
    spawn_failed: bool = False
    permission_denied: bool = False


def transient_cause(end: Ending) -> str | None:
    """Why a new attempt may succeed where this one failed (None: it would not). Never
    for budget blocks, cancels, wall-clock timeouts, bad config (spawn failures), bad
    credentials or requests, or permission refusals."""
    if end.status == "timeout":
        return "no output (idle timeout)" if end.idle_timeout else None
    if end.status != "failed" or end.spawn_failed or end.permission_denied:
        return None
    if end.stopped_by_coordinator:
        return None
    status = end.api_error_status
    if status is not None:
        if status in FINAL_API_STATUSES:
            return None
        if status in TRANSIENT_API_STATUSES or status >= 500:
            return "API overloaded" if status == 529 else f"API error {status}"
        return None
    if end.had_result and end.result_is_error:
        return None  # claude ended the turn with an error of its own (max turns, ...)
    if end.exit_code is not None and end.exit_code < 0:
        return "crashed (" + (end.error or "killed") + ")"
    if not end.had_result:
        return "crashed (" + (end.error or f"exit code {end.exit_code}") + ")"
    return None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 1
    backoff_s: float = 10.0  # before attempt 2; doubled for each later one
    backoff_cap_s: float = 300.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt ``attempt`` (2, 3, ...): exponential, capped,
        with up to 20 % jitter so instances that failed together do not return together."""
        base = min(self.backoff_cap_s, self.backoff_s * 2.0 ** max(0, attempt - 2))
        jitter: float = (rng or random.Random()).uniform(0, 0.2 * base)
        return min(self.backoff_cap_s, base + jitter)

    def allows(self, attempts_made: int) -> bool:
        return attempts_made < self.max_attempts
