"""Several hosts on one Postgres: N replay instances submitted and run by M runner processes,
against the same N run by one ``coordinator run``.

    python -m bench.fleet [--instances 1000] [--runners 10] [--capacity 10]

Each instance is the replay stand-in for claude (an init line, one API response and its
result, after ``--work-s`` of "work"). Figures:

* claim-to-launch: pgqueuer's last ``picked`` log row of the instance's job -> the
  instance's ``started`` checkpoint (its process is running), p50 / p99;
* queue-to-launch: the job's not-before time -> ``started`` (includes waiting for a free
  slot: with N > runners x capacity most of it is that);
* CPU per instance: user + system of each runner (or of the one-host coordinator) and of
  every process it reaped (replay stand-ins, guardians), from ``wait4``; the ratio of the
  fleet's to the one-host run's, and the wall times.

Both runs use the same embedded Postgres (its own state dir, removed afterwards) and the
same scripts; every instance must complete with its exact tokens or the bench fails.
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
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from coordinator.db import ensure_embedded_server, stop_embedded_server
from coordinator.db.migrations import migrate_dsn

ROOT = Path(__file__).resolve().parents[1]
REPLAY = str(ROOT / "scripts" / "replay-claude")
COORDINATOR = [sys.executable, "-m", "coordinator.cli"]


def _line(obj: dict[str, Any]) -> str:
    return orjson.dumps(obj).decode()


def script(i: int, work_s: float) -> list[dict[str, Any]]:
    usage = {"input_tokens": 100 + i % 7, "output_tokens": 10 + i % 5}
    msg = {
        "type": "assistant",
        "message": {
            "id": f"msg-{i}",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "ok"}],
            "usage": usage,
        },
        "session_id": "s",
    }
    res = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "num_turns": 1,
        "result": "ok",
        "session_id": "s",
        "total_cost_usd": 0.001,
        "usage": usage,
    }
    init = {"type": "system", "subtype": "init", "session_id": "s", "tools": [], "model": "m"}
    return [{"lines": [_line(init)]}, {"sleep": work_s}, {"lines": [_line(msg), _line(res)]}]


def write_config(root: Path, n: int, work_s: float) -> Path:
    instances = []
    for i in range(n):
        path = root / "scripts" / f"i{i}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(script(i, work_s)))
        instances.append({"name": f"i{i}", "command": "work", "env": {"REPLAY_SCRIPT": str(path)}})
    config = root / "config.json"
    config.write_text(
        json.dumps(
            {
                "orchestration": {"startup_delay": 0, "progress_instructions": False},
                "instances": instances,
            }
        )
    )
    return config


def env_for(state: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COORDINATOR_")}
    home.mkdir(parents=True, exist_ok=True)
    env.update({"NO_COLOR": "1", "COORDINATOR_STATE_DIR": str(state), "HOME": str(home)})
    return env


def cpu_of_exit(pid: int) -> tuple[int, float]:
    """Wait for ``pid``; its exit code and the CPU seconds of it and what it reaped."""
    _, status, usage = os.wait4(pid, 0)
    return os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime


async def figures(dsn: str, orch_id: str, n: int) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT name, status, total_tokens FROM instances WHERE orchestration_id = $1",
            orch_id,
        )
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
            "GROUP BY job_id ORDER BY job_id"
        )
        queued = await conn.fetch(
            "SELECT job_id, min(created) AS at FROM pgqueuer_log WHERE status = 'queued' "
            "GROUP BY job_id ORDER BY job_id"
        )
    finally:
        await conn.close()
    bad = [r["name"] for r in rows if r["status"] != "completed"]
    if len(rows) != n or bad:
        raise SystemExit(f"{orch_id}: not every instance completed: {bad[:5]}")
    out: dict[str, Any] = {"rows": {r["name"]: r["total_tokens"] for r in rows}}
    if picked:  # jobs were enqueued in plan order: job k is instance i<k>
        names = [f"i{k}" for k in range(n)]
        claim = [started[nm] - p["at"].timestamp() for nm, p in zip(names, picked, strict=True)]
        wait = [started[nm] - q["at"].timestamp() for nm, q in zip(names, queued, strict=True)]
        out["claim_to_launch_ms"] = pct(claim)
        out["queue_to_launch_ms"] = pct(wait)
    return out


def pct(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50": round(q[49], 1), "p99": round(q[98], 1), "max": round(ms[-1], 1)}


def fleet(root: Path, dsn: str, config: Path, args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    done = subprocess.run(
        [*COORDINATOR, "submit", "--config", str(config), "--claude-bin", REPLAY,
         "--workspace", str(root), "--database-url", dsn, "--orchestration-id", "bench-fleet",
         "--output", str(root / "fleet.json"), "--quiet"],
        env=env_for(root / "submit", root / "submit-home"),
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"submit failed: {done.stderr}")
    runners = []
    for k in range(args.runners):
        host = root / "hosts" / f"r{k}"
        host.mkdir(parents=True)
        with (host / "log").open("wb") as log:
            runners.append(
                subprocess.Popen(
                    [
                        *COORDINATOR,
                        "runner",
                        "--database-url",
                        dsn,
                        "--name",
                        f"r{k}",
                        "--capacity",
                        str(args.capacity),
                    ],
                    env=env_for(host / "state", host / "home"),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            )
    waited = subprocess.run(
        [*COORDINATOR, "results", "bench-fleet", "--wait", "--database-url", dsn,
         "--output", str(root / "fleet.json")],
        env=env_for(root / "submit", root / "submit-home"),
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    wall = time.monotonic() - started
    cpu = 0.0
    for proc in runners:
        proc.send_signal(signal.SIGTERM)
    for proc in runners:
        code, used = cpu_of_exit(proc.pid)
        proc.returncode = code
        cpu += used
    if waited.returncode != 0:
        raise SystemExit(f"results --wait failed: {waited.stderr}")
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}


def one_host(root: Path, dsn: str, config: Path) -> dict[str, Any]:
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
    code, cpu = cpu_of_exit(proc.pid)
    proc.returncode = code
    if code != 0:
        raise SystemExit(f"one-host run failed: exit {code}")
    return {"wall_s": round(time.monotonic() - started, 2), "cpu_s": round(cpu, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--runners", type=int, default=10)
    parser.add_argument("--capacity", type=int, default=10, help="instances per runner")
    parser.add_argument("--work-s", type=float, default=0.5, help="each instance's 'work'")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="coordinator-bench-fleet-"))
    state = root / "pg"
    try:
        dsn = ensure_embedded_server(state)
        asyncio.run(migrate_dsn(dsn))
        config = write_config(root, args.instances, args.work_s)
        got_fleet = fleet(root, dsn, config, args)
        f = asyncio.run(figures(dsn, "bench-fleet", args.instances))
        got_one = one_host(root, dsn, config)
        o = asyncio.run(figures(dsn, "bench-one", args.instances))
        if f["rows"] != o["rows"]:
            raise SystemExit("tokens differ between the fleet and the one-host run")
        n = args.instances
        outcome = {
            "instances": n,
            "runners": args.runners,
            "capacity": args.capacity,
            "fleet": {
                **got_fleet,
                "cpu_ms_per_instance": round(1000 * got_fleet["cpu_s"] / n, 1),
                "claim_to_launch_ms": f["claim_to_launch_ms"],
                "queue_to_launch_ms": f["queue_to_launch_ms"],
            },
            "one_host": {**got_one, "cpu_ms_per_instance": round(1000 * got_one["cpu_s"] / n, 1)},
            "cpu_ratio_fleet_to_one_host": round(
                got_fleet["cpu_s"] / max(got_one["cpu_s"], 1e-9), 2
            ),
            "tokens_exact": True,
        }
    finally:
        stop_embedded_server(state)
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(outcome, indent=2))


if __name__ == "__main__":
    main()
