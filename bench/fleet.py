"""Several hosts on one Postgres: replay instances submitted and run by runner processes,
three phases in one bench run (each its own orchestrations, its own runner processes).

    python -m bench.fleet [--instances 1000] [--runners 10] [--capacity 10]
                          [--phases throughput,budget,barrier]

Each instance is the replay stand-in for claude (scripts/replay-claude). Figures:

``throughput``: N instances (an init line, ``--work-s`` of "work", one API response and its
result) submitted and run by M runners of capacity C, against the same N in one
``coordinator run``; every instance must complete with its exact tokens (what its script
served) in both.

* claim-to-launch: pgqueuer's last ``picked`` log row of the instance's job -> the
  instance's ``started`` checkpoint (its process is running), p50 / p99;
* queue-to-launch: the job's not-before time -> ``started`` (with N > M x C most of it is
  waiting for a free slot);
* CPU per instance: user + system of each runner (or of the one-host coordinator) and of
  every process it reaped (replay stand-ins, guardians), from ``wait4``; the ratio of the
  fleet's to the one-host run's; the wall times.

``budget``: ``--budget-rounds`` orchestrations of N / rounds instances each, an overall token
budget in block mode, on M runners of capacity C. Each instance waits (a go file) until
every slot of the fleet runs an instance of the round, then streams 10 output tokens every
0.1 s; the limit is crossed about 2 s after the go. A trigger of the bench's own (on its
throw-away database) logs every write of an instance row with the server's
``clock_timestamp()``. Per round:

* the crossing: the first row write after which the rows' tokens add up to more than the
  limit (the moment the crossing is visible to every runner in Postgres);
* block latency, per instance that was running then on a runner other than the crossing
  instance's: the crossing -> its stand-in took the SIGTERM (it records the time itself,
  ``REPLAY_TERM_STAMP``; the same machine's clock): stopped, the headline; and the
  crossing -> the first write of its row with status ``blocked`` (server clock: after the
  engine reaped the group and its next row flush). Instances on the crossing one's runner
  are counted apart (every engine, also one on the same runner, learns of the others'
  spending from the rows);
* every instance of the round must end ``blocked``, or ``skipped`` if it was still pending
  (claimed after the crossing: never launched); each one running at the crossing blocked.

``barrier``: N participants in milestone sync (milestones 25, 50, 75) on M runners of
capacity ceil(N / M), so that all of them run at once. A participant's stand-in writes
``PROGRESS: k%`` (the engine stops its process group at the milestone) and takes the
SIGCONT of its release itself (it blocks the signal and waits for it), recording the time.
Per point: the last arrival (``barrier_arrivals.arrived_at``, server clock) -> the release
row (``released_at``) and -> each participant continued (SIGCONT taken; the same machine's
clock), p50 / p99 / max over every participant of every point. No participant may
continue before the last arrival, nor time out; every instance completes with its tokens.
Meanwhile the fleet's memory is sampled every 5 s: the PSS of the runners, of what runs
under them (stand-ins, guardians) and of the Postgres server; its peak is printed.

All phases use one embedded Postgres (its own state dir, removed afterwards), started with
``max_connections`` of ``--max-connections`` (as an operator would set it for this many
runners). The bench fails loudly (exit 1, one line) when an instance ends otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import psutil

from coordinator.db import ensure_embedded_server, stop_embedded_server
from coordinator.db.migrations import migrate_dsn

ROOT = Path(__file__).resolve().parents[1]
REPLAY = str(ROOT / "scripts" / "replay-claude")
COORDINATOR = [sys.executable, "-m", "coordinator.cli"]
BLOCK_TARGET_P99_MS = 250.0
TOKENS_PER_TICK = 10  # budget phase: output tokens per message
TICK_S = 0.1  # ... one message this often
CROSS_AFTER_S = 2.0  # ... the limit is crossed about this long after the go
MILESTONES = (25, 50, 75)


class BenchFailed(SystemExit):
    def __init__(self, text: str) -> None:
        super().__init__(f"bench.fleet: {text}")


def _line(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj).decode()


def _assistant(msg_id: str, text: str, usage: dict[str, int]) -> str:
    return _line(
        {
            "type": "assistant",
            "message": {
                "id": msg_id,
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5",
                "content": [{"type": "text", "text": text}],
                "usage": usage,
            },
            "session_id": "s",
        }
    )


def _result(usage: dict[str, int]) -> str:
    return _line(
        {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "num_turns": 1,
            "result": "ok",
            "session_id": "s",
            "total_cost_usd": 0.001,
            "usage": usage,
        }
    )


INIT = _line({"type": "system", "subtype": "init", "session_id": "s", "tools": [], "model": "m"})


def work_script(i: int, work_s: float) -> list[dict[str, Any]]:
    usage = {"input_tokens": 100 + i % 7, "output_tokens": 10 + i % 5}
    return [
        {"lines": [INIT]},
        {"sleep": work_s},
        {
            "lines": [_assistant(f"msg-{i}", "ok", usage), _result(usage)],
            "tokens": [*usage.values()],
        },
    ]


def budget_script(i: int, go: Path, ticks: int) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = [{"lines": [INIT]}, {"wait_file": str(go), "timeout": 600}]
    usage = {"input_tokens": 0, "output_tokens": TOKENS_PER_TICK}
    for k in range(ticks):
        steps.append({"sleep": TICK_S})
        steps.append({"lines": [_assistant(f"msg-{i}-{k}", "working", usage)]})
    return steps  # never reached: blocked long before (a completed instance fails the bench)


def barrier_script(i: int, marks: Path) -> tuple[list[dict[str, Any]], int]:
    steps: list[dict[str, Any]] = [{"lines": [INIT]}]
    one = {"input_tokens": 1, "output_tokens": 1}
    for pct in MILESTONES:
        steps.append(
            {
                "lines": [_assistant(f"msg-{i}-{pct}", f"PROGRESS: {pct}%", one)],
                "await_cont": str(marks / f"i{i}.{pct}"),
                "timeout": 900,
            }
        )
    last = {"input_tokens": 100 + i % 7, "output_tokens": 10 + i % 5}
    total = {k: last[k] + len(MILESTONES) * one[k] for k in last}
    steps.append({"lines": [_assistant(f"msg-{i}-end", "done", last), _result(total)]})
    return steps, total["input_tokens"] + total["output_tokens"]


def write_config(
    path: Path,
    scripts: Sequence[list[dict[str, Any]]],
    orchestration: dict[str, Any] | None = None,
    env: Sequence[dict[str, str]] = (),
) -> Path:
    folder = path.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    instances = []
    for i, steps in enumerate(scripts):
        script = folder / f"i{i}.json"
        script.write_text(json.dumps(steps))
        extra = env[i] if i < len(env) else {}
        instances.append(
            {"name": f"i{i}", "command": "work", "env": {"REPLAY_SCRIPT": str(script), **extra}}
        )
    path.write_text(
        json.dumps(
            {
                "orchestration": {
                    "startup_delay": 0,
                    "progress_instructions": False,
                    **(orchestration or {}),
                },
                "instances": instances,
            }
        )
    )
    return path


LEASE: dict[str, str] = {}  # --lease-s: COORDINATOR_LEASE_S of every process of the bench


def env_for(state: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COORDINATOR_")}
    home.mkdir(parents=True, exist_ok=True)
    env.update({"NO_COLOR": "1", "COORDINATOR_STATE_DIR": str(state), "HOME": str(home)})
    env.update(LEASE)
    return env


def cpu_of_exit(pid: int) -> tuple[int, float]:
    """Wait for ``pid``; its exit code and the CPU seconds of it and what it reaped."""
    _, status, usage = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime


def pct(values: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / max in ms of ``values`` (seconds)."""
    ms = sorted(v * 1000 for v in values)
    if len(ms) == 1:
        return {"p50": round(ms[0], 1), "p99": round(ms[0], 1), "max": round(ms[0], 1), "n": 1}
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50": round(q[49], 1), "p99": round(q[98], 1), "max": round(ms[-1], 1), "n": len(ms)}


