"""Run a whole plan: staggered launches, live budgets, signals, the status report, results.

Failure isolation: each instance is its own task with its own process group; nothing one
instance does (crash, garbage, hang, API retry storm) blocks the loop the others share.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import structlog

from coordinator.barrier import Barrier, MemoryBarrier, open_barrier
from coordinator.budget.rules import Budget, BudgetBook, BudgetEvent, BudgetScope, budgets_from_plan
from coordinator.config.models import BudgetMode, SyncMode
from coordinator.control.attempts import (
    CONTINUE_PROMPT,
    AttemptLaunch,
    RetryPolicy,
    first_launch,
    next_launch,
    transient_cause,
)
from coordinator.db.store import Store
from coordinator.engine.config_dir import create_config_dir, remove_config_dir
from coordinator.engine.instance import InstanceRun, Limits
from coordinator.engine.measuring import MeasureDriver
from coordinator.engine.sink import NullSink, RunSink
from coordinator.engine.state import AttemptRecord, InstanceState, MilestoneHit, Status
from coordinator.engine.sync import BARRIER_TROUBLE, SyncDriver
from coordinator.limits import LimitGate, account_key, limit_of, limit_text
from coordinator.measure.record import InstanceMeasures
from coordinator.plan import PlannedInstance, RunPlan
from coordinator.pool.driver import PoolDriver
from runner import aio
from runner.accounting import Accountant
from runner.events import Event
from runner.guardian import Guardian
from runner.process import ProcIdentity, become_subreaper, descendants_by_leader, tree_rss
from runner.progress import MilestoneTracker, ProgressTracker

log = structlog.get_logger("coordinator.engine")

CHILD_ENV_DEFAULTS = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_AUTOUPDATER": "1",
}
CHILD_ENV_REMOVE = ("CLAUDECODE", "CLAUDE_CODE_ENTRYPOINT")
# Each ends the run the same way: stop every instance, write results, close the database.
# SIGHUP is a closed terminal or a dropped ssh session: an unattended run's usual death.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# An instance with no process now that will have one: the next attempt is due later.
BETWEEN_ATTEMPTS = frozenset({Status.RETRYING, Status.RATE_LIMITED})


def child_env(
    base: Mapping[str, str],
    inst: PlannedInstance,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The coordinator's environment, minus the nested-session guard, plus the instance's
    identity (coordinator.pool.identity), plus the config's (which wins)."""
    env = {k: v for k, v in base.items() if k not in CHILD_ENV_REMOVE}
    for key, value in CHILD_ENV_DEFAULTS.items():
        env.setdefault(key, value)
    env.update(inst.identity)
    if extra:
        env.update(extra)
    env.update(inst.env)
    return env


@dataclass(slots=True)
class RunOutcome:
    orchestration_id: str
    started_unix: float
    ended_unix: float
    states: list[InstanceState]
    budgets: BudgetBook
    interrupted: bool
    notes: list[str] = field(default_factory=list)
    sync: dict[str, object] = field(default_factory=dict)
    pool: dict[str, object] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 0 if all(s.status is Status.COMPLETED for s in self.states) else 1


