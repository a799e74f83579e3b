"""``coordinator runner``: on any host, claim instances from the queue up to a capacity and
run each with the engine of a one-host run (an :class:`Orchestrator` over that one
instance of the stored plan, writing the same rows), heartbeat a ``runners`` row and each
held job, and stop a copy whose claim another runner took over (the epoch moved).

SIGTERM (or SIGINT, SIGHUP) drains: nothing more is claimed, what is held finishes. A
second signal hands back what is held: each instance is stopped (its whole process group,
as the engine stops one) and queued again, to be continued by whichever runner claims it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from rich.console import Console

from coordinator import app
from coordinator.barrier import PostgresBarrier, open_barrier
from coordinator.budget.rules import BudgetScope
from coordinator.config.models import SyncMode
from coordinator.control.commands import ControlCommand, Verb
from coordinator.control.resume import seed_state
from coordinator.db.journal import pending_journals, replay_journals
from coordinator.db.postgres import PostgresStore
from coordinator.engine.instance import Limits
from coordinator.engine.orchestrator import STOP_SIGNALS, Orchestrator, scan_trees
from coordinator.engine.state import InstanceState, Status
from coordinator.engine.sync import BARRIER_TROUBLE
from coordinator.errors import CoordinatorError, DatabaseError
from coordinator.fleet.alarm import CHANNEL as ALARM_CHANNEL
from coordinator.fleet.alarm import BudgetAlarm
from coordinator.fleet.barrier import SharedBarrier
from coordinator.fleet.budgets import (
    SharedTally,
    Watch,
    alarm_payload,
    command_groups,
    exceeded_keys,
    watches,
)
from coordinator.fleet.control import ANSWER_WAIT_S, FleetControlDb, Want, serve_command
from coordinator.fleet.control import POLL_S as CONTROL_POLL_S
from coordinator.fleet.finish import finish_if_ended
from coordinator.fleet.lease import Hold, LeaseKeeper, PgRenewal
from coordinator.fleet.plans import StoredRun, stored_run
from coordinator.fleet.queue import ClaimedJob, Queue
from coordinator.fleet.rows import FencedRows
from coordinator.fleet.rules import (
    KILL_BY_FRACTION,
    SELF_FENCE_FRACTION,
    ClaimAction,
    decide_claim,
    entrypoints_for_runner,
    fenced_out,
    kill_within,
    must_self_fence,
    serves,
)
from coordinator.fleet.store import FencedStore, FleetDb, FleetSink, RunnerIdentity
from coordinator.settings import Settings
from runner import aio
from runner.guardian import Guardian

log = structlog.get_logger("coordinator.fleet.runner")

UNRUNNABLE_DELAY_S = 10.0  # a run this host cannot plan (its config is not here): later
REPLAY_RETRY_S = 5.0  # journals this host could not write yet: tried again this often
HOSTED_REFRESH_S = 2.0  # how often a runner looks for `run --fleet` runs it can join
ANNOUNCE_S = 0.05  # how often the held engines' books are looked at for crossings to
# announce (no query unless there is one); the other runners' spending is read every
# settings.budget_poll_s: one aggregate query per run held (queries.sql budget_use)


@dataclass
class Held:
    job: ClaimedJob
    orchestration_id: str
    name: str
    epoch: int = 0
    orch: Orchestrator | None = None
    run: StoredRun | None = None
    store: FencedStore | None = None
    shared: SharedTally = field(default_factory=SharedTally)  # the others' budget use
    fenced: str | None = None  # why this copy was stopped: another runner has the claim
    handed_back: str | None = None  # why it was stopped to be queued again
    applied_command: int = 0  # the newest control command applied to this copy
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.orchestration_id, self.name)


def transcript_visible(state: InstanceState, env: Mapping[str, str], keep_dir: Path) -> bool:
    """Can claude on this host see the instance's session (its transcript file)?"""
    sid = state.plan.session_id
    dirs = [keep_dir / state.plan.name]  # isolate_config_dir: kept per instance
    base = env.get("CLAUDE_CONFIG_DIR") or (
        str(Path(env["HOME"]) / ".claude") if env.get("HOME") else None
    )
    if base:
        dirs.append(Path(base))
    for root in dirs:
        with contextlib.suppress(OSError):
            if any((root / "projects").glob(f"*/{sid}.jsonl")) or any(
                root.glob(f"*/projects/*/{sid}.jsonl")
            ):
                return True
    return False


