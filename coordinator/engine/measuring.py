"""The engine's side of measuring (coordinator/measure/): samples on the orchestrator's
periodic tick (memory of each instance's process tree, time against its budget, a series
point), and the verify command after each instance ends. The rules are the measure room's;
this driver only applies them to live instances."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import structlog

from coordinator.engine.state import InstanceState, Status
from coordinator.measure.quality import (
    JUNIT_MAX_BYTES,
    VerifyOutcome,
    quality_of,
    structured_quality,
)
from coordinator.measure.rules import Action, memory_decision, time_decision
from coordinator.redact import Redactor
from runner.verify import run_command

log = structlog.get_logger("coordinator.measure")

RequestStop = Callable[[InstanceState, Status, str], None]


class MeasureDriver:
    def __init__(
        self,
        *,
        block_memory: bool,
        note: Callable[[str], None],
        changed: Callable[[InstanceState], None],
        stop: RequestStop,
    ) -> None:
        self._block = block_memory
        self._note = note
        self._changed = changed
        self._stop = stop

    # ------------------------------------------------------------------ sampling
    def point(self, state: InstanceState, now: float | None = None) -> None:
        acct = state.accountant
        state.measure.point(
            state.duration_s(now), acct.usage.total, acct.cost_usd, state.progress.pct
        )

    def sample(self, state: InstanceState, rss_bytes: int | None) -> None:
        """One tick for a live instance: its memory, its time, a series point."""
        now = time.monotonic()
        m = state.measure
        spec = m.spec
        changed = False
        if rss_bytes is not None:
            before = m.peak_mb
            mb = m.sample_memory(rss_bytes)
            changed = before is None or mb >= before + 1.0  # the peak moved a megabyte
            decision = memory_decision(
                mb,
                spec.memory_limit_mb,
                block=self._block,
                already=m.memory_exceeded_at_s is not None,
            )
            over = spec.memory_limit_mb is not None and mb > spec.memory_limit_mb
            if over and m.memory_exceeded_at_s is None:
                m.memory_exceeded_at_s = state.duration_s(now)
                changed = True
            if decision.action is Action.WARN:
                self._warn(state, f"memory warning: {state.name}: {decision.text}", decision.text)
            elif decision.action is Action.STOP and not state.status.finished:
                self._note(f"{state.name}: {decision.text}")
                self._stop(state, Status.BLOCKED, decision.text)
        decision = time_decision(
            state.worked_s(now),
            spec.time_budget_s,
            enforce=spec.enforce_time_budget,
            already=m.time_exceeded_at_s is not None,
        )
        if decision.action is not Action.NONE:
            m.time_exceeded_at_s = state.duration_s(now)
            changed = True
            if decision.action is Action.WARN:
                self._warn(state, f"{state.name}: {decision.text}", decision.text)
            elif not state.status.finished:
                self._note(f"{state.name}: {decision.text}")
                self._stop(state, Status.TIMEOUT, decision.text)
        self.point(state, now)
        if changed:
            self._changed(state)

    def _warn(self, state: InstanceState, note: str, text: str) -> None:
        state.last_event = text
        if text not in state.budget_notes:
            state.budget_notes.append(text)
        self._note(note)

    # ------------------------------------------------------------------ verify
    async def verify(
        self,
        state: InstanceState,
        env: Mapping[str, str],
        cancel: asyncio.Event,
        track: Callable[[int, str | None], None] | None = None,
        forget: Callable[[int], None] | None = None,
    ) -> None:
        """Run the instance's verify command in its workspace (it has ended, completed or
        not) and record its quality. Never raises for what the command does."""
        spec = state.measure.spec
        verify = spec.verify
        if state.attempts == 0 or cancel.is_set():
            return
        if verify is None:
            if spec.structured_output:
                self._structured(state)
            return
        ran_after = state.status.value
        workspace = state.plan.workspace
        junit = _junit_path(workspace, verify.junit)
        before = _stat(junit)
        full_env = {**env, **verify.env}
        redact = Redactor.for_env(full_env, {**state.plan.env, **verify.env})
        state.last_event = f"verifying: {Path(verify.argv[0]).name}"
        self._changed(state)
        run = await run_command(
            verify.argv,
            cwd=workspace,
            env=full_env,
            timeout_s=verify.timeout_s,
            cancel=cancel,
            track=track,
            forget=forget,
        )
        junit_data = None
        if junit is not None and not run.timed_out and not run.cancelled:
            junit_data = _read_new(junit, workspace, before)
        quality = quality_of(
            VerifyOutcome(
                argv=verify.argv,
                exit_code=run.exit_code,
                duration_s=run.duration_s,
                timed_out=run.timed_out,
                stdout=run.stdout_tail,
                junit=junit_data,
            ),
            expected=spec.expected_quality,
            ran_after=ran_after,
            quality_metrics=spec.quality_metrics,
        )
        # metric names come from the command's output: masked like any of its text (and a
        # config env value in its argv, as dry-run shows it)
        quality["metrics"] = {redact(k): v for k, v in quality["metrics"].items()}
        quality["verify"]["argv"] = [redact(arg) for arg in verify.argv]
        state.measure.quality = quality
        state.last_event = redact.keep(_summary(quality, run.error, run.cancelled), 200)
        self._note(f"{state.name}: {state.last_event}")
        log.info(
            "verify ended",
            instance=state.name,
            exit_code=run.exit_code,
            timed_out=run.timed_out,
            cancelled=run.cancelled,
            score=quality["score"],
            stderr=redact.keep(run.stderr_tail[-400:].decode(errors="replace"), 400),
        )
        self._changed(state)

    def _structured(self, state: InstanceState) -> None:
        """No verify command, but claude ran with --json-schema: its structured output is
        the instance's self-reported quality."""
        spec = state.measure.spec
        last = state.accountant.last_result
        output = last.structured_output if last is not None else None
        redact = Redactor.for_env({}, state.plan.env)
        quality = structured_quality(
            output,
            expected=spec.expected_quality,
            ran_after=state.status.value,
            quality_metrics=spec.quality_metrics,
        )
        quality["metrics"] = {redact(k): v for k, v in quality["metrics"].items()}
        state.measure.quality = quality
        score = quality["score"]
        shown = f"{score:.2f}" if isinstance(score, float) else "unknown"
        self._note(f"{state.name}: quality {shown} (structured output)")
        self._changed(state)


