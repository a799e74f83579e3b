"""Exact live token accounting for one instance. Pure.

Rules (../shared/reference/claude-cli.md, "Token accounting that is right"):

* One API response produces several ``assistant`` lines with the same ``message.id`` and
  the same usage: count input, cache creation and cache read once per message id.
* The usage on those lines is the ``message_start`` snapshot, whose ``output_tokens`` is a
  placeholder. The ``message_delta`` stream event carries the final output tokens of the
  message opened by the preceding ``message_start``: it replaces the placeholder.
* At ``result``, the CLI's figures replace the live sums for what that result covers
  (never added on top of them). With stream-json input one process serves several turns,
  each ending with a ``result``: verified on the pinned CLI, ``result.usage`` and
  ``num_turns`` cover that turn only, while ``total_cost_usd`` is cumulative for the
  process. So totals = sum of the results' usage + whatever streamed since the last one,
  and cost = the last ``total_cost_usd`` + an estimate for what streamed since.
* An instance may run as several processes (attempts: a retry, a resume after a usage
  limit or a crash). Each process reports its own cumulative cost from zero, so at
  :meth:`Accountant.next_process` what the last one spent (reported or estimated) becomes
  a base the next one adds to; tokens, tool calls and turns simply go on accumulating.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runner.events import (
    ApiRetry,
    Assistant,
    Event,
    MessageDelta,
    MessageStart,
    Result,
    Usage,
    UserToolResults,
)
from runner.pricing import estimate_cost

PERMISSION_MARKERS = ("requested permissions", "permission to use", "haven't granted")


@dataclass(slots=True)
class _Message:
    model: str | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    final_output: bool = False


@dataclass(slots=True)
class Accountant:
    """Feed it every event of one instance; read exact totals at any moment."""

    _messages: dict[str, _Message] = field(default_factory=dict)
    _open: dict[str | None, str] = field(default_factory=dict)  # parent tool id -> msg id
    _live: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    _at_result: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    _reconciled: Usage = field(default_factory=Usage)
    _cost_reported: float = 0.0
    _unreported_ids: list[str] = field(default_factory=list)
    # cost estimate cache: position of each unreported id, and running sums of the
    # per-message estimates in that order (valid below _estimate_valid); see cost_usd
    _unreported_pos: dict[str, int] = field(default_factory=dict)
    _estimate_sums: list[float] = field(default_factory=list)
    _estimate_valid: int = 0
    _tool_names: dict[str, str] = field(default_factory=dict)
    tool_calls: dict[str, int] = field(default_factory=dict)
    permission_denials: dict[str, int] = field(default_factory=dict)
    api_retries: dict[str, int] = field(default_factory=dict)
    last_retry: ApiRetry | None = None
    last_denial: str | None = None  # tool name of the most recent permission denial
    results: int = 0
    ok_results: int = 0  # results that were not errors: the turns an instance completed
    num_turns: int = 0
    last_result: Result | None = None  # of the current process
    model: str | None = None
    _cost_base: float = 0.0  # what earlier processes (attempts) spent
    _results_base: int = 0  # results of earlier processes
    _messages_base: int = 0  # API responses of attempts in another coordinator process

    # ------------------------------------------------------------------ attempts
    def next_process(self) -> None:
        """A new process (attempt) of the same instance starts: everything counted so far
        stays counted, including what streamed after the last result (a process killed
        mid-turn), and the new process's cumulative cost adds to what was spent."""
        self._cost_base = self.cost_usd
        self._cost_reported = 0.0
        self._reconciled = self.usage
        self._at_result = list(self._live)
        self._unreported_ids.clear()
        self._unreported_pos.clear()
        self._estimate_sums.clear()
        self._estimate_valid = 0
        self._open.clear()
        self._results_base = self.results
        self.last_result = None

    def seed(
        self,
        usage: Usage,
        cost_usd: float,
        tool_calls: dict[str, int],
        num_turns: int,
        ok_results: int,
        messages: int = 0,
    ) -> None:
        """Start from what earlier attempts of this instance (in another coordinator
        process, read back from the database) spent; only on a fresh accountant."""
        self._reconciled = usage
        self._cost_base = cost_usd
        self.tool_calls = dict(tool_calls)
        self.num_turns = num_turns
        self.ok_results = self.results = self._results_base = ok_results
        self._messages_base = messages

    @property
    def process_results(self) -> int:
        """Results of the current process only (its turns, for feeding the next)."""
        return self.results - self._results_base

    # ------------------------------------------------------------------ feeding
    def feed(self, event: Event) -> bool:
        """Account one event; True when the token totals changed."""
        if isinstance(event, MessageStart):
            self._open[event.parent_tool_use_id] = event.message_id
            return self._register(event.message_id, event.model, event.usage)
        if isinstance(event, MessageDelta):
            msg_id = self._open.get(event.parent_tool_use_id)
            return msg_id is not None and self._final_output(msg_id, event.output_tokens)
        if isinstance(event, Assistant):
            changed = False
            if event.usage is not None and event.message_id:
                changed = self._register(event.message_id, event.model, event.usage)
            for tool in event.tool_uses:
                if tool.id not in self._tool_names:
                    self._tool_names[tool.id] = tool.name
                    self.tool_calls[tool.name] = self.tool_calls.get(tool.name, 0) + 1
            return changed
        if isinstance(event, UserToolResults):
            for res in event.results:
                if res.is_error and any(m in res.text for m in PERMISSION_MARKERS):
                    name = self._tool_names.get(res.tool_use_id, "?")
                    self.permission_denials[name] = self.permission_denials.get(name, 0) + 1
                    self.last_denial = name
            return False
        if isinstance(event, ApiRetry):
            self.api_retries[event.error] = self.api_retries.get(event.error, 0) + 1
            self.last_retry = event
            return False
        if isinstance(event, Result):
            self._reconcile(event)
            return True
        return False

    def _register(self, msg_id: str, model: str | None, usage: Usage) -> bool:
        if msg_id in self._messages:
            msg = self._messages[msg_id]
            if not msg.final_output and usage.output_tokens > msg.output_tokens:
                self._live[1] += usage.output_tokens - msg.output_tokens
                msg.output_tokens = usage.output_tokens
                self._estimate_stale(msg_id)
                return True
            return False
        self._messages[msg_id] = _Message(
            model,
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_creation_tokens,
        )
        self._unreported_pos[msg_id] = len(self._unreported_ids)
        self._unreported_ids.append(msg_id)
        live = self._live
        live[0] += usage.input_tokens
        live[1] += usage.output_tokens
        live[2] += usage.cache_read_tokens
        live[3] += usage.cache_creation_tokens
        if model:
            self.model = model
        return True

    def _final_output(self, msg_id: str, output_tokens: int) -> bool:
        msg = self._messages.get(msg_id)
        if msg is None:
            return False
        self._live[1] += output_tokens - msg.output_tokens
        msg.output_tokens = output_tokens
        msg.final_output = True
        self._estimate_stale(msg_id)
        return True

    def _estimate_stale(self, msg_id: str) -> None:
        pos = self._unreported_pos.get(msg_id)
        if pos is not None and pos < self._estimate_valid:
            self._estimate_valid = pos

    def _reconcile(self, result: Result) -> None:
        self.results += 1
        if not result.is_error:
            self.ok_results += 1
        self.last_result = result
        for denial in result.permission_denials:
            if not self.permission_denials.get(denial.tool_name):
                self.permission_denials[denial.tool_name] = 1
        # usage and num_turns cover the turn this result ends; cost covers the process
        self._reconciled = self._reconciled + result.usage
        self.num_turns += result.num_turns
        if result.total_cost_usd is not None:
            self._cost_reported = result.total_cost_usd
        self._at_result = list(self._live)
        self._unreported_ids.clear()
        self._unreported_pos.clear()
        self._estimate_sums.clear()
        self._estimate_valid = 0

    # ------------------------------------------------------------------ reading
    @property
    def usage(self) -> Usage:
        """Exact totals now: the last reconciled result plus what streamed since."""
        live, base = self._live, self._at_result
        return self._reconciled + Usage(
            live[0] - base[0], live[1] - base[1], live[2] - base[2], live[3] - base[3]
        )

    @property
    def streamed_usage(self) -> Usage:
        """The sum over every API response seen, deduplicated, without reconciliation."""
        return Usage(*self._live)

    @property
    def cost_usd(self) -> float:
        """The CLI's reported cost, plus a price-table estimate for unreported messages.

        The estimate is the sum, in arrival order, of each unreported message's estimate.
        Read after every token change, it must not cost O(messages) each time (quadratic
        over a long session): the running sums are kept and only recomputed from the first
        message whose tokens changed since (nearly always the last one), with the same
        additions in the same order, so the figure is bit-for-bit what a full pass gives."""
        ids = self._unreported_ids
        sums = self._estimate_sums
        start = self._estimate_valid
        if start < len(ids):
            del sums[start:]
            estimate = sums[-1] if sums else 0.0
            messages = self._messages
            for msg_id in ids[start:]:
                m = messages[msg_id]
                estimate += estimate_cost(
                    m.model,
                    Usage(
                        m.input_tokens,
                        m.output_tokens,
                        m.cache_read_tokens,
                        m.cache_creation_tokens,
                    ),
                )
                sums.append(estimate)
            self._estimate_valid = len(ids)
        return self._cost_base + self._cost_reported + (sums[-1] if sums else 0.0)

    @property
    def cost_is_estimate(self) -> bool:
        return bool(self._unreported_ids) or self.results == 0

    @property
    def messages(self) -> int:
        return self._messages_base + len(self._messages)

    def message_tokens(self, message_id: str) -> int:
        """The tokens of one API response as streamed (all four kinds; 0 if unknown)."""
        m = self._messages.get(message_id)
        if m is None:
            return 0
        return m.input_tokens + m.output_tokens + m.cache_read_tokens + m.cache_creation_tokens

    @property
    def tool_call_count(self) -> int:
        return sum(self.tool_calls.values())