class Runner:
    def __init__(
        self,
        me: RunnerIdentity,
        *,
        store: PostgresStore,
        queue: Queue,
        dsn: str,
        masked: str,
        settings: Settings,
        console: Console,
        database_url: str | None,
        base_env: Mapping[str, str] | None = None,
        poll_s: float = 1.0,
        only_entrypoints: Sequence[str] | None = None,
        handle_signals: bool = True,
    ) -> None:
        self.me = me
        self.store = store
        self.fleet = FleetDb(store.pool)
        # every held engine's row in one statement; a write wakes the budget poll (a
        # crossing is seen by the runner that wrote it, not a poll interval later)
        self._budget_wake = asyncio.Event()
        self._announce_now = asyncio.Event()
        # and checks the runs' shared budgets: the statement that crosses one notifies
        # every runner at its commit (the poll and the announcer stay as the fallback)
        self.rows = FencedRows(
            store.pool,
            on_written=self._budget_wake.set,
            beat_gap_s=settings.lease_s / 4,
            watching=self._watches,
            alarm_channel=ALARM_CHANNEL,
            on_crossed=self._crossed_in_write,
        )
        # the lease, renewed on a thread with its own loop and connection (run() starts it)
        self.lease: LeaseKeeper | None = None
        self.control = FleetControlDb(store.pool)
        self._serving: set[asyncio.Task[None]] = set()
        self.queue = queue
        self.dsn = dsn
        self.masked = masked
        self.settings = settings
        self.console = console
        self.database_url = database_url
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.poll_s = poll_s
        self.entrypoints = entrypoints_for_runner(me.labels)
        # `run --fleet`'s own runner: only its run's queues; else the label queues and the
        # queues of the hosted runs this runner's labels serve (re-read every few seconds)
        self.only_entrypoints = list(only_entrypoints) if only_entrypoints is not None else None
        self.handle_signals = handle_signals
        self._hosted: dict[str, tuple[str, ...]] = {}
        self._hosted_read = -HOSTED_REFRESH_S
        self.held: dict[tuple[str, str], Held] = {}
        self.draining = False
        self.handing_back = False
        self._wake = asyncio.Event()
        self._runs: dict[str, StoredRun] = {}
        self._building: dict[str, asyncio.Lock] = {}  # per run: its plan is being built
        self._offline: dict[str, dict[str, str] | None] = {}
        self._budget_groups: dict[str, tuple[list[str], list[str]]] = {}
        self._barriers: dict[str, SharedBarrier] = {}  # per run: one for all its engines here
        self._barrier_lock = asyncio.Lock()
        self._stack = AsyncExitStack()
        self._replaying: asyncio.Task[None] | None = None  # journals into the database
        self._alarm = BudgetAlarm(dsn, self._alarm_heard)  # crossings other runners saw
        self._announced: set[tuple[str, str]] = set()  # (run, budget key) told or heard
        self._unannounced: dict[tuple[str, str], float] = {}  # seen, not told yet: its use
        self.state_dir = app.state_dir_of(settings)
        self.guardian: Guardian | None = None

    def say(self, text: str) -> None:
        self.console.print(f"{self.me.name}: {text}", highlight=False, soft_wrap=True)

    def say_soon(self, text: str) -> None:
        """An engine's note: printed once the engine's decision is done, not in its middle
        (a budget block stops every held instance first; printing is slow on a busy host)."""
        asyncio.get_running_loop().call_soon(self.say, text)

    # ------------------------------------------------------------------ main loop
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        if self.handle_signals:
            for sig in STOP_SIGNALS:
                loop.add_signal_handler(sig, self._signal, sig)
            loop.add_signal_handler(signal.SIGUSR1, self._dump)
        await self.fleet.register(self.me)
        labels = ",".join(self.me.labels) or "none"
        self.say(
            f"runner on {self.me.host} (pid {self.me.pid}), capacity {self.me.capacity}, "
            f"labels {labels}, lease {self.me.lease_s:g}s, database {self.masked}"
        )
        try:  # one guardian for every instance this runner holds: reaps them if it dies,
            # and if it is frozen for most of its lease (before another runner may take over)
            self.guardian = Guardian()
            self.guardian.watchdog(
                self.me.lease_s * SELF_FENCE_FRACTION,
                grace=self.me.lease_s * (KILL_BY_FRACTION - SELF_FENCE_FRACTION),
            )
        except OSError as exc:
            self.guardian = None
            self.say(f"no shared guardian ({exc}): each instance gets its own")
        alive = threading.Event()
        keeper = threading.Thread(target=self._keep_alive, args=(alive,), daemon=True)
        keeper.start()
        self.lease = LeaseKeeper(
            lambda: PgRenewal(self.dsn, self.me.id),
            self.me.lease_s,
            holds=self._holds,
            state=lambda: "draining" if self.draining else "running",
            loop=loop,
            on_fenced=self._lease_fenced,
            on_lapse=self._lease_lapsed,
            on_frozen=self._frozen,
            backstop=self._backstop,
        )
        self.lease.start()
        self._alarm.ensure()
        if pending_journals(self.state_dir):  # left by an earlier runner of this host
            self._replay_soon()
        budgets = asyncio.create_task(self._budgets(), name="runner-budgets")
        announcer = asyncio.create_task(self._announcer(), name="runner-budget-alarm")
        control = asyncio.create_task(self._control(), name="runner-control")
        scan = asyncio.create_task(self._scan(), name="runner-descendants")
        try:
            async with self._stack:
                while not self.draining:
                    if len(self.held) < self.me.capacity:
                        await self._claim()
                    await self._sleep()
                if self.held:
                    self.say(f"draining: finishing {len(self.held)} held instance(s)")
                tasks = [h.task for h in self.held.values() if h.task is not None]
                if tasks:
                    await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            if self._serving:  # commands taken here: acknowledged before the runner goes
                await asyncio.wait(list(self._serving), timeout=ANSWER_WAIT_S + 2.0)
            if self._replaying is not None:  # a last try, bounded: else the next start's
                await asyncio.wait({self._replaying}, timeout=10.0)
            tasks = [budgets, announcer, control, scan, *self._serving]
            await aio.cancel_all([*tasks, *([self._replaying] if self._replaying else [])])
            if self.lease is not None:
                await self.lease.stop()
            await self.rows.close()
            with contextlib.suppress(Exception):
                await aio.within(self.fleet.stop(self.me.id), 5.0)
            with contextlib.suppress(Exception):
                await aio.within(self._alarm.close(), 5.0)
            for shared in list(self._barriers.values()):  # closed by the last engine, else here
                with contextlib.suppress(*BARRIER_TROUBLE):
                    await shared.close_shared()
            if self.handle_signals:
                for sig in (*STOP_SIGNALS, signal.SIGUSR1):
                    loop.remove_signal_handler(sig)
            alive.set()
            if self.guardian is not None:
                await asyncio.to_thread(self.guardian.close)
        self.say("stopped")
        return 0

    def _keep_alive(self, stop: threading.Event) -> None:
        """A thread, so that only a frozen process (SIGSTOP, a host paused) falls silent,
        not a busy event loop: the guardian's watchdog hears it every 0.2 s."""
        while not stop.wait(0.2):
            if self.guardian is not None:
                self.guardian.keepalive()

    def _signal(self, sig: signal.Signals) -> None:
        if not self.draining:
            self.draining = True
            self.say(f"{sig.name}: draining (claiming nothing more; {sig.name} again hands back)")
        elif not self.handing_back:
            self.handing_back = True
            self.say(f"{sig.name} again: handing back {len(self.held)} instance(s)")
            for held in list(self.held.values()):
                self._hand_back(held, f"handed back by runner {self.me.name} ({sig.name})")
        self._wake.set()

    def _dump(self) -> None:
        """SIGUSR1: what this runner holds and where each of its tasks waits, on stderr (a
        runner that does not drain can be asked why without stopping it)."""
        out = sys.stderr
        print(f"{self.me.name}: SIGUSR1: {len(self.held)} held", file=out)
        for held in list(self.held.values()):
            state = held.orch.states.get(held.name) if held.orch is not None else None
            print(
                f"  {held.orchestration_id}/{held.name} epoch {held.epoch} "
                f"status {state.status.value if state else 'unlaunched'} "
                f"fenced {held.fenced!r} handed_back {held.handed_back!r}",
                file=out,
            )
        for task in asyncio.all_tasks():
            print(f"--- task {task.get_name()}", file=out)
            task.print_stack(limit=12, file=out)
        out.flush()

    def drain(self) -> None:
        """Claim nothing more; finish what is held, then :meth:`run` returns."""
        self.draining = True
        self._wake.set()

    async def _claim_from(self) -> list[str]:
        if self.only_entrypoints is not None:
            return self.only_entrypoints
        now = asyncio.get_running_loop().time()
        if now - self._hosted_read >= HOSTED_REFRESH_S:
            with contextlib.suppress(DatabaseError):  # the claim says so, just after
                self._hosted = await self.fleet.hosted_runs()
            self._hosted_read = now
        joined = [e for eps in self._hosted.values() for e in eps if serves(self.me.labels, e)]
        return [*self.entrypoints, *joined]

    async def _sleep(self) -> None:
        waits = [
            asyncio.ensure_future(self.queue.wait_for_work(self.poll_s)),
            asyncio.ensure_future(self._wake.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        self._wake.clear()

    async def _claim(self) -> None:
        if self._lapsed():  # the lease may be another's soon: nothing new until renewed
            return
        entrypoints = await self._claim_from()
        if not entrypoints:
            return
        try:
            jobs = await self.queue.claim(  # a held instance whose job is done already
                entrypoints,  # (finishing its bookkeeping) still takes its slot here
                self.me.id,
                self.me.capacity,
                self.me.lease_s,
                batch=self.me.capacity - len(self.held),
            )
        except DatabaseError as exc:
            log.info("claim failed", error=str(exc))
            return
        for job in jobs:
            if job.payload is None:  # not ours: another user of the same queue tables
                continue
            held = Held(job, job.payload.orchestration_id, job.payload.instance)
            self.held[held.key] = held
            held.task = asyncio.create_task(self._hold(held), name=f"hold:{held.name}")

    # ------------------------------------------------------------------ one instance
    async def _hold(self, held: Held) -> None:
        try:
            await self._run_held(held)
        except CoordinatorError as exc:  # e.g. its config is not on this host
            self.say(
                f"{held.orchestration_id}/{held.name}: {exc}; handed back "
                f"(due again in {UNRUNNABLE_DELAY_S:g}s)"
            )
            with contextlib.suppress(CoordinatorError):
                await self.queue.hand_back([held.job], UNRUNNABLE_DELAY_S)
        except Exception:
            log.exception("instance failed in the runner", instance=held.name)
            with contextlib.suppress(Exception):
                await self.queue.hand_back([held.job], UNRUNNABLE_DELAY_S)
        finally:
            self.held.pop(held.key, None)
            self._wake.set()
            if not any(h.orchestration_id == held.orchestration_id for h in self.held.values()):
                shared = self._barriers.pop(held.orchestration_id, None)
                if shared is not None:  # none of the run's engines here uses it any more
                    with contextlib.suppress(*BARRIER_TROUBLE):
                        await shared.close_shared()

    async def _stored(self, orchestration_id: str) -> StoredRun:
        run = self._runs.get(orchestration_id)
        if run is not None:
            return run
        # one build per run: the instances claimed together wait for the first one's (each
        # built its own before: a plan and its config per engine, ~7 MB each at 1,000
        # instances, and an offline server each)
        async with self._building.setdefault(orchestration_id, asyncio.Lock()):
            return await self._build_stored(orchestration_id)

    async def _build_stored(self, orchestration_id: str) -> StoredRun:
        run = self._runs.get(orchestration_id)
        if run is None:
            row = await self.store.get_orchestration(orchestration_id)
            if row is None:
                raise CoordinatorError(f"orchestration {orchestration_id!r} is not recorded")
            run = await asyncio.to_thread(
                stored_run, row, self.settings, self.database_url, need_claude=True
            )
            if run.req.offline:  # this host's own offline model server for the run
                self._offline[orchestration_id] = await self._stack.enter_async_context(
                    app.offline_server(run.req, run.plan)
                )
            self._runs[orchestration_id] = run  # with its server: what the engines need
        return run

    async def _run_held(self, held: Held) -> None:
        run = await self._stored(held.orchestration_id)
        if run.instance(held.name) is None:
            raise CoordinatorError(f"instance {held.name!r} is not in the run's config here")
        claim = await self.fleet.claim(held.orchestration_id, held.name, self.me.id)
        if claim is None:
            await self.queue.done([held.job])
            return
        held.epoch = claim.epoch
        plan = run.alone(held.name)
        store = FencedStore(
            self.store.pool,
            self.rows,
            held.orchestration_id,
            held.name,
            claim.epoch,
            on_fenced=lambda: self._fence(held, "its row carries a newer claim"),
        )
        held.store = store
        sink = FleetSink(
            store,
            self.masked,
            self.dsn,
            state_dir=self.state_dir,
            lease_s=self.settings.lease_s,
            close_deadline_s=self.settings.db_close_timeout,
            launch=run.row.launch,
            reopened=run.row,
            config_json=run.config_json(),  # one dump of the run's config for all its engines
        )
        req = run.req
        orch = Orchestrator(
            plan,
            base_env=self.base_env,
            limits=Limits(
                timeout=plan.timeout,
                idle_timeout=plan.idle_timeout,
                max_line_length=req.max_line_length,
                max_console_lines=max(1, req.max_console_lines or 20),
                max_line_bytes=req.max_line_bytes,
            ),
            sink=sink,
            instance_env=app.offline_instance_env(self._offline.get(held.orchestration_id)),
            on_note=lambda text: self.say_soon(f"{held.name}: {text}"),
            barrier_dsn=self.dsn,
            sync_rejoin=True,  # a take-over rejoins the barrier; the lease does not excuse it
            handle_signals=False,
            keep_config_dirs=self.state_dir / "claude-config",
            shared_guardian=self.guardian,
            barrier=await self._barrier(run),
            scan_descendants=False,  # the runner's one scan for all (_scan)
        )
        state = orch.states[held.name]
        carry = claim.row.carry or {}
        keep = self.state_dir / "claude-config" / held.orchestration_id
        visible = transcript_visible(state, self.base_env, keep)
        action = decide_claim(
            claim.row.status,
            claim.row.attempts,
            bool(carry.get("session_exists", claim.row.attempts > 0)),
            visible,
        )
        if action is ClaimAction.ENDED:
            await self._end_in_barrier(run, [held.name], claim.row.status)
            await self.queue.done([held.job])
            await self._maybe_finish(run)
            return
        await self.fleet.start_orchestration(held.orchestration_id)
        if action is not ClaimAction.FIRST:
            self._take_over(state, claim.row, action)
            orch.budgets.update(held.name, state.accountant.usage, state.accountant.cost_usd)
        if shares_budgets(orch):  # what the run's other instances spent counts here too
            use = await self.fleet.budget_use(held.orchestration_id, self._groups(run), [held.name])
            orch.budget_events(state, held.shared.apply_use(orch.budgets, use, held.name))
        self.say(f"claimed {held.orchestration_id}/{held.name} (epoch {claim.epoch}, {action})")
        held.run = run
        held.orch = orch
        if held.handed_back or held.fenced:  # a signal came while it was being claimed
            orch.cancel(held.handed_back or held.fenced or "")
        with contextlib.suppress(DatabaseError):  # a pause or stop sent before this claim
            await self._apply_wants([held])
        outcome = await orch.run()
        if held.handed_back and not held.fenced and state.status is not Status.COMPLETED:
            state.status = Status.RETRYING  # unfinished: whoever claims it next continues it
            state.reason = state.last_event = held.handed_back
            sink.instance_changed(state)
        confirmed = True  # the job is ours to finish or hand back only if the claim is
        if held.fenced is None:
            try:  # bounded: across a partition a query hangs rather than fails
                now = await aio.within(self.fleet.epochs([held.key]), self.me.lease_s)
            except (DatabaseError, TimeoutError):
                confirmed = False
            else:
                if fenced_out(held.epoch, now.get(held.key)):
                    self._fence(held, "another runner took it over meanwhile")
        status = "completed" if outcome.exit_code == 0 else "failed"
        await sink.close(status, {"orchestration_id": held.orchestration_id})
        if sink.journalled is not None:  # the database was too slow or away at the end:
            self._replay_soon()  # written (fenced by the epoch) as soon as it takes them
        if held.fenced:
            self.say(f"{held.name}: copy stopped ({held.fenced}); the other runner goes on")
            return  # the job is the other runner's now: not ours to finish or hand back
        if not confirmed:  # the job's heartbeat stops here: after its lease it is re-claimed
            self.say(f"{held.name}: claim not confirmed (database unreachable): left to its lease")
            return
        if held.handed_back and state.status is not Status.COMPLETED:
            await self.queue.hand_back([held.job])
            self.say(f"{held.name}: handed back")
            return
        await self.queue.done([held.job])
        self.say(f"{held.name}: {state.status.value}")
        await self._maybe_finish(run)

    async def _end_in_barrier(self, run: StoredRun, names: Sequence[str], status: str) -> None:
        """Instances whose rows ended without their runner telling the barrier (it died
        first, or a stop ended them unclaimed): the others must not wait for them (the
        lease does not excuse a claimed one). One barrier handle for all of them."""
        if run.plan.sync.mode is SyncMode.FREE:
            return
        with contextlib.suppress(CoordinatorError, OSError):
            barrier = await PostgresBarrier.open(
                self.dsn,
                run.row.id,
                mode=run.plan.sync.mode.value,
                participants=[i.name for i in run.plan.instances],
                timeout_s=run.plan.sync.timeout_s,
                listen=False,
                pool=self.store.pool,
                run_migrations=False,
            )
            try:
                for name in names:
                    if not await barrier.rejoin(name, []):  # it completed there already
                        continue
                    if status == Status.COMPLETED.value:
                        await barrier.complete(name)
                    else:
                        await barrier.leave(name, f"ended {status} before its runner stopped")
            finally:
                await barrier.close()

    def _take_over(self, state: InstanceState, row: object, action: ClaimAction) -> None:
        """Seed the state from the row the previous holder left (tokens, attempts, the
        session) and record the lost attempt as such."""
        from coordinator.db.rows import InstanceRow

        assert isinstance(row, InstanceRow)
        if action is ClaimAction.RESTART:  # its transcript is not here: start again
            carry = dict(row.carry or {})
            carry.update(turns_done=0, turns_sent=0, session_exists=False)
            row = dataclasses.replace(row, carry=carry)
        seed_state(state, row, relaunch=True)
        then = (
            f"taken over by runner {self.me.name}: continues its session"
            if action is ClaimAction.CONTINUE
            else f"taken over by runner {self.me.name}: a new attempt from the start "
            "(its session's transcript is not visible on this host)"
        )
        if state.attempt_log and state.attempt_log[-1].status == "lost":
            state.attempt_log[-1] = dataclasses.replace(
                state.attempt_log[-1], error="its runner stopped", then=then
            )
        elif state.attempt_log:
            state.attempt_log[-1] = dataclasses.replace(state.attempt_log[-1], then=then)
        state.last_event = then

    def _replay_soon(self) -> None:
        if self._replaying is None or self._replaying.done():
            self._replaying = asyncio.create_task(self._replay(), name="runner-journal")

    async def _replay(self) -> None:
        """This host's journals (rows an engine could not write at its end, a runner of an
        earlier start's) into the database, retried every REPLAY_RETRY_S while any is left;
        then the runs they belong to may be over: their results are recorded."""
        while True:
            try:
                lines = await aio.within(replay_journals(self.store, self.state_dir), 60.0)
            except (DatabaseError, TimeoutError) as exc:
                lines = [f"journal replay failed, again in {REPLAY_RETRY_S:g}s: {exc}"]
            for line in lines:
                self.say(line)
            for run in list(self._runs.values()):
                await self._maybe_finish(run)
            if not pending_journals(self.state_dir):
                return
            await asyncio.sleep(REPLAY_RETRY_S)

    async def _maybe_finish(self, run: StoredRun) -> None:
        with contextlib.suppress(DatabaseError):
            if await finish_if_ended(self.store, self.fleet, run):
                self.say(f"{run.row.id}: every instance ended; results recorded")

    # ------------------------------------------------------------------ fence, hand back
    def _fence(self, held: Held, why: str) -> None:
        if held.fenced is not None:
            return
        held.fenced = f"claim lost: {why}"
        if held.store is not None:
            held.store.fenced = True
        if held.orch is not None:
            held.orch.cancel(held.fenced)

    def _hand_back(self, held: Held, why: str, kill_within: float | None = None) -> None:
        """Stop the copy to be queued again; ``kill_within``: SIGKILLed by then at the latest
        (a self-fence owes the lease's end), also if it is stopping already."""
        if held.handed_back is not None or held.fenced is not None:
            if kill_within is not None and held.orch is not None:
                held.orch.cancel(held.handed_back or held.fenced or why, kill_within)
            return
        held.handed_back = why
        if held.orch is not None:
            held.orch.cancel(why, kill_within)

    def _sharing(self) -> dict[str, list[Held]]:
        """The held engines with shared budgets, by run."""
        by_run: dict[str, list[Held]] = {}
        for held in list(self.held.values()):
            if held.orch is not None and held.fenced is None and shares_budgets(held.orch):
                by_run.setdefault(held.orchestration_id, []).append(held)
        return by_run

    def _watches(self) -> list[Watch]:
        """The shared budgets the next row write checks: each held run's, once per run,
        those not known exceeded here."""
        found: list[Watch] = []
        for orch_id, helds in self._sharing().items():
            held = helds[0]
            assert held.orch is not None and held.run is not None
            known = [key for run, key in self._announced if run == orch_id]
            found += watches(orch_id, held.orch.budgets, self._groups(held.run), known)
        return found

    def _crossed_in_write(self, orchestration_id: str, budget_key: str) -> None:
        """A row write of this runner took the run past ``budget_key`` and notified every
        runner (this one hears it too): nothing more to announce or watch."""
        self._announced.add((orchestration_id, budget_key))
        self._unannounced.pop((orchestration_id, budget_key), None)

    async def _announcer(self) -> None:
        """Every ANNOUNCE_S: a shared budget that a held engine now knows exceeded (its own
        instance's live count crossed it, or a poll showed it) is announced to every
        runner, once per run and budget; and the listener is kept connected."""
        while True:
            with contextlib.suppress(TimeoutError):
                await aio.wait_for(self._announce_now.wait(), ANNOUNCE_S)
            self._announce_now.clear()
            self._alarm.ensure()
            await self._announce(self._sharing())

    async def _budgets(self) -> None:
        """The run's overall and per-command budgets across runners: every budget_poll_s,
        what the other instances' rows add up to (one aggregate query per run) is added to
        each held engine's shared budgets; a crossing in block mode stops the instance here
        as a crossing of its own would. A crossing seen here (polled, or counted live by an
        engine) is announced to every runner (:meth:`_announcer`) at once. A row write of
        this runner's wakes the poll early: the runner whose write crossed sees it first."""
        while True:
            with contextlib.suppress(TimeoutError):
                await aio.wait_for(self._budget_wake.wait(), self.settings.budget_poll_s)
            self._budget_wake.clear()
            by_run = self._sharing()
            for orch_id, helds in by_run.items():
                assert helds[0].run is not None
                groups = self._groups(helds[0].run)
                try:
                    use = await self.fleet.budget_use(orch_id, groups, [h.name for h in helds])
                except DatabaseError as exc:
                    log.info("budget use unavailable", error=str(exc))
                    continue
                for held in helds:
                    if held.orch is None or held.fenced is not None:
                        continue
                    state = held.orch.states[held.name]
                    events = held.shared.apply_use(held.orch.budgets, use, held.name)
                    if events:
                        held.orch.budget_events(state, events)
                        self._announce_now.set()

    async def _announce(self, by_run: Mapping[str, Sequence[Held]]) -> None:
        """Tell every runner of the crossings seen here, once each; one that could not be
        told (the database slow or away) is told at a later tick, even if the instance
        that saw it has ended meanwhile."""
        for orch_id, helds in by_run.items():
            for held in helds:
                if held.orch is None:
                    continue
                for key, used in exceeded_keys(held.orch.budgets).items():
                    if (orch_id, key) not in self._announced:
                        self._unannounced[(orch_id, key)] = used
        for (orch_id, key), used in list(self._unannounced.items()):
            try:  # bounded: across a partition a query hangs rather than fails
                payload = alarm_payload(orch_id, key, used)
                await aio.within(self.fleet.budget_alarm(ALARM_CHANNEL, payload), 5.0)
            except (DatabaseError, TimeoutError) as exc:
                log.info("budget crossing not announced yet", error=str(exc) or "timed out")
                return
            self._unannounced.pop((orch_id, key), None)
            self._announced.add((orch_id, key))

    def _alarm_heard(self, orchestration_id: str, budget_key: str, used: float) -> None:
        """Another runner saw ``budget_key`` of the run exceeded: block here now."""
        self._announced.add((orchestration_id, budget_key))
        self._unannounced.pop((orchestration_id, budget_key), None)
        for held in list(self.held.values()):
            if held.orchestration_id != orchestration_id or held.orch is None or held.fenced:
                continue
            events = held.shared.apply_alarm(held.orch.budgets, budget_key, held.name, used)
            if events:
                held.orch.budget_events(held.orch.states[held.name], events)

    # ------------------------------------------------------------------ control commands
    async def _control(self) -> None:
        """Every CONTROL_POLL_S: take the fleet runs' open control commands (any runner may;
        the take is atomic), and apply to the copies held here the wants not applied yet."""
        while True:
            await asyncio.sleep(CONTROL_POLL_S)
            try:
                for command in await self.control.open_commands():
                    if await self.control.take(command.id):
                        task = asyncio.create_task(self._serve(command), name="control-serve")
                        self._serving.add(task)
                        task.add_done_callback(self._serving.discard)
                await self._apply_wants(
                    [h for h in self.held.values() if h.orch is not None and h.fenced is None]
                )
            except DatabaseError as exc:
                log.info("control commands unavailable", error=str(exc))

    async def _serve(self, command: ControlCommand) -> None:
        try:
            outcome, ended = await serve_command(self.control, command, self.me.id)
        except DatabaseError as exc:  # taken, not acknowledged: its sender says so
            log.info("control command not served", id=command.id, error=str(exc))
            return
        shown = ", ".join(f"{n}: {t}" for n, t in outcome.items())
        self.say(f"{command.orchestration_id}: {command.verb.value} -> {shown or 'nothing'}")
        if ended:  # instances ended here, in their rows: out of the barrier; the run may be over
            with contextlib.suppress(CoordinatorError):
                run = await self._stored(command.orchestration_id)
                await self._end_in_barrier(run, sorted(ended), Status.CANCELLED.value)
                await self._maybe_finish(run)

    async def _apply_wants(self, helds: list[Held]) -> None:
        wants = await self.control.wants_of([h.key for h in helds])
        for held in helds:
            want = wants.get(held.key)
            if want is None or want.command_id <= held.applied_command or held.orch is None:
                continue
            held.applied_command = want.command_id
            text = self._apply_want(held, want)
            await self.control.record_applied(want, self.me.id, text)

    def _apply_want(self, held: Held, want: Want) -> str:
        orch = held.orch
        assert orch is not None
        if want.verb is Verb.STOP:
            done = orch.stop_instances([held.name], want.reason)
        elif want.verb is Verb.PAUSE:
            done = orch.pause_instances([held.name])
        else:
            done = orch.unpause_instances([held.name])
        return f"{done.get(held.name, want.verb.value)} (on runner {self.me.name})"

    async def _scan(self, interval: float = 1.0) -> None:
        """Every held engine's descendant scan and memory sample in ONE pass over the
        process table a tick (each engine's own would be one pass per instance held)."""
        while True:
            await asyncio.sleep(interval)
            if self.guardian is not None:
                note = await asyncio.to_thread(self.guardian.check)
                if note is not None:
                    self.say(note)
            engines = [(h.orch, h.orch.scan_leaders()) for h in self.held.values() if h.orch]
            leaders = set().union(*(pids for _, pids in engines))
            if not leaders:
                continue
            found, rss = await asyncio.to_thread(scan_trees, leaders)
            for orch, pids in engines:
                orch.take_scan(
                    {p: found[p] for p in pids if p in found}, {p: rss[p] for p in pids if p in rss}
                )

    async def _barrier(self, run: StoredRun) -> SharedBarrier | None:
        """The run's barrier for every engine of it here (None: free sync, or the database
        cannot hold it now: each engine then tries its own and falls back, loudly)."""
        if run.plan.sync.mode is SyncMode.FREE:
            return None
        async with self._barrier_lock:
            shared = self._barriers.get(run.row.id)
            if shared is None:
                try:
                    inner = await open_barrier(
                        run.plan.sync.mode,
                        run.row.id,
                        self.dsn,
                        participants=[i.name for i in run.plan.instances],
                        timeout_s=run.plan.sync.timeout_s,
                    )
                except BARRIER_TROUBLE as exc:
                    log.info("no shared barrier", run=run.row.id, error=str(exc))
                    return None
                shared = self._barriers[run.row.id] = SharedBarrier(inner)
            return shared

    def _groups(self, run: StoredRun) -> tuple[list[str], list[str]]:
        groups = self._budget_groups.get(run.row.id)
        if groups is None:
            groups = self._budget_groups[run.row.id] = command_groups(run.plan)
        return groups

    # ------------------------------------------------------------------ the lease
    def _holds(self) -> list[Hold]:
        """What the lease covers (read on the lease's thread: one copy of the dict)."""
        return [
            Hold(h.key, h.epoch, h.job.id)
            for h in list(self.held.values())
            if h.fenced is None and h.epoch
        ]

    def _lapsed(self) -> bool:
        return self.lease is not None and must_self_fence(
            self.lease.since_renewed(), self.me.lease_s
        )

    def _lease_fenced(self, keys: set[tuple[str, str]]) -> None:
        for key in keys:
            held = self.held.get(key)
            if held is not None:
                self._fence(held, "another runner took it over after this one's lease")

    def _lease_lapsed(self, since: float) -> None:
        """Not renewed for most of the lease: stopped, and killed with a margin before the
        lease ends (across a cut link a query hangs: the lease's thread gave up on it)."""
        since = self.lease.since_renewed() if self.lease is not None else since
        self._hand_back_all(
            f"lease not renewed for {since:.1f}s (database unreachable): "
            "stopped so no other copy overlaps",
            since,
        )
        if self.lease is not None:
            self.lease.lapse_acted()

    def _frozen(self, frozen: float) -> None:
        """This process was stopped for most of the lease: the guardian's watchdog reaped
        its instances meanwhile; they are queued again."""
        since = self.lease.since_renewed() if self.lease is not None else frozen
        self._hand_back_all(f"runner frozen for {frozen:.0f}s: its guardian stopped it", since)

    def _hand_back_all(self, why: str, since_renewed: float) -> None:
        """Every held instance handed back, killed before the lease ``since_renewed`` ago
        ends."""
        for held in list(self.held.values()):
            self._hand_back(held, why, kill_within(since_renewed, self.me.lease_s))

    def _backstop(self) -> None:
        """On the lease's thread: this loop has not stopped its copies by the kill-by
        moment of a lapse (starved): the guardian reaps them now."""
        if self.guardian is not None:
            self.guardian.reap_now(0.0)


def shares_budgets(orch: Orchestrator) -> bool:
    return any(b.scope is not BudgetScope.INSTANCE for b in orch.budgets.budgets)