# ---------------------------------------------------------------------------- processes
class Fleet:
    """Submit, start runners, wait for results, stop the runners (their CPU)."""

    def __init__(self, root: Path, dsn: str) -> None:
        self.root = root
        self.dsn = dsn
        self.runners: list[subprocess.Popen[bytes]] = []
        self.not_drained: list[str] = []  # runners still holding an instance at the end
        self.names: dict[int, str] = {}

    def _cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*COORDINATOR, *argv, "--database-url", self.dsn],
            env=env_for(self.root / "submit", self.root / "submit-home"),
            capture_output=True,
            text=True,
            check=False,
        )

    def submit(self, config: Path, orch_id: str) -> None:
        done = self._cli(
            "submit", "--config", str(config), "--claude-bin", REPLAY, "--workspace",
            str(self.root), "--orchestration-id", orch_id, "--quiet",
        )  # fmt: skip
        if done.returncode != 0:
            raise BenchFailed(f"submit {orch_id} failed: {done.stderr.strip()}")

    def wait(self, orch_id: str) -> None:
        waited = self._cli(
            "results", orch_id, "--wait", "--output", str(self.root / f"{orch_id}.json")
        )
        if waited.returncode not in (0, 1):  # 1: not every instance completed (budget)
            raise BenchFailed(f"results --wait {orch_id} failed: {waited.stderr.strip()}")

    def start(self, tag: str, count: int, capacity: int) -> None:
        for k in range(count):
            host = self.root / "hosts" / f"{tag}{k}"
            host.mkdir(parents=True)
            argv = [*COORDINATOR, "runner", "--database-url", self.dsn]
            argv += ["--name", f"{tag}{k}", "--capacity", str(capacity)]
            with (host / "log").open("wb") as log:
                self.runners.append(
                    subprocess.Popen(
                        argv,
                        env=env_for(host / "state", host / "home"),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                    )
                )
            self.names[self.runners[-1].pid] = f"{tag}{k}"

    def stop(self, deadline_s: float = 60.0) -> float:
        """SIGTERM (drain: nothing is held by now), wait; the CPU seconds of all. A runner
        still holding an instance after every instance ended fails the bench."""
        for proc in self.runners:
            proc.send_signal(signal.SIGTERM)
        cpu = 0.0
        deadline = time.monotonic() + deadline_s
        for proc in self.runners:
            while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                if time.monotonic() > deadline:  # it still holds an instance: a defect
                    self.not_drained.append(self.names.get(proc.pid, str(proc.pid)))
                    proc.send_signal(signal.SIGUSR1)  # where it waits: into its log
                    time.sleep(1.0)  # the dump is written by the runner's loop: no event
                    proc.kill()
                    break
                time.sleep(0.1)  # a foreign process: polled with a deadline
            code, used = cpu_of_exit(proc.pid)
            if code == -signal.SIGKILL:
                cpu += used
                continue
            proc.returncode = code
            cpu += used
            if code != 0:
                raise BenchFailed(f"a runner exited {code} (log under {self.root / 'hosts'})")
        self.runners = []
        return cpu

    def kill(self) -> None:
        for proc in self.runners:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def rows_of(dsn: str, orch_id: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT name, status, total_tokens, runner, ended_at FROM instances "
            "WHERE orchestration_id = $1",
            orch_id,
        )
        return rows
    finally:
        await conn.close()


