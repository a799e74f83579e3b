"""What a fleet runner spends per held instance: one runner holding C barrier participants
(milestone sync) of a run of N, at several C, on an embedded Postgres of its own.

    python -m bench.fleet_memory [--participants 1000] [--held 1,50,100] [--tracemalloc]

The run has N participants (bench.fleet's barrier stand-ins); the runner's capacity is C, so
it claims C of them, and they stop at the first milestone to wait for the N - C nobody
claims: C engines held at once, as in bench.fleet's barrier phase. Once all C wait there:

* the runner's RSS, USS and PSS (psutil, /proc/PID/smaps), and per held engine the slope
  between the smallest and the largest C;
* the replay stand-ins' RSS / USS / PSS (each a process of its own);
* the Postgres backends whose client is the runner (``pg_stat_activity``: the only client
  meanwhile), their count and summed RSS / USS; the runner's resident memory by mapping;
* with ``--tracemalloc``, a second pass with the runner under tracemalloc (frames:
  ``BENCH_TRACEMALLOC_FRAMES``, default 1): its snapshot at each C, and the allocations
  that grow from the smallest C to the largest, by line, in ``--out``.

A fresh run and a fresh runner process per C: each held engine's cost includes the plan
size it is one instance of. Afterwards the run is stopped (``coordinator stop``: its queued
instances end, so the next runner claims only its own run) and the runner drains (SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench.fleet import COORDINATOR, MILESTONES, REPLAY, barrier_script, env_for, start_server
from bench.fleet import write_config as write_fleet_config

SNAPSHOT_ENV = "BENCH_TRACEMALLOC_SNAPSHOT"  # the child: where SIGUSR1 dumps a snapshot
FRAMES_ENV = "BENCH_TRACEMALLOC_FRAMES"


def _mb(value: float) -> float:
    return round(value / 2**20, 2)


def mem_of(proc: psutil.Process) -> dict[str, float]:
    full = proc.memory_full_info()
    return {"rss_mb": _mb(full.rss), "uss_mb": _mb(full.uss), "pss_mb": _mb(full.pss)}


def summed(procs: list[psutil.Process]) -> dict[str, float]:
    out = {"rss_mb": 0.0, "uss_mb": 0.0, "pss_mb": 0.0}
    for proc in procs:
        try:
            for key, value in mem_of(proc).items():
                out[key] += value
        except psutil.Error:
            continue
    return {k: round(v, 2) for k, v in out.items()}


async def held_waiting(dsn: str, orch_id: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM instances WHERE orchestration_id = $1 AND status = 'waiting'",
                orch_id,
            )
        )
    finally:
        await conn.close()


async def backends(dsn: str) -> list[int]:
    """The pids of the server's client backends but this query's own: the runner's, as
    nothing else connects meanwhile (the embedded server listens on a unix socket, so
    ``client_port`` cannot tell clients apart)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' "
            "AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return [r["pid"] for r in rows]


def stand_ins(runner: psutil.Process) -> list[psutil.Process]:
    out = []
    for child in runner.children(recursive=True):
        try:
            if "runner.replay" in " ".join(child.cmdline()):
                out.append(child)
        except psutil.Error:
            continue
    return out


def start_runner(root: Path, dsn: str, tag: str, capacity: int, snapshot: Path | None) -> Any:
    host = root / "hosts" / tag
    host.mkdir(parents=True)
    env = env_for(host / "state", host / "home")
    argv = [sys.executable, "-m", "bench.fleet_memory", "--child"] if snapshot else COORDINATOR
    if snapshot is not None:
        env[SNAPSHOT_ENV] = str(snapshot)
    argv = [*argv, "runner", "--database-url", dsn, "--name", tag, "--capacity", str(capacity)]
    log = (host / "log").open("wb")
    return subprocess.Popen(
        argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )


def stop_runner(proc: subprocess.Popen[bytes], deadline_s: float = 120.0) -> None:
    """SIGTERM drains (the run was stopped: what it holds ends); killed past a deadline."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(deadline_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def mappings(proc: psutil.Process) -> dict[str, float]:
    """The runner's resident memory by kind of mapping (MB): the heap, 1 MiB anonymous
    maps (Python's object arenas), thread stacks (8 MiB maps), glibc's per-thread malloc
    arenas (up to 64 MiB each), other anonymous maps, files."""
    out: dict[str, float] = {}
    for m in proc.memory_maps(grouped=False):
        size = int(m.size)
        if m.path == "[heap]":
            kind = "heap"
        elif m.path.startswith("/"):
            kind = "files"
        elif m.path in ("", "[anon]") and size == 2**20:
            kind = "py_arenas_1mib"
        elif m.path in ("", "[anon]") and 8 * 2**20 <= size <= 8 * 2**20 + 2**16:
            kind = "thread_stacks"
        elif m.path in ("", "[anon]") and 2**20 < size <= 64 * 2**20 and size % 2**16 == 0:
            kind = "malloc_arenas_or_big"
        else:
            kind = "other:" + (m.path or "anon")
        out[kind] = out.get(kind, 0.0) + m.rss / 2**20
    return {k: round(v, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v >= 0.5}


def stop_run(root: Path, dsn: str, orch_id: str) -> None:
    subprocess.run(
        [*COORDINATOR, "stop", orch_id, "--database-url", dsn],
        env=env_for(root / "submit", root / "submit-home"),
        capture_output=True, check=False,
    )  # fmt: skip


def submit(root: Path, dsn: str, orch_id: str, n: int) -> None:
    marks = root / f"marks-{orch_id}"
    marks.mkdir()
    scripts = [barrier_script(i, marks)[0] for i in range(n)]
    config = write_fleet_config(
        root / f"{orch_id}.json",
        scripts,
        {"sync": {"mode": "milestone", "milestones": list(MILESTONES), "timeout_s": 900}},
    )
    done = subprocess.run(
        [*COORDINATOR, "submit", "--config", str(config), "--claude-bin", REPLAY,
         "--workspace", str(root), "--orchestration-id", orch_id, "--quiet",
         "--database-url", dsn],
        env=env_for(root / "submit", root / "submit-home"),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"bench.fleet_memory: submit {orch_id} failed: {done.stderr.strip()}")


def wait_held(dsn: str, orch_id: str, want: int, proc: subprocess.Popen[bytes]) -> float:
    started = time.monotonic()
    while asyncio.run(held_waiting(dsn, orch_id)) < want:
        if proc.poll() is not None:
            raise SystemExit(f"bench.fleet_memory: the runner exited {proc.returncode}")
        if time.monotonic() - started > 600:
            raise SystemExit(f"bench.fleet_memory: {orch_id}: not {want} waiting in 600 s")
        time.sleep(0.2)  # foreign processes: polled with a deadline
    return time.monotonic() - started


def settled(proc: psutil.Process, samples: int = 5) -> dict[str, float]:
    """The runner's memory, sampled until two readings a second apart agree within 1%
    (a held engine's last allocations land just after its row says waiting)."""
    last = mem_of(proc)
    for _ in range(samples):
        time.sleep(1.0)
        now = mem_of(proc)
        if abs(now["rss_mb"] - last["rss_mb"]) <= 0.01 * last["rss_mb"]:
            return now
        last = now
    return last


def measure(root: Path, dsn: str, args: argparse.Namespace, c: int, snap: bool) -> Any:
    tag = f"{'t' if snap else 'm'}{c}"
    orch_id = f"mem-{tag}"
    submit(root, dsn, orch_id, args.participants)
    snapshot = root / f"{tag}.snapshot" if snap else None
    proc = start_runner(root, dsn, tag, c, snapshot)
    try:
        fill_s = wait_held(dsn, orch_id, c, proc)
        runner = psutil.Process(proc.pid)
        figures: dict[str, Any] = {"held": c, "fill_s": round(fill_s, 1)}
        figures["runner"] = settled(runner)
        if snapshot is not None:
            proc.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + 300
            while not snapshot.exists():
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("bench.fleet_memory: no tracemalloc snapshot")
                time.sleep(0.2)
            figures["snapshot"] = str(snapshot)
            return figures
        replays = stand_ins(runner)
        figures["stand_ins"] = len(replays)
        each = [mem_of(p) for p in replays]
        figures["stand_in_mb"] = {
            k: round(statistics.mean(e[k] for e in each), 2) for k in ("rss_mb", "uss_mb", "pss_mb")
        }
        pids = asyncio.run(backends(dsn))
        figures["pg_backends"] = len(pids)
        figures["pg_backend_mb"] = summed([psutil.Process(pid) for pid in pids])
        figures["runner_maps_mb"] = mappings(runner)
        figures["threads"] = runner.num_threads()
        figures["fds"] = runner.num_fds()
        return figures
    finally:
        stop_run(root, dsn, orch_id)  # its queued instances ended: the next runner's are its own
        stop_runner(proc)


def growth(small: Path, large: Path, top: int) -> list[dict[str, Any]]:
    before = tracemalloc.Snapshot.load(str(small))
    after = tracemalloc.Snapshot.load(str(large))
    keep = [tracemalloc.Filter(False, tracemalloc.__file__)]
    stats = after.filter_traces(keep).compare_to(before.filter_traces(keep), "lineno")
    return [
        {
            "where": f"{s.traceback[0].filename}:{s.traceback[0].lineno}",
            "grew_kb": round(s.size_diff / 1024, 1),
            "blocks": s.count_diff,
        }
        for s in stats[:top]
    ]


def child(argv: list[str]) -> None:
    """The runner under tracemalloc: SIGUSR1 writes a snapshot (then the file appears)."""
    tracemalloc.start(int(os.environ.get(FRAMES_ENV, "1")))
    path = Path(os.environ.pop(SNAPSHOT_ENV))

    def dump(signum: int, frame: object) -> None:
        tmp = path.with_suffix(".tmp")
        tracemalloc.take_snapshot().dump(str(tmp))
        tmp.replace(path)

    signal.signal(signal.SIGUSR1, dump)
    from coordinator.cli import main as cli_main

    sys.argv = ["coordinator", *argv]
    cli_main()


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--participants", type=int, default=1000)
    parser.add_argument("--held", default="1,50,100", help="capacities to measure at")
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None, help="the figures as JSON")
    args = parser.parse_args()
    held = sorted({int(c) for c in args.held.split(",")})
    root = Path(tempfile.mkdtemp(prefix="coordinator-bench-fleet-memory-"))
    state = root / "pg"
    outcome: dict[str, Any] = {"participants": args.participants, "at": []}
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # the server is stopped
    try:
        dsn = start_server(state, 400)
        for c in held:
            outcome["at"].append(measure(root, dsn, args, c, snap=False))
            print(json.dumps(outcome["at"][-1]), file=sys.stderr, flush=True)
        lo, hi = outcome["at"][0], outcome["at"][-1]
        span = hi["held"] - lo["held"]
        if span > 0:
            outcome["runner_mb_per_held_engine"] = {
                k: round((hi["runner"][k] - lo["runner"][k]) / span, 2)
                for k in ("rss_mb", "uss_mb", "pss_mb")
            }
        if args.tracemalloc and span > 0:
            snaps = [measure(root, dsn, args, c, snap=True) for c in (held[0], held[-1])]
            outcome["tracemalloc_growth"] = growth(
                Path(snaps[0]["snapshot"]), Path(snaps[1]["snapshot"]), args.top
            )
            total = tracemalloc.Snapshot.load(snaps[1]["snapshot"])
            base = tracemalloc.Snapshot.load(snaps[0]["snapshot"])
            grew = sum(s.size for s in total.statistics("filename")) - sum(
                s.size for s in base.statistics("filename")
            )
            outcome["tracemalloc_kb_per_held_engine"] = round(grew / 1024 / span, 1)
    finally:
        from coordinator.db import stop_embedded_server

        stop_embedded_server(state)
        shutil.rmtree(root, ignore_errors=True)
    text = json.dumps(outcome, indent=2)
    if args.out is not None:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
