"""Run one instance to the end: spawn, pump its stream through the pure core, feed turns,
watch for timeouts, stop on request. Everything it learns goes into ``InstanceState`` and
out through ``Hooks`` (budgets, database, barrier, status report)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from coordinator.control.attempts import AttemptLaunch, Ending, first_launch
from coordinator.engine.state import InstanceState, MilestoneHit, Status
from coordinator.limits import warning_text
from coordinator.redact import Redactor
from runner import aio
from runner.argv import user_turn_line
from runner.events import (
    UNPARSED,
    Activity,
    ApiRetry,
    Assistant,
    Event,
    MessageStart,
    RateLimit,
    Result,
    SystemInit,
    UserToolResults,
    parse_line,
)
from runner.framing import LineFramer
from runner.process import InstanceProcess, spawn_failure

# Events that show claude asked the API, so its session's transcript exists.
SESSION_WRITTEN = (MessageStart, Assistant, Result, ApiRetry)

RETRY_LABELS = {
    "authentication_failed": "auth error",
    "rate_limit": "rate limited",
    "overloaded": "API overloaded",
    "server_error": "API server error",
}


class Hooks(Protocol):
    def on_started(self, state: InstanceState) -> None: ...
    def on_tokens(self, state: InstanceState) -> None: ...
    def on_progress(self, state: InstanceState, crossed: list[int]) -> None: ...
    def on_status(self, state: InstanceState) -> None: ...
    def on_finished(self, state: InstanceState) -> None: ...
    async def before_turn(self, state: InstanceState, index: int) -> None: ...
    def on_stream(self, state: InstanceState, event: Event) -> None:
        """An assistant line, tool results or a result: what the pool reads."""
        ...

    def turn_text(self, state: InstanceState, index: int, text: str) -> str:
        """The text of turn ``index`` as it is sent now (a shared pool adds its digest)."""
        ...


@dataclass(frozen=True, slots=True)
class Limits:
    timeout: float | None = None  # wall-clock limit per instance
    idle_timeout: float = 300.0  # no output at all for this long
    post_result_grace: float = 15.0  # exit expected this soon after the final result
    stop_grace: float = 3.0  # SIGTERM -> SIGKILL
    max_line_length: int = 200
    max_console_lines: int = 20
    max_line_bytes: int | None = None


class InstanceRun:
    def __init__(
        self,
        state: InstanceState,
        env: Mapping[str, str],
        hooks: Hooks,
        limits: Limits,
        guardian_track: Callable[[int, str | None], None] | None = None,
        launch: AttemptLaunch | None = None,
    ) -> None:
        self.state = state
        self.launch = launch or first_launch(state.plan)
        self._spawn_failed = False
        self.attempt_started_unix = time.time()
        self._attempt_mono = time.monotonic()
        self._waited_before = 0.0
        self._paused_before = 0.0
        self.limit_at_start = state.rate_limit  # a limit seen before this attempt is old
        self.env = env
        self.hooks = hooks
        self.limits = limits
        self.proc: InstanceProcess | None = None
        self._stop: tuple[Status, str] | None = None
        self._stop_event = asyncio.Event()
        self._result_event = asyncio.Event()
        self._all_turns_done = False
        self._framer = LineFramer(limits.max_line_bytes)
        self._track = guardian_track
        self._held = False  # suspended by a barrier
        self._kill_deadline: float | None = None  # request_stop(kill_within=...): monotonic
        self._kill_timer: asyncio.TimerHandle | None = None
        # Every secret in the child's environment (and every config env value): masked in
        # whatever text of the child's the state keeps (tails, last event, errors).
        self._redact = Redactor.for_env(env, state.plan.env)

    # ----------------------------------------------------------------- control
    def request_stop(self, status: Status, reason: str, kill_within: float | None = None) -> None:
        """Stop (SIGTERM at once; the run loop reaps and escalates after the grace). With
        ``kill_within``: SIGKILLed no later than that many seconds from now, whatever the
        grace (the caller owes the deadline to someone else, e.g. a lease's end)."""
        if self._stop is None:
            self._stop = (status, reason)
            self._stop_event.set()
            if self.proc is not None:
                self.proc.terminate()  # at once: the run loop then reaps and escalates
        if kill_within is not None:
            self._kill_by(kill_within)

    def _kill_by(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        if self._kill_deadline is not None and self._kill_deadline <= deadline:
            return  # an earlier deadline stands
        self._kill_deadline = deadline
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        self._kill_timer = asyncio.get_running_loop().call_later(seconds, self._kill_now)

    def _kill_now(self) -> None:
        self._kill_timer = None
        if self.proc is not None:
            self.proc.kill()

    def suspend(self) -> None:
        """For a barrier: SIGSTOP the whole group until :meth:`resume`."""
        self._held = True
        if self.proc is not None and self.proc.returncode is None:
            self.proc.suspend()

    def resume(self) -> None:
        self._held = False
        if self.proc is not None and self.state.paused_since is None:  # else: stays paused
            self.proc.resume()

    def pause(self) -> None:
        """For a control command (the state says paused): SIGSTOP the whole group."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.suspend()

    def unpause(self) -> None:
        if self.proc is not None and not self._held:  # else: a barrier still holds it
            self.proc.resume()

    # ----------------------------------------------------------------- main
    async def run(self) -> None:
        state = self.state
        plan = state.plan
        launch = self.launch
        while state.status is Status.PAUSED and self._stop is None:  # paused before launch
            with contextlib.suppress(TimeoutError):
                await aio.wait_for(self._stop_event.wait(), 0.2)
        if self._stop is not None or state.status.finished:
            if self._stop is not None:
                self._finish(*self._stop, exc_code=None)
            return
        state.status = Status.STARTING
        if state.started_mono is None:  # the instance's first attempt in this process
            state.started_mono = time.monotonic()
            if state.started_unix is None:  # else: resumed, it started in an earlier one
                state.started_unix = time.time()
        state.ended_mono = state.ended_unix = None
        state.exit_code = state.error = state.reason = None
        self.attempt_started_unix = time.time()
        self._attempt_mono = time.monotonic()
        self._waited_before = state.waiting_s()  # at barriers in earlier attempts
        self._paused_before = state.pausing_s()  # paused in earlier attempts
        try:
            self.proc = await InstanceProcess.spawn(
                launch.argv, cwd=plan.workspace, env=self.env, stdin_pipe=launch.streams_input
            )
        except (OSError, ValueError) as exc:  # E2BIG, ENOEXEC, a bad #!, a NUL byte, ...
            why = spawn_failure(exc, launch.argv, plan.workspace, self.env)
            self._spawn_failed = True
            self._finish(Status.FAILED, why, exc_code=None)
            return
        if not launch.streams_input:  # the prompt went with the argv
            state.turns_sent = launch.first_turn + 1
        if self._track is not None:
            self._track(self.proc.pgid, self.proc.mark)
        state.pid = self.proc.pid
        state.status = Status.RUNNING if state.paused_since is None else Status.PAUSED
        if state.paused_since is not None:  # paused while it was starting
            self.proc.suspend()
        state.last_event = "started"
        state.last_activity_mono = time.monotonic()
        self.hooks.on_started(state)
        pump = asyncio.create_task(self._pump_stdout(), name=f"{plan.name}:stdout")
        errs = asyncio.create_task(self._pump_stderr(), name=f"{plan.name}:stderr")
        feeder = (
            asyncio.create_task(self._feed_turns(), name=f"{plan.name}:turns")
            if launch.streams_input
            else None
        )
        watchdog = asyncio.create_task(self._watchdog(pump), name=f"{plan.name}:watchdog")
        try:
            await asyncio.wait({pump, watchdog}, return_when=asyncio.FIRST_COMPLETED)
            if self._stop is not None:
                await self.proc.stop(self.limits.stop_grace)  # the reap included
            else:
                with contextlib.suppress(TimeoutError):
                    await aio.wait_for(self.proc.wait(), self.limits.post_result_grace)
                await self.proc.reap()
            await aio.wait_for(asyncio.gather(pump, errs, return_exceptions=True), 5.0)
        except asyncio.CancelledError:
            await asyncio.shield(self.proc.stop(self.limits.stop_grace))
            raise
        finally:
            for task in (feeder, watchdog):
                if task is not None and not task.done():
                    task.cancel()
            if self.proc.returncode is None:
                await self.proc.stop(0.5)
            if self._kill_timer is not None:  # reaped: nothing left for it to kill
                self._kill_timer.cancel()
                self._kill_timer = None
        self._conclude(self.proc.returncode)

    # ----------------------------------------------------------------- stream
    async def _pump_stdout(self) -> None:
        assert self.proc is not None
        framer = self._framer
        state = self.state
        while True:
            chunk = await self.proc.read_stdout()
            if not chunk:
                break
            state.bytes += len(chunk)
            state.last_activity_mono = time.monotonic()
            for line in framer.feed(chunk):
                self._line(line)
        tail = framer.finish()
        if tail:
            self._line(tail)
        state.skipped_lines += framer.skipped_lines  # oversized, on top of unparsed ones

    def _line(self, line: bytes) -> None:
        state = self.state
        state.lines += 1
        event = parse_line(line)
        if event is None:
            text = line.strip()
            if text:
                keep = 500 + self._redact.margin
                self._tail(state.output_tail, "[non-json] " + text[:keep].decode(errors="replace"))
            return
        if isinstance(event, Activity):
            if event is UNPARSED:  # looked like an event, was not JSON: counted, never fatal
                state.skipped_lines += 1
                self._tail(state.output_tail, "[unparsed] " + line[:500].decode(errors="replace"))
            return
        self._event(event)

    def _event(self, event: Event) -> None:
        state = self.state
        if not state.session_exists and isinstance(event, SESSION_WRITTEN):
            state.session_exists = True  # claude asked the API: the conversation is written
        if state.accountant.feed(event):
            self.hooks.on_tokens(state)
        state.measure.tools.feed(event)
        if isinstance(event, Assistant):
            for text in event.texts:
                for part in text.splitlines():
                    if part.strip():
                        state.last_event = self._tail(state.output_tail, part)
            for tool in event.tool_uses:
                state.last_event = f"tool: {tool.name}"
            self.hooks.on_stream(state, event)
            self._progress(event)
        elif isinstance(event, Result):
            self.hooks.on_stream(state, event)
            self._result(event)
        elif isinstance(event, ApiRetry):
            label = RETRY_LABELS.get(event.error, event.error.replace("_", " "))
            state.last_event = self._clip(f"{label}, retry {event.attempt}/{event.max_retries}")
            self.hooks.on_status(state)  # no tokens move during a retry storm
        elif isinstance(event, UserToolResults):
            self.hooks.on_stream(state, event)
            denied = state.accountant.last_denial
            if denied is not None and any(r.is_error for r in event.results):
                state.last_event = f"permission denied: {denied}"
                self.hooks.on_status(state)
        elif isinstance(event, SystemInit):
            state.init_version = event.claude_code_version
            state.last_event = "initialised"
        elif isinstance(event, RateLimit):
            state.rate_limit = event  # the latest; the CLI writes one only when it changes
            if event.warning:
                state.last_event = self._clip(warning_text(event, now=time.time()))
                self.hooks.on_status(state)

    def _result(self, event: Result) -> None:
        state = self.state
        state.last_event = f"result: {event.subtype}" + (" (error)" if event.is_error else "")
        if event.is_error:
            state.error = self._result_error(event)
        self._progress(event)
        if state.accountant.process_results >= len(self.launch.turns) or event.is_error:
            self._all_turns_done = True
            if self.proc is not None:
                self.proc.close_stdin()
        self._result_event.set()

    def _progress(self, event: Event) -> None:
        state = self.state
        if state.progress.feed(event):
            self._milestones()

    def _milestones(self) -> None:
        state = self.state
        crossed = state.milestones.crossed(state.progress.pct)
        if crossed:
            now_ms = int(time.time() * 1000)
            for pct in crossed:
                state.milestone_hits.append(MilestoneHit(pct, now_ms, state.duration_s()))
        self.hooks.on_progress(state, crossed)

    async def _pump_stderr(self) -> None:
        assert self.proc is not None
        framer = LineFramer(1 << 20)
        while True:
            chunk = await self.proc.read_stderr()
            if not chunk:
                break
            for line in framer.feed(chunk):
                text = line.decode(errors="replace").strip()
                if text:
                    self._tail(self.state.stderr_tail, text)

    # ----------------------------------------------------------------- turns
    async def _feed_turns(self) -> None:
        assert self.proc is not None
        state = self.state
        first = self.launch.first_turn
        for index, turn in enumerate(self.launch.turns):
            if index > 0:
                while state.accountant.process_results < index:
                    self._result_event.clear()
                    await self._result_event.wait()
                if self._all_turns_done or self._stop is not None:
                    return
                await self.hooks.before_turn(state, first + index)
                if self._stop is not None:
                    return
            text = self.hooks.turn_text(state, first + index, turn)
            if not await self.proc.write(user_turn_line(text, state.plan.session_id)):
                return
            state.turns_sent = first + index + 1

    # ----------------------------------------------------------------- watchdog
    async def _watchdog(self, pump: asyncio.Task[None]) -> None:
        state = self.state
        limits = self.limits
        while not pump.done():
            with contextlib.suppress(TimeoutError):
                await aio.wait_for(self._stop_event.wait(), 0.5)
            if self._stop is not None:
                return
            now = time.monotonic()
            if state.status in (Status.WAITING, Status.PAUSED):
                continue
            worked = (
                (now - self._attempt_mono)
                - (state.waiting_s(now) - self._waited_before)
                - (state.pausing_s(now) - self._paused_before)
            )
            if limits.timeout is not None and worked > limits.timeout:  # per attempt
                self.request_stop(Status.TIMEOUT, f"timed out after {limits.timeout:g}s")
                return
            idle = now - (state.last_activity_mono or now)
            if self._all_turns_done and idle > limits.post_result_grace:
                self.request_stop(Status.COMPLETED, "still running after its final result")
                return
            if idle > limits.idle_timeout:
                self.request_stop(Status.TIMEOUT, f"no output for {limits.idle_timeout:g}s")
                return

    # ----------------------------------------------------------------- ending
    def _conclude(self, code: int | None) -> None:
        state = self.state
        acct = state.accountant
        if self._stop is not None:
            status, reason = self._stop
            if status is Status.COMPLETED and not self._completed_ok():
                status = Status.FAILED
            self._finish(status, reason if status is not Status.COMPLETED else None, code)
            return
        if self._completed_ok() and code == 0:
            self._finish(Status.COMPLETED, None, code)
            return
        if state.error is None:
            if code is not None and code < 0:
                state.error = f"killed by {signal.Signals(-code).name}"
            elif acct.process_results < len(self.launch.turns):
                last = state.stderr_tail[-1] if state.stderr_tail else None
                state.error = f"exited with code {code} before its result" + (
                    f": {last}" if last else ""
                )
            else:
                state.error = f"exited with code {code}"
        self._finish(Status.FAILED, None, code)

    def _completed_ok(self) -> bool:
        acct = self.state.accountant
        last = acct.last_result
        return (
            acct.process_results >= len(self.launch.turns)
            and last is not None
            and not last.is_error
        )

    def ending(self) -> Ending:
        """How this attempt ended, for the retry rules."""
        state = self.state
        last = state.accountant.last_result
        return Ending(
            status=state.status.value,
            stopped_by_coordinator=self._stop is not None,
            exit_code=state.exit_code,
            had_result=last is not None,
            result_is_error=last is not None and last.is_error,
            api_error_status=last.api_error_status if last is not None else None,
            error=state.error,
            idle_timeout=self._stop is not None and self._stop[1].startswith("no output"),
            spawn_failed=self._spawn_failed or self._session_in_use(),
            permission_denied=last is not None
            and last.is_error
            and bool(state.accountant.permission_denials),
        )

    def _session_in_use(self) -> bool:
        return not self.launch.resumed and any(
            "already in use" in line for line in self.state.stderr_tail
        )

    def _finish(self, status: Status, reason: str | None, exc_code: int | None) -> None:
        state = self.state
        state.status = status
        state.exit_code = exc_code
        if reason:
            reason = state.reason = self._redact(reason)
            if status is not Status.COMPLETED:
                state.last_event = reason
            if status is Status.FAILED and state.error is None:
                state.error = reason
        if status is Status.COMPLETED:
            if state.progress.complete():
                self._milestones()
            state.last_event = "completed"
        if state.ended_mono is None:
            state.ended_mono = time.monotonic()
            state.ended_unix = time.time()
        if status is Status.FAILED and self._session_in_use():
            state.session_exists = True  # a later attempt (or resume) continues it
            state.error = (
                f"session {state.plan.session_id} is already in use: claude has a conversation "
                "under this id (set resume: true to continue it, or give another session_id)"
            )
        if state.error:
            state.error = self._redact(state.error)
        if status is Status.FAILED and state.error:
            state.last_event = self._clip(state.error)
        self.hooks.on_finished(state)

    def _result_error(self, event: Result) -> str:
        parts = [event.subtype]
        if event.api_error_status:
            parts.append(f"API {event.api_error_status}")
        if event.text:
            first = event.text.splitlines()[0]
            parts.append(self._redact.keep(first, 200))
        return ": ".join(parts)

    def _clip(self, text: str) -> str:
        """Text of the child's, as the state keeps it: secrets masked, then clipped."""
        return self._redact.keep(text, self.limits.max_line_length)

    def _tail(self, tail: deque[str], text: str) -> str:
        kept = self._clip(text)
        tail.append(kept)
        return kept