def expect(rows: Sequence[asyncpg.Record], n: int, orch_id: str, **want: Any) -> None:
    """Every instance present and as wanted (status, tokens by name) or the bench fails."""
    if len(rows) != n:
        raise BenchFailed(f"{orch_id}: {len(rows)} instance rows, not {n}")
    status: set[str] | None = want.get("status")
    tokens: dict[str, int] | None = want.get("tokens")
    bad = [
        f"{r['name']}={r['status']}/{r['total_tokens']}"
        for r in rows
        if (status is not None and r["status"] not in status)
        or (tokens is not None and r["total_tokens"] != tokens[r["name"]])
    ]
    if bad:
        raise BenchFailed(f"{orch_id}: {len(bad)} instance(s) ended otherwise: {bad[:5]}")


# ---------------------------------------------------------------------------- throughput
LAST_JOB_SQL = (
    "SELECT greatest((SELECT max(id) FROM pgqueuer), (SELECT max(job_id) FROM pgqueuer_log))"
)


async def last_job(dsn: str) -> int:
    """The highest job id so far: the next submit's jobs come after it, in plan order."""
    conn = await asyncpg.connect(dsn)
    try:
        if await conn.fetchval("SELECT to_regclass('pgqueuer_log') IS NULL"):
            return 0
        return int(await conn.fetchval(LAST_JOB_SQL) or 0)
    finally:
        await conn.close()