class Orchestrator:
    def __init__(
        self,
        plan: RunPlan,
        *,
        base_env: Mapping[str, str],
        limits: Limits,
        sink: RunSink | None = None,
        instance_env: Callable[[PlannedInstance], Mapping[str, str]] | None = None,
        on_note: Callable[[str], None] | None = None,
        guardian: bool = True,
        handle_signals: bool = True,
        barrier_dsn: str | None = None,
        barrier_poll_s: float = 1.0,
        sync_rejoin: bool = False,
        keep_config_dirs: Path | None = None,
        pool_store: Store | None = None,
        shared_guardian: Guardian | None = None,
        barrier: Barrier | None = None,
        scan_descendants: bool = True,
    ) -> None:
        self.plan = plan
        self.base_env = base_env
        self.limits = limits
        self.sink: RunSink = sink or NullSink()
        self.instance_env = instance_env
        self.on_note = on_note
        self.budgets = budgets_from_plan(plan)
        self.block = plan.budget.mode is BudgetMode.BLOCK
        self.states: dict[str, InstanceState] = {
            inst.name: InstanceState(
                plan=inst,
                accountant=Accountant(),
                progress=ProgressTracker(total_steps=max(1, len(inst.turns))),
                milestones=MilestoneTracker(tuple(plan.sync.milestones)),
                output_tail=deque(maxlen=limits.max_console_lines),
                stderr_tail=deque(maxlen=limits.max_console_lines),
                measure=InstanceMeasures(spec=inst.measure),
            )
            for inst in plan.instances
        }
        self.measuring = MeasureDriver(
            block_memory=self.block,
            note=self._note,
            changed=self.sink.instance_changed,
            stop=self._stop_measured,
        )
        self.runs: dict[str, InstanceRun] = {}
        self._launches: dict[str, asyncio.Task[None]] = {}
        self.notes: list[str] = []
        self.cancelled: str | None = None
        self._cancel_event = asyncio.Event()
        self._use_guardian = guardian
        # one guardian for several engines in one process (a fleet runner): not closed here
        self._shared_guardian = shared_guardian
        self._handle_signals = handle_signals  # False: the caller routes them to cancel()
        self._guardian: Guardian | None = None
        self._barrier_dsn = barrier_dsn
        self._barrier_poll_s = barrier_poll_s
        self._sync_rejoin = sync_rejoin  # held by a claim (a fleet runner): see SyncDriver.open
        # a barrier several engines of one process share (a fleet runner's, per run)
        self._given_barrier = barrier
        # False: the caller scans the process table for several engines at once and
        # hands each its part (take_scan): a fleet runner, one pass for all it holds
        self._scan_own = scan_descendants
        # isolate_config_dir with a database: each instance's dir is kept here until it
        # completes, so that a resume (another process) finds its session's transcript
        self._keep_config_dirs = (
            keep_config_dirs / plan.orchestration_id if keep_config_dirs is not None else None
        )
        self.sync: SyncDriver | None = None
        self.pool = PoolDriver(plan, note=self._note, run_of=self.runs.get, store=pool_store)
        # between attempts: why each instance goes on, when, and what wakes its wait early
        self._next: dict[str, tuple[float, str]] = {}
        self._wakes: dict[str, asyncio.Event] = {}
        # usage limits: an account its limit rejected gets no launch until its reset
        self.gate = LimitGate(
            jitter_s=plan.usage_limit_jitter_s, fallback_s=plan.usage_limit_fallback_s
        )
        self._accounts: dict[str, str] = {}
        self.started_mono = time.monotonic()
        self.started_unix = time.time()

    # ------------------------------------------------------------------ public
    async def run(self) -> RunOutcome:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS if self._handle_signals else ():
            loop.add_signal_handler(sig, self.cancel, f"interrupted by {sig.name}")
        become_subreaper()
        if self._use_guardian and self._shared_guardian is not None:
            self._guardian = self._shared_guardian
        elif self._use_guardian:
            try:
                self._guardian = Guardian()
            except OSError as exc:
                self._note(
                    f"UNGUARDED RUN: the guardian cannot be started ({exc}); if this "
                    "coordinator is killed, its instances keep running"
                )
        try:
            await self.sink.open(self.plan, socket.gethostname(), self._note)
            await self.pool.open()
            self.sync = await self._open_sync()
            self.started_mono = time.monotonic()
            self.started_unix = time.time()
            self._launches = {
                inst.name: asyncio.create_task(self._launch(inst), name=f"launch:{inst.name}")
                for inst in self.plan.instances
            }
            helpers = []
            if self._scan_own:
                helpers.append(asyncio.create_task(self._scan_descendants(), name="descendants"))
            if self.sync.active:
                helpers.append(asyncio.create_task(self._refresh_sync(), name="sync-status"))
            try:
                await asyncio.gather(*self._launches.values(), return_exceptions=True)
            finally:
                for task in helpers:
                    task.cancel()
        finally:
            await self.pool.close()
            if self.sync is not None:
                await self._close_sync(self.sync)
            if self._handle_signals:
                self._after_run_signals(loop)
            if self._guardian is not None and self._guardian is not self._shared_guardian:
                await asyncio.to_thread(self._guardian.close)
        return self.outcome()

    def outcome(self) -> RunOutcome:
        """What the run did so far (at its end: everything)."""
        return RunOutcome(
            orchestration_id=self.plan.orchestration_id,
            started_unix=self.started_unix,
            ended_unix=time.time(),
            states=list(self.states.values()),
            budgets=self.budgets,
            interrupted=self.cancelled is not None,
            notes=self.notes,
            sync=self.sync.summary() if self.sync is not None else {},
            pool=self.pool.summary(),
        )

    @property
    def guardian_pid(self) -> int | None:
        """The guardian process that reaps instances if this process dies (None: none)."""
        return self._guardian.pid if self._guardian is not None else None

    def cancel(self, reason: str = "cancelled", kill_within: float | None = None) -> None:
        """Stop every instance. ``kill_within``: each is SIGKILLed no later than that many
        seconds from now, whatever the stop's grace (also when a stop is already under way:
        the earlier deadline stands)."""
        if self.cancelled is not None:  # a second signal while stopping: the stop under
            if kill_within is not None:  # way is bounded, but a deadline may be nearer
                for run in self.runs.values():
                    run.request_stop(Status.CANCELLED, reason, kill_within)
            return
        self.cancelled = reason
        self._cancel_event.set()
        for run in self.runs.values():  # first: nothing (not even the note) may delay this
            run.request_stop(Status.CANCELLED, reason, kill_within)
        self._note(f"{reason}: stopping every instance")

    def _after_run_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        """Once every instance has ended, the caller still writes the results and closes
        the database. SIGTERM and SIGHUP (which kill by default, and a hang-up often comes
        twice: from the kernel and from the shell) are then only noted until the loop
        closes; SIGINT gets its default back, so Ctrl-C can still break a hung exit."""
        loop.remove_signal_handler(signal.SIGINT)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self._late_signal, sig)

    def _late_signal(self, sig: signal.Signals) -> None:
        self._note(f"{sig.name} after every instance ended: still writing the results")

    # ------------------------------------------------------------------ barrier
    async def _open_sync(self) -> SyncDriver:
        """The barrier of ``plan.sync.mode``: on Postgres when the run has a database (so
        runners in other processes can join), else in memory. A database that cannot hold
        the barrier falls back to memory, loudly: this process's instances still sync."""
        plan = self.plan
        names = [inst.name for inst in plan.instances]
        barrier: Barrier
        if self._given_barrier is not None and plan.sync.mode is not SyncMode.FREE:
            barrier = self._given_barrier  # not closed here: SharedBarrier.close is a no-op
        else:
            try:
                barrier = await open_barrier(
                    plan.sync.mode,
                    plan.orchestration_id,
                    self._barrier_dsn,
                    participants=names,
                    timeout_s=plan.sync.timeout_s,
                    poll_interval_s=self._barrier_poll_s,
                )
            except BARRIER_TROUBLE as exc:
                self._note(f"barrier database unavailable, syncing in this process only: {exc}")
                barrier = MemoryBarrier(plan.orchestration_id, names, plan.sync.timeout_s)
        driver = SyncDriver(
            plan,
            barrier,
            states=self.states,
            note=self._note,
            run_of=self.runs.get,
            changed=self.sink.instance_changed,
        )
        await driver.open(names, rejoin=self._sync_rejoin)
        return driver

    async def _close_sync(self, sync: SyncDriver, deadline_s: float = 10.0) -> None:
        """Bounded: a barrier whose database went away must not hold the run's end."""
        try:
            await aio.wait_for(sync.close(), deadline_s)
        except TimeoutError:
            self._note(f"barrier did not close within {deadline_s:g}s (database away?)")

    async def _refresh_sync(self, interval: float = 0.5) -> None:
        assert self.sync is not None
        while True:
            await self.sync.refresh()
            await asyncio.sleep(interval)

    def sync_line(self) -> str | None:
        return self.sync.sync_line() if self.sync is not None else None

    # ------------------------------------------------------------------ launching
    async def _launch(self, inst: PlannedInstance) -> None:
        state = self.states[inst.name]
        delay = self.started_mono + inst.offset_s - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await aio.wait_for(self._cancel_event.wait(), delay)
        if self.cancelled is not None:
            self._end_unlaunched(state, Status.CANCELLED, f"not launched: {self.cancelled}")
            return
        if state.status is Status.SKIPPED:
            return
        extra = self.instance_env(inst) if self.instance_env else None
        env = child_env(self.base_env, inst, extra)
        env.update(self.pool.env_for(inst.name))  # block mode: where its hook asks
        self._accounts[inst.name] = account_key(env)  # the user's login, not a copy of it
        config_dir = None
        try:
            launch = self._first_attempt(state)
            while (
                launch is not None and await self._through_gate(state) and self._may_launch(state)
            ):
                if config_dir is None and self.plan.config.orchestration.isolate_config_dir:
                    # kept over every attempt: the session's transcript lives in it
                    config_dir = create_config_dir(env, inst.name, self._keep_config_dirs)
                    env["CLAUDE_CONFIG_DIR"] = str(config_dir)
                await self._attempt(state, env, launch)
                launch = await self._between_attempts(state)
            if state.name not in self.runs:
                return  # not launched by this process: nothing new to verify
            await self.measuring.verify(
                state,
                env,
                self._cancel_event,
                track=self._guardian.track_group if self._guardian else None,
                forget=self._guardian.forget_group if self._guardian else None,
            )
        finally:
            if self._keep_config_dirs is None or state.status is Status.COMPLETED:
                remove_config_dir(config_dir)
                with contextlib.suppress(OSError):  # the last one out removes the run's dir
                    if self._keep_config_dirs is not None:
                        self._keep_config_dirs.rmdir()

    def _first_attempt(self, state: InstanceState) -> AttemptLaunch | None:
        """The plan's own launch, or (an instance resumed from an earlier coordinator run)
        one that continues its session."""
        if state.attempts == 0 and not state.session_exists and state.turns_done == 0:
            return first_launch(state.plan)
        return self._later_attempt(state)

    def _may_launch(self, state: InstanceState) -> bool:
        if self.cancelled is not None or state.status.finished:
            return False
        if self.block:
            spent = self.budgets.spent_for(state.name)
            if spent is not None:
                if state.attempts == 0:
                    self._skip_state(state, spent)
                else:
                    self._end_unlaunched(
                        state, Status.BLOCKED, f"blocked: {spent.describe_limit()} exceeded"
                    )
                return False
        return True

    async def _attempt(
        self, state: InstanceState, env: dict[str, str], launch: AttemptLaunch
    ) -> None:
        if state.attempts > 0 or state.session_exists:
            state.accountant.next_process()
        state.attempts += 1
        state.retry_at_unix = None
        state.limit_waiting = False
        run = InstanceRun(
            state,
            env,
            self,
            self.limits,
            guardian_track=self._guardian.track_group if self._guardian else None,
            launch=launch,
        )
        self.runs[state.name] = run
        await run.run()

    async def _between_attempts(self, state: InstanceState) -> AttemptLaunch | None:
        """After an attempt that earned another (see ``on_finished``): wait for it (a stop
        or a cancel ends the wait at once), then the launch that continues the session."""
        why = await self._wait_due(state)
        if why is None:
            return None
        launch = self._later_attempt(state)
        if launch is None:
            self._end_unlaunched(
                state, Status.BLOCKED, "blocked: its cost cap is spent (max_cost_usd)"
            )
        else:
            self._note(f"{state.name}: attempt {state.attempts + 1} ({why})")
        return launch

    async def _wait_due(self, state: InstanceState) -> str | None:
        """Wait until the instance's next launch is due; its reason, or None if the run or
        the instance ended meanwhile."""
        due = self._next.pop(state.name, None)
        if due is None:
            return None
        at_unix, why = due
        wake = self._wakes.setdefault(state.name, asyncio.Event())
        wake.clear()
        waits = [
            asyncio.ensure_future(self._cancel_event.wait()),
            asyncio.ensure_future(wake.wait()),
        ]
        try:
            await asyncio.wait(waits, timeout=max(0.0, at_unix - time.time()))
        finally:
            for task in waits:
                task.cancel()
        if self.cancelled is not None and not state.status.finished:
            self._end_unlaunched(state, Status.CANCELLED, f"not launched: {self.cancelled}")
        return None if state.status.finished else why

    def _later_attempt(self, state: InstanceState) -> AttemptLaunch | None:
        return next_launch(
            state.plan,
            turns_done=state.turns_done,
            turn_started=state.turns_sent > state.turns_done,
            session_exists=state.session_exists,
            cost_spent=state.accountant.cost_usd,
            continue_text=self.plan.continue_prompt or CONTINUE_PROMPT,
        )

    async def _through_gate(self, state: InstanceState) -> bool:
        """Wait while the instance's account is closed by a usage limit (no launch, no
        resume on it before the reset); False if the run or the instance stopped meanwhile."""
        account = self._accounts[state.name]
        while not self.gate.is_open(account, time.time()):
            closure = self.gate.closure(account)
            assert closure is not None
            if state.status is not Status.RATE_LIMITED:
                state.status = Status.RATE_LIMITED
                state.limit_waiting = True
                state.retry_at_unix = closure.open_at
                state.last_event = "waiting: " + limit_text(closure.resets_at, closure.limit_type)
                self.sink.instance_changed(state)
            self._next[state.name] = (closure.open_at, "the usage limit reset")
            if await self._wait_due(state) is None:
                return False
        return self.cancelled is None and not state.status.finished

    def _limit_due(self, state: InstanceState) -> tuple[float, str, float | None] | None:
        """Did the attempt that just ended hit the account's usage limit? Then it resumes
        by itself at the reset (plus jitter), and the account gets no launch until then."""
        run = self.runs.get(state.name)
        if run is None or self.cancelled is not None or run.ending().stopped_by_coordinator:
            return None
        fresh = state.rate_limit if state.rate_limit is not run.limit_at_start else None
        limited = limit_of(state.accountant.last_result, fresh, now=time.time())
        if limited is None:
            return None
        account = self._accounts.get(state.name, "")
        open_at = self.gate.reject(account, limited.resets_at, limited.limit_type, time.time())
        return open_at, limit_text(limited.resets_at, limited.limit_type), limited.resets_at

    def _retry_due(self, state: InstanceState) -> tuple[float, str] | None:
        """Does the attempt that just ended earn another? (When, and why.)"""
        run = self.runs.get(state.name)
        if run is None or self.cancelled is not None:
            return None
        cause = transient_cause(run.ending())
        policy = RetryPolicy(state.plan.max_attempts, self.plan.retry_backoff_s)
        if cause is None or not policy.allows(state.attempts - state.limited_attempts):
            return None
        return time.time() + policy.delay(state.attempts + 1), cause

    def _record_attempt(
        self, state: InstanceState, then: str | None, limit_resets_at: float | None = None
    ) -> None:
        run = self.runs.get(state.name)
        state.attempt_log.append(
            AttemptRecord(
                attempt=state.attempts,
                status=state.status.value,
                started_unix=run.attempt_started_unix if run is not None else None,
                ended_unix=state.ended_unix,
                exit_code=state.exit_code,
                error=state.error,
                total_tokens=state.accountant.usage.total,
                cost_usd=state.accountant.cost_usd,
                resumed=run.launch.resumed if run is not None else False,
                then=then,
                limit_resets_at=limit_resets_at,
            )
        )

    def _end_unlaunched(self, state: InstanceState, status: Status, reason: str) -> None:
        """End an instance that has no process now: never launched, or between attempts."""
        state.status = status
        state.reason = reason
        state.last_event = reason
        state.retry_at_unix = None
        if state.started_mono is not None and state.ended_mono is None:
            state.ended_mono = time.monotonic()
            state.ended_unix = time.time()
        self._next.pop(state.name, None)
        wake = self._wakes.get(state.name)
        if wake is not None:
            wake.set()
        self.sink.instance_changed(state)
        if self.sync is not None:
            self.sync.on_finished(state)

    async def _scan_descendants(self, interval: float = 1.0) -> None:
        """Record every process each instance starts, even one that leaves the instance's
        process group or session, so that stopping (or the guardian, if the coordinator
        dies) can reach it; and keep the guardian alive."""
        while True:
            await asyncio.sleep(interval)
            if self._guardian is not None:
                note = await asyncio.to_thread(self._guardian.check)
                if note is not None:
                    self._note(note)
            procs = self.scan_leaders()
            if not procs:
                continue
            found, rss = await asyncio.to_thread(scan_trees, set(procs))
            self.take_scan(found, rss)

    def scan_leaders(self) -> set[int]:
        """The pids of the instances running now (the leaders a scan looks under)."""
        return {
            run.proc.pid
            for run in self.runs.values()
            if run.proc is not None and run.proc.returncode is None
        }

    def take_scan(
        self, found: Mapping[int, set[ProcIdentity]], rss: Mapping[int, int | None]
    ) -> None:
        """What a scan found under this engine's leaders: remembered (stopping and the
        guardian reach them) and the same tick measures them."""
        procs = {run.proc.pid: run.proc for run in self.runs.values() if run.proc is not None}
        for leader, idents in found.items():
            proc = procs.get(leader)
            if proc is None:
                continue
            proc.tree.seen |= idents
            if self._guardian is not None:
                for ident in idents:
                    self._guardian.track_process(ident.pid, ident.create_time)
        for run in list(self.runs.values()):
            if run.proc is not None and run.proc.pid in rss and not run.state.status.finished:
                self.measuring.sample(run.state, rss[run.proc.pid])

    def _stop_measured(self, state: InstanceState, status: Status, reason: str) -> None:
        """Over its memory limit (block mode) or its enforced time budget: stopped."""
        run = self.runs.get(state.name)
        if run is not None and not state.status.finished:
            run.request_stop(status, reason)

    # ------------------------------------------------------------------ hooks
    def on_started(self, state: InstanceState) -> None:
        log.info("instance started", instance=state.name, pid=state.pid)
        at_ms = int((state.started_unix or time.time()) * 1000)
        self.sink.milestone(state, MilestoneHit(0, at_ms, 0.0), "started")
        self.measuring.point(state)
        self.sink.instance_changed(state)

    def on_tokens(self, state: InstanceState) -> None:
        acct = state.accountant
        events = self.budgets.update(state.name, acct.usage, acct.cost_usd)
        for event in events:
            self._budget_event(state, event)
        self.sink.instance_changed(state)

    def on_stream(self, state: InstanceState, event: Event) -> None:
        self.pool.feed(state, event)

    def turn_text(self, state: InstanceState, index: int, text: str) -> str:
        return self.pool.turn_text(state.name, text)

    def on_progress(self, state: InstanceState, crossed: list[int]) -> None:
        self.pool.milestone(state, crossed)
        for hit in state.milestone_hits[-len(crossed) :] if crossed else ():
            self.sink.milestone(state, hit, f"{hit.pct}%")
        self.sink.instance_changed(state)
        if self.sync is not None:
            self.sync.on_progress(state, crossed)

    def on_status(self, state: InstanceState) -> None:
        """Something worth showing elsewhere (an API retry, a denial) with no tokens."""
        self.sink.instance_changed(state)

    def on_finished(self, state: InstanceState) -> None:
        if state.status is not Status.COMPLETED:
            limited = self._limit_due(state)
            if limited is not None:
                self._limited(state, limited)
                return
            due = self._retry_due(state)
            if due is not None:
                self._again(state, due)
                return
        self._record_attempt(state, None)
        log.info(
            "instance finished",
            instance=state.name,
            status=state.status.value,
            exit_code=state.exit_code,
            tokens=state.accountant.usage.total,
            error=state.error,
        )
        self._forget_group(state)
        if state.status is Status.COMPLETED:
            at_ms = int((state.ended_unix or time.time()) * 1000)
            self.sink.milestone(state, MilestoneHit(100, at_ms, state.duration_s()), "completed")
        self.measuring.point(state)
        self.sink.instance_changed(state)
        if self.sync is not None:
            self.sync.on_finished(state)

    def _limited(self, state: InstanceState, due: tuple[float, str, float | None]) -> None:
        """The attempt ended on the account's usage limit: it resumes at the reset."""
        at_unix, text, resets_at = due
        state.limited_attempts += 1
        state.limit_waiting = True
        state.error = None
        self._next_attempt(
            state,
            Status.RATE_LIMITED,
            at_unix,
            why="after the usage limit reset",
            shown=text,
            then=f"{text}: resumes its session at the reset",
            note=f"{text}; it resumes its session by itself at the reset, and no instance "
            "on this account is launched until then",
            limit_resets_at=resets_at,
        )

    def _again(self, state: InstanceState, due: tuple[float, str]) -> None:
        """The attempt failed for a transient cause and earns another after a backoff."""
        at_unix, why = due
        failed = state.error or state.reason or state.status.value
        wait = max(0.0, at_unix - time.time())
        then = f"attempt {state.attempts + 1}/{state.plan.max_attempts} in {wait:.0f} s: {why}"
        self._next_attempt(
            state,
            Status.RETRYING,
            at_unix,
            why=why,
            shown=then,
            then=then,
            note=f"attempt {state.attempts} failed ({failed}); {then}",
        )

    def _next_attempt(
        self,
        state: InstanceState,
        status: Status,
        at_unix: float,
        *,
        why: str,
        shown: str,
        then: str,
        note: str,
        limit_resets_at: float | None = None,
    ) -> None:
        """The instance waits without a process, still a participant of the run (its
        barrier place, its budgets), until its next attempt is due at ``at_unix``."""
        self._forget_group(state)
        self._record_attempt(state, then, limit_resets_at)
        self._next[state.name] = (at_unix, why)
        state.status = status
        state.retry_at_unix = at_unix
        state.last_event = shown
        self._note(f"{state.name}: {note}")
        self.sink.instance_changed(state)

    def _forget_group(self, state: InstanceState) -> None:
        run = self.runs.get(state.name)
        if self._guardian is not None and run is not None and run.proc is not None:
            self._guardian.forget_group(run.proc.pgid)  # reaped: the pgid is free for reuse

    async def before_turn(self, state: InstanceState, index: int) -> None:
        if self.sync is not None:
            await self.sync.before_turn(state, index)
            self.sink.instance_changed(state)

    # ------------------------------------------------------------------ budgets
    def _budget_event(self, state: InstanceState, event: BudgetEvent) -> None:
        message = event.message()
        if event.exceeded and self.block:
            self._block(event.budget, event.instance)
            return
        if message not in state.budget_notes:
            state.budget_notes.append(message)
        self._note(("budget warning: " if not event.exceeded else "budget exceeded: ") + message)

    def budget_events(self, state: InstanceState, events: Sequence[BudgetEvent]) -> None:
        """Crossings counted outside this engine (the run's instances on other runners,
        coordinator/fleet/budgets.py), handled as its own are."""
        for event in events:
            self._budget_event(state, event)

    def _block(self, budget: Budget, crossing: str) -> None:
        reason = f"blocked: {budget.describe_limit()} exceeded"
        members = (
            list(self.states) if budget.scope is BudgetScope.OVERALL else sorted(budget.members)
        )
        for name in members:
            state = self.states[name]
            run = self.runs.get(name)
            if state.status in BETWEEN_ATTEMPTS:
                if name not in budget.blocked:
                    budget.blocked.append(name)
                self._end_unlaunched(state, Status.BLOCKED, reason)
            elif run is not None and not state.status.finished:
                if name not in budget.blocked:
                    budget.blocked.append(name)
                run.request_stop(Status.BLOCKED, reason)
            elif state.status is Status.PENDING:
                self._skip_state(state, budget)
        self._note(reason + f" (crossed by {crossing})")  # after the stops: nothing delays them

    def _skip_state(self, state: InstanceState, budget: Budget) -> None:
        if state.status is Status.SKIPPED:
            return
        if state.name not in budget.skipped:
            budget.skipped.append(state.name)
        self._end_unlaunched(state, Status.SKIPPED, f"skipped: {budget.describe_limit()} spent")
        waiting = self._launches.get(state.name)
        if waiting is not None and state.name not in self.runs:
            waiting.cancel()  # it was only waiting for its stagger slot

    # ------------------------------------------------------------------ notes
    def _note(self, text: str) -> None:
        stamp = datetime.now(UTC).astimezone().strftime("%H:%M:%S")
        self.notes.append(f"{stamp} {text}")
        with contextlib.suppress(Exception):  # the note is kept even if it cannot be shown
            log.info("note", text=text)
            if self.on_note is not None:
                self.on_note(text)

    # ------------------------------------------------------------------ control
    # Commands from any terminal or host (coordinator/control/): each returns the outcome
    # per instance, in the run's order. Names are checked first (ControlError names a
    # stranger); no names means every instance.
    def stop_instances(self, names: Sequence[str], reason: str) -> dict[str, str]:
        """Stop gracefully (status ``cancelled``): a running instance is stopped, one not
        yet launched ends without launching. Every instance: the whole run stops as on a
        signal (results written, the run ``interrupted``)."""
        from coordinator.control.commands import Action, Verb, decide, whole_run

        chosen = self._control_names(names)
        outcome = {n: decide(Verb.STOP, self.states[n].status.value).text for n in chosen}
        if whole_run(names, list(self.states)):
            self.cancel(reason)
            return outcome
        for name in chosen:
            state = self.states[name]
            if decide(Verb.STOP, state.status.value).action is not Action.STOP:
                continue
            run = self.runs.get(name)
            if state.status in BETWEEN_ATTEMPTS:  # no process: its next attempt never comes
                self._end_unlaunched(state, Status.CANCELLED, f"not relaunched: {reason}")
            elif run is not None:
                run.request_stop(Status.CANCELLED, reason)
            else:
                self._end_unlaunched(state, Status.CANCELLED, f"not launched: {reason}")
                waiting = self._launches.get(name)
                if waiting is not None:
                    waiting.cancel()  # it was only waiting for its stagger slot
            self._note(f"{name}: {reason}")
        return outcome

    def pause_instances(self, names: Sequence[str]) -> dict[str, str]:
        """SIGSTOP each one's whole process group until unpaused; one not yet launched does
        not launch until then; one waiting at a barrier stays paused after the release.
        Paused time counts neither against the timeout nor the idle watchdog."""
        from coordinator.control.commands import Action, Verb, decide

        outcome: dict[str, str] = {}
        for name in self._control_names(names):
            state = self.states[name]
            decision = decide(Verb.PAUSE, state.status.value)
            outcome[name] = decision.text
            if decision.action is not Action.PAUSE:
                continue
            now = time.monotonic()
            state.paused_since = now
            state.paused_wait_mark = state.waiting_s(now)
            state.status = Status.PAUSED
            state.last_event = "paused by `coordinator pause`"
            run = self.runs.get(name)
            if run is not None:
                run.pause()
            self.sink.instance_changed(state)
            self._note(f"{name}: paused")
        return outcome

    def unpause_instances(self, names: Sequence[str]) -> dict[str, str]:
        """Let paused instances go on (SIGCONT, unless a barrier still holds one: then it
        waits there); a pending one launches in its turn."""
        from coordinator.control.commands import Action, Verb, decide

        outcome: dict[str, str] = {}
        for name in self._control_names(names):
            state = self.states[name]
            decision = decide(Verb.UNPAUSE, state.status.value)
            if decision.action is not Action.UNPAUSE:
                outcome[name] = decision.text
                continue
            now = time.monotonic()
            state.paused_s = state.pausing_s(now)
            state.paused_since = None
            if state.started_mono is None:
                state.status = Status.PENDING
            elif state.name in self._next:  # between attempts: the next one is still due
                state.status = Status.RATE_LIMITED if state.limit_waiting else Status.RETRYING
            else:
                state.status = Status.WAITING if state.waiting_since is not None else Status.RUNNING
                state.last_activity_mono = now  # the idle watchdog counts from here
            state.last_event = "unpaused"
            run = self.runs.get(name)
            if run is not None:
                run.unpause()
            self.sink.instance_changed(state)
            outcome[name] = f"{decision.text} ({state.status.value})"
            self._note(f"{name}: unpaused")
        return outcome

    def _control_names(self, names: Sequence[str]) -> list[str]:
        from coordinator.control.commands import check_names

        check_names(self.plan.orchestration_id, names, list(self.states))
        return [n for n in self.states if not names or n in names]


def scan_trees(leaders: set[int]) -> tuple[dict[int, set[ProcIdentity]], dict[int, int | None]]:
    """One pass over the process table (every descendant of each leader), then the resident
    memory of each leader's tree: in a thread, once a tick."""
    found = descendants_by_leader(leaders)
    return found, {leader: tree_rss(leader, found.get(leader, set())) for leader in leaders}