def _junit_path(workspace: Path, junit: str | None) -> Path | None:
    return workspace / junit if junit is not None else None


def _stat(path: Path | None) -> tuple[int, int, int] | None:
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _read_new(path: Path, workspace: Path, before: tuple[int, int, int] | None) -> bytes | None:
    """The JUnit file, if this verify run wrote it (an old one never counts) and it is a
    regular file inside the workspace (not a link out of it)."""
    after = _stat(path)
    if after is None or after == before:
        return None
    try:
        if not path.resolve().is_relative_to(workspace.resolve()):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return fh.read(JUNIT_MAX_BYTES + 1)


def _summary(quality: dict[str, object], error: str | None, cancelled: bool) -> str:
    if error is not None:
        return f"verify could not start: {error}"
    if cancelled:
        return "verify interrupted: no quality measured"
    verify = quality["verify"]
    assert isinstance(verify, dict)
    score = quality["score"]
    text = f"quality {score:.2f}" if isinstance(score, float) else "quality unknown"
    junit = verify.get("junit")
    if isinstance(junit, dict):
        ran = junit["tests"] - junit["skipped"]
        passed = ran - junit["failures"] - junit["errors"]
        skipped = f", {junit['skipped']} skipped" if junit["skipped"] else ""
        text += f" (junit {passed}/{ran} passed{skipped})"
    elif verify.get("timed_out"):
        text += " (verify timed out)"
    else:
        text += f" ({quality['source']}, exit {verify.get('exit_code')})"
    expected = quality["expected"]
    if isinstance(expected, float | int):
        text += f"; expected {expected:g}: " + ("met" if quality["met"] else "not met")
    return text