async def launch_figures(dsn: str, orch_id: str, n: int, after_job: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        started = {
            r["scenario_id"]: r["timestamp_unix"] / 1000
            for r in await conn.fetch(
                "SELECT scenario_id, timestamp_unix FROM scenario_orchestration_checkpoints "
                "WHERE orchestration_id = $1 AND milestone_name = 'started'",
                orch_id,
            )
        }
        picked = await conn.fetch(
            "SELECT job_id, max(created) AS at FROM pgqueuer_log WHERE status = 'picked' "
            "AND job_id > $1 GROUP BY job_id ORDER BY job_id",
            after_job,
        )
        queued = await conn.fetch(
            "SELECT job_id, min(created) AS at FROM pgqueuer_log WHERE status = 'queued' "
            "AND job_id > $1 GROUP BY job_id ORDER BY job_id",
            after_job,
        )
    finally:
        await conn.close()
    names = [f"i{k}" for k in range(n)]  # the run's n jobs, enqueued in plan order
    claim = [started[nm] - p["at"].timestamp() for nm, p in zip(names, picked, strict=True)]
    wait = [started[nm] - q["at"].timestamp() for nm, q in zip(names, queued, strict=True)]
    return {"claim_to_launch_ms": pct(claim), "queue_to_launch_ms": pct(wait)}


def throughput(root: Path, dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    n = args.instances
    config = write_config(root / "work.json", [work_script(i, args.work_s) for i in range(n)])
    fleet = Fleet(root, dsn)
    after_job = asyncio.run(last_job(dsn))
    started = time.monotonic()
    try:
        fleet.submit(config, "bench-fleet")
        fleet.start("r", args.runners, args.capacity)
        fleet.wait("bench-fleet")
        wall = time.monotonic() - started
        cpu = fleet.stop()
    finally:
        fleet.kill()
    tokens = {f"i{i}": sum(work_script(i, 0)[2]["tokens"]) for i in range(n)}
    expect(
        asyncio.run(rows_of(dsn, "bench-fleet")),
        n,
        "bench-fleet",
        status={"completed"},
        tokens=tokens,
    )
    launch = asyncio.run(launch_figures(dsn, "bench-fleet", n, after_job))

    started = time.monotonic()
    proc = subprocess.Popen(
        [*COORDINATOR, "run", "--config", str(config), "--claude-bin", REPLAY,
         "--workspace", str(root), "--database-url", dsn, "--orchestration-id", "bench-one",
         "--output", str(root / "one.json"), "--quiet"],
        env=env_for(root / "one", root / "one-home"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    code, one_cpu = cpu_of_exit(proc.pid)
    proc.returncode = code
    one_wall = time.monotonic() - started
    if code != 0:
        raise BenchFailed(f"the one-host run failed: exit {code}")
    expect(
        asyncio.run(rows_of(dsn, "bench-one")), n, "bench-one", status={"completed"}, tokens=tokens
    )
    return {
        "fleet": {
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "cpu_ms_per_instance": round(1000 * cpu / n, 1),
            **launch,
        },
        "one_host": {
            "wall_s": round(one_wall, 2),
            "cpu_s": round(one_cpu, 2),
            "cpu_ms_per_instance": round(1000 * one_cpu / n, 1),
        },
        "cpu_ratio_fleet_to_one_host": round(cpu / max(one_cpu, 1e-9), 2),
        "tokens_exact": True,
    }


# ---------------------------------------------------------------------------- budget
ROW_LOG_SQL = """
CREATE TABLE IF NOT EXISTS bench_row_log (
    id bigserial PRIMARY KEY,
    orchestration_id text NOT NULL,
    name text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    total_tokens bigint NOT NULL,
    status text NOT NULL,
    runner uuid
);
CREATE OR REPLACE FUNCTION bench_log_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_row_log (orchestration_id, name, total_tokens, status, runner)
    VALUES (NEW.orchestration_id, NEW.name, NEW.total_tokens, NEW.status, NEW.runner);
    RETURN NULL;
END;
$$;
DROP TRIGGER IF EXISTS bench_log_row ON instances;
CREATE TRIGGER bench_log_row AFTER INSERT OR UPDATE ON instances
    FOR EACH ROW WHEN (NEW.orchestration_id LIKE 'bench-budget-%')
    EXECUTE FUNCTION bench_log_row();
"""


async def sql(dsn: str, text: str, *params: Any) -> Any:
    conn = await asyncpg.connect(dsn)
    try:
        if params:
            return await conn.fetchval(text, *params)
        return await conn.execute(text)
    finally:
        await conn.close()


async def wait_running(dsn: str, orch_id: str, want: int, timeout_s: float) -> float:
    """Until ``want`` instances of the run are running; how long that took."""
    conn = await asyncpg.connect(dsn)
    started = time.monotonic()
    try:
        while True:
            running = await conn.fetchval(
                "SELECT count(*) FROM instances WHERE orchestration_id = $1 AND status = 'running'",
                orch_id,
            )
            if running >= want:
                return time.monotonic() - started
            if time.monotonic() - started > timeout_s:
                raise BenchFailed(f"{orch_id}: only {running} of {want} instances running")
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def block_figures(dsn: str, orch_id: str, limit: int, terms: Path) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        log = await conn.fetch(
            "SELECT name, at, total_tokens, status, runner FROM bench_row_log "
            "WHERE orchestration_id = $1 ORDER BY id",
            orch_id,
        )
    finally:
        await conn.close()
    tokens: dict[str, int] = {}
    total = 0
    crossing = None
    running: set[str] = set()
    for entry in log:
        total += entry["total_tokens"] - tokens.get(entry["name"], 0)
        tokens[entry["name"]] = entry["total_tokens"]
        if entry["status"] == "running":
            running.add(entry["name"])
        if total > limit:
            crossing = entry
            break
    if crossing is None:
        raise BenchFailed(f"{orch_id}: the rows never crossed the limit of {limit} tokens")
    at = crossing["at"]
    blocked: dict[str, tuple[Any, Any]] = {}
    for entry in log:
        if entry["status"] == "blocked" and entry["name"] not in blocked:
            blocked[entry["name"]] = (entry["at"], entry["runner"])
    others, same, stopped = [], [], []
    for name in running:
        if name not in blocked:
            raise BenchFailed(f"{orch_id}: {name} was running at the crossing, never blocked")
        when, runner = blocked[name]
        if runner == crossing["runner"]:
            same.append((when - at).total_seconds())
            continue
        others.append((when - at).total_seconds())
        term = terms / name
        if not term.exists():
            raise BenchFailed(f"{orch_id}: {name} was blocked but never got SIGTERM")
        stopped.append(int(term.read_text()) / 1e9 - at.timestamp())
    return {
        "others": others,
        "same_runner": same,
        "stopped": stopped,
        "running_at_crossing": len(running),
        "crossing_row": crossing["name"],
        "tokens_at_crossing": total,
    }


def budget(root: Path, dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    rounds = args.budget_rounds
    per_round = math.ceil(args.instances / rounds)
    slots = min(per_round, args.runners * args.capacity)
    limit = int(slots * TOKENS_PER_TICK / TICK_S * CROSS_AFTER_S)
    ticks = int(60 / TICK_S)  # a minute of streaming: blocked after ~2 s
    asyncio.run(sql(dsn, ROW_LOG_SQL))
    fleet = Fleet(root, dsn)
    others: list[float] = []
    same: list[float] = []
    stopped: list[float] = []
    details = []
    started = time.monotonic()
    problems: list[str] = []
    cpu = 0.0
    try:
        for r in range(rounds):  # fresh runners each round: what one leaks stays its own
            orch_id = f"bench-budget-{r}"
            go = root / f"go-{r}"
            terms = root / f"terms-{r}"
            terms.mkdir()
            config = write_config(
                root / f"budget-{r}.json",
                [budget_script(i, go, ticks) for i in range(per_round)],
                {"budget": {"overall_tokens": limit, "mode": "block"}},
                [{"REPLAY_TERM_STAMP": str(terms / f"i{i}")} for i in range(per_round)],
            )
            fleet.submit(config, orch_id)
            fleet.start(f"b{r}-", args.runners, args.capacity)
            try:
                fill_s = asyncio.run(wait_running(dsn, orch_id, slots, 120.0))
                go.touch()
                fleet.wait(orch_id)
                expect(
                    asyncio.run(rows_of(dsn, orch_id)),
                    per_round,
                    orch_id,
                    status={"blocked", "skipped"},
                )
                got = asyncio.run(block_figures(dsn, orch_id, limit, terms))
            except BenchFailed as exc:
                problems.append(str(exc.code))
                break
            finally:
                go.touch()
                cpu += fleet.stop()
            others += got.pop("others")
            same += got.pop("same_runner")
            stopped += got.pop("stopped")
            details.append({"round": r, "slots_filled_s": round(fill_s, 2), **got})
        wall = time.monotonic() - started
    finally:
        fleet.kill()
    if fleet.not_drained:
        problems.append(
            f"runner(s) {', '.join(fleet.not_drained)} still held an instance 60 s after "
            "every instance of their round ended (killed)"
        )
    if not details:
        raise BenchFailed("; ".join(problems) or "no budget round finished")
    return {
        "rounds": rounds,
        "instances_per_round": per_round,
        "limit_tokens": limit,
        "stopped_ms_other_runners": pct(stopped),
        "row_blocked_ms_other_runners": pct(others),
        "row_blocked_ms_same_runner": pct(same) if same else None,
        "target_p99_ms": BLOCK_TARGET_P99_MS,
        "target_met": pct(stopped)["p99"] < BLOCK_TARGET_P99_MS,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "per_round": details,
        "problems": problems,
    }


# ---------------------------------------------------------------------------- barrier
class MemorySampler:
    """The fleet's memory while a phase runs, every ``interval_s`` in a thread: the PSS
    (shared pages split among their sharers, so the sum is what the machine spends) of the
    runners, of everything under them (the stand-ins, guardians) and of the Postgres
    server's processes; the peak of the sum, split as it was then."""

    def __init__(self, runners: Sequence[int], server: int, interval_s: float = 5.0) -> None:
        self.runners = list(runners)
        self.server = server
        self.interval_s = interval_s
        self.peak: dict[str, float] = {"total_mb": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            sample = self.sample()
            if sample["total_mb"] > self.peak["total_mb"]:
                self.peak = sample

    def sample(self) -> dict[str, float]:
        parts = {"runners_mb": 0.0, "under_runners_mb": 0.0, "postgres_mb": 0.0}
        groups: list[tuple[str, list[psutil.Process]]] = []
        for pid in self.runners:
            with _gone():
                runner = psutil.Process(pid)
                groups.append(("runners_mb", [runner]))
                groups.append(("under_runners_mb", runner.children(recursive=True)))
        with _gone():
            server = psutil.Process(self.server)
            groups.append(("postgres_mb", [server, *server.children()]))
        count = 0
        for part, procs in groups:
            for proc in procs:
                with _gone():
                    parts[part] += proc.memory_full_info().pss / 2**20
                    count += 1
        out = {k: round(v, 1) for k, v in parts.items()}
        out["total_mb"] = round(sum(parts.values()), 1)
        out["processes"] = count
        return out


def _gone() -> contextlib.suppress:
    """A process that ended meanwhile counts as nothing."""
    return contextlib.suppress(psutil.Error)


def postgres_cpu_s(server: int) -> float:
    """CPU seconds the Postgres server spent so far: its own, its ended backends' (reaped by
    it, so in its children's times) and its live ones'."""
    proc = psutil.Process(server)
    t = proc.cpu_times()
    total = float(t.user + t.system + t.children_user + t.children_system)
    for child in proc.children():
        with _gone():
            c = child.cpu_times()
            total += c.user + c.system
    return total


async def server_pid(dsn: str) -> int:
    """The Postgres server's main process (the parent of a backend)."""
    conn = await asyncpg.connect(dsn)
    try:  # while the backend lives (it ends with the connection)
        backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
        parent = psutil.Process(backend).parent()
    finally:
        await conn.close()
    return parent.pid if parent is not None else backend


async def release_figures(dsn: str, orch_id: str, marks: Path, n: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        points = await conn.fetch(
            "SELECT p.point, max(a.arrived_at) AS last, count(a.name) AS arrived, "
            "r.released_at, r.timed_out FROM barrier_points p "
            "JOIN barrier_arrivals a USING (orchestration_id, point) "
            "LEFT JOIN barrier_releases r USING (orchestration_id, point) "
            "WHERE p.orchestration_id = $1 GROUP BY p.point, r.released_at, r.timed_out",
            orch_id,
        )
    finally:
        await conn.close()
    by_point = {r["point"]: r for r in points}
    decided, resumed = [], []
    per_point: dict[str, dict[str, float]] = {}
    for pct_at in MILESTONES:
        point = by_point.get(f"milestone:{pct_at}")
        if point is None or point["released_at"] is None:
            raise BenchFailed(f"{orch_id}: milestone {pct_at} was never released")
        if point["timed_out"] or point["arrived"] != n:
            raise BenchFailed(
                f"{orch_id}: milestone {pct_at}: {point['arrived']} of {n} arrived "
                f"(timed out: {point['timed_out']})"
            )
        last = point["last"].timestamp()
        decided.append(point["released_at"].timestamp() - last)
        for i in range(n):
            at = int((marks / f"i{i}.{pct_at}").read_text()) / 1e9
            if at < last:
                raise BenchFailed(f"{orch_id}: i{i} went on at {pct_at}% before the last arrival")
            resumed.append(at - last)
        per_point[f"{pct_at}%"] = pct(resumed[-n:])
    return {"decided": decided, "resumed": resumed, "per_point": per_point}


def barrier(root: Path, dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    n = args.instances
    capacity = math.ceil(n / args.runners)
    marks = root / "marks"
    marks.mkdir()
    scripts, tokens = [], {}
    for i in range(n):
        steps, total = barrier_script(i, marks)
        scripts.append(steps)
        tokens[f"i{i}"] = total
    config = write_config(
        root / "barrier.json",
        scripts,
        {"sync": {"mode": "milestone", "milestones": list(MILESTONES), "timeout_s": 900}},
    )
    fleet = Fleet(root, dsn)
    server = asyncio.run(server_pid(dsn))
    started = time.monotonic()
    try:
        fleet.submit(config, "bench-barrier")
        fleet.start("s", args.runners, capacity)
        with MemorySampler([p.pid for p in fleet.runners], server) as memory:
            fleet.wait("bench-barrier")
        wall = time.monotonic() - started
        cpu = fleet.stop()
    finally:
        fleet.kill()
    expect(
        asyncio.run(rows_of(dsn, "bench-barrier")),
        n,
        "bench-barrier",
        status={"completed"},
        tokens=tokens,
    )
    got = asyncio.run(release_figures(dsn, "bench-barrier", marks, n))
    return {
        "participants": n,
        "runners": args.runners,
        "capacity": capacity,
        "points": len(MILESTONES),
        "last_arrival_to_release_row_ms": pct(got["decided"]),
        "last_arrival_to_participant_continued_ms": pct(got["resumed"]),
        "continued_ms_per_point": got["per_point"],
        "peak_memory": memory.peak,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
    }


# ---------------------------------------------------------------------------- main
def start_server(state: Path, max_connections: int) -> str:
    dsn = ensure_embedded_server(state)
    asyncio.run(sql(dsn, f"ALTER SYSTEM SET max_connections = {int(max_connections)}"))
    stop_embedded_server(state)
    dsn = ensure_embedded_server(state)
    asyncio.run(migrate_dsn(dsn))
    return dsn


def table(outcome: dict[str, Any], only: str | None = None) -> str:
    lines = [f"bench.fleet: {outcome['instances']} instances, {outcome['runners']} runners"]
    if only is not None:
        outcome = {only: outcome[only]}
        lines = []
    t = outcome.get("throughput")
    if t:
        f, o = t["fleet"], t["one_host"]
        c, q = f["claim_to_launch_ms"], f["queue_to_launch_ms"]
        lines += [
            f"  claim -> launch        p50 {c['p50']:>8.1f} ms  p99 {c['p99']:>8.1f} ms  "
            f"max {c['max']:.1f} ms",
            f"  queue -> launch        p50 {q['p50']:>8.1f} ms  p99 {q['p99']:>8.1f} ms",
            f"  CPU per instance       fleet {f['cpu_ms_per_instance']:.1f} ms, one host "
            f"{o['cpu_ms_per_instance']:.1f} ms: {t['cpu_ratio_fleet_to_one_host']:.2f}x",
            f"  wall                   fleet {f['wall_s']:.1f} s, one host {o['wall_s']:.1f} s",
        ]
    b = outcome.get("budget")
    if b:
        e, x = b["stopped_ms_other_runners"], b["row_blocked_ms_other_runners"]
        lines += [
            f"  budget -> stopped      p50 {e['p50']:>8.1f} ms  p99 {e['p99']:>8.1f} ms  "
            f"max {e['max']:.1f} ms  ({e['n']} instances on other runners, "
            f"{b['rounds']} crossings; target p99 < {b['target_p99_ms']:g} ms: "
            f"{'met' if b['target_met'] else 'MISSED'})",
            f"  budget -> row blocked  p50 {x['p50']:>8.1f} ms  p99 {x['p99']:>8.1f} ms  "
            f"max {x['max']:.1f} ms",
        ]
    s = outcome.get("barrier")
    if s:
        d, r = s["last_arrival_to_release_row_ms"], s["last_arrival_to_participant_continued_ms"]
        m = s["peak_memory"]
        lines += [
            f"  barrier release row    p50 {d['p50']:>8.1f} ms  p99 {d['p99']:>8.1f} ms  "
            f"({s['points']} points)",
            f"  barrier -> continued   p50 {r['p50']:>8.1f} ms  p99 {r['p99']:>8.1f} ms  "
            f"max {r['max']:.1f} ms  ({s['participants']} participants on {s['runners']} "
            f"runners x {s['capacity']}, {r['n']} releases)",
            f"  barrier peak memory    {m['total_mb'] / 1024:.2f} GB PSS: runners "
            f"{m.get('runners_mb', 0.0):.0f} MB, stand-ins and guardians "
            f"{m.get('under_runners_mb', 0.0):.0f} MB, Postgres {m.get('postgres_mb', 0.0):.0f} "
            f"MB; wall {s['wall_s']:.1f} s",
        ]
    for phase in ("throughput", "budget", "barrier"):
        p = outcome.get(phase)
        if p and "postgres_cpu_s" in p:
            wall = p.get("wall_s") or p.get("fleet", {}).get("wall_s")
            share = f" ({p['postgres_cpu_s'] / wall:.2f} cores over its wall)" if wall else ""
            lines.append(f"  Postgres CPU, {phase:<10} {p['postgres_cpu_s']:.1f} s{share}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--runners", type=int, default=10)
    parser.add_argument("--capacity", type=int, default=10, help="instances per runner")
    parser.add_argument("--work-s", type=float, default=0.5, help="each instance's 'work'")
    parser.add_argument("--budget-rounds", type=int, default=5, help="budget crossings")
    parser.add_argument("--phases", default="throughput,budget,barrier")
    parser.add_argument("--max-connections", type=int, default=400)
    parser.add_argument("--keep", action="store_true", help="keep the bench's directory")
    parser.add_argument(
        "--lease-s", type=float, help="the runners' lease (default: the coordinator's, 30 s)"
    )
    args = parser.parse_args()
    if args.lease_s is not None:
        LEASE["COORDINATOR_LEASE_S"] = str(args.lease_s)
    phases = [p for p in args.phases.split(",") if p]
    unknown = set(phases) - {"throughput", "budget", "barrier"}
    if unknown:
        parser.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    root = Path(tempfile.mkdtemp(prefix="coordinator-bench-fleet-"))
    state = root / "pg"
    outcome: dict[str, Any] = {"instances": args.instances, "runners": args.runners}
    outcome["capacity"] = args.capacity
    outcome["lease_s"] = args.lease_s or 30.0
    failed: list[str] = []
    try:
        dsn = start_server(state, args.max_connections)
        server = asyncio.run(server_pid(dsn))
        for phase in phases:
            started = time.monotonic()
            pg_before = postgres_cpu_s(server)
            try:
                outcome[phase] = PHASES[phase](root, dsn, args)
            except BenchFailed as exc:  # the next phases still run; the bench fails at the end
                failed.append(str(exc.code))
                print(exc.code, file=sys.stderr, flush=True)
                continue
            outcome[phase]["postgres_cpu_s"] = round(postgres_cpu_s(server) - pg_before, 1)
            for problem in outcome[phase].get("problems", []):
                failed.append(f"bench.fleet: {phase}: {problem}")
                print(failed[-1], file=sys.stderr, flush=True)
            print(f"{phase}: {time.monotonic() - started:.1f} s", file=sys.stderr)
            print(table({**outcome, phase: outcome[phase]}, only=phase), flush=True)
    finally:
        stop_embedded_server(state)
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(table(outcome))
    print(json.dumps(outcome, indent=2))
    if failed:
        raise SystemExit("\n".join(failed))


PHASES = {"throughput": throughput, "budget": budget, "barrier": barrier}


if __name__ == "__main__":
    main()
