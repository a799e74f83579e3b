"""Budget enforcement latency: from the line that crosses a block-mode budget leaving the
instance to the instance's process group being gone.

    python -m bench.budget_latency [--batches 12] [--per-batch 10]

Each instance is the replay stand-in for claude with an instance budget
(``max_tokens_per_command``) in block mode. It writes some stream under the budget, then
the crossing line (a ``message_start`` whose snapshot usage takes it over) with the replay
step ``{"lines": [...], "stamp": path}``, which records ``time.time_ns()`` just after the
flush; then it goes on (sleeps, or keeps streaming) until it is stopped.

The benchmark watches each instance's process from the moment it starts: a thread per
instance blocks (no polling) on a pidfd until the process has exited, then polls
``os.killpg(pgid, 0)`` every 0.1 ms until ESRCH (a zombie still answers: the group is gone
once it is reaped). Times, all ``time.time_ns()``:

* ``written``   the crossing line is in the pipe (the replay's stamp);
* ``decided``   the budget check asked the instance to stop (``Orchestrator.on_tokens``);
* ``sigterm``   the engine sent SIGTERM to the group (``InstanceProcess._signal_all``,
                wrapped on that one object);
* ``exited``    the process ended (pidfd readable);
* ``gone``      ``killpg(pgid, 0)`` says ESRCH: nothing of the group is left;
* ``finished``  the engine's ``on_finished`` hook (after its own reap and pipe drain).

Two workloads, ``--batches`` orchestrations of ``--per-batch`` concurrent instances each:
``quiet`` (a short stream, a 1 s pause, crossings staggered by 30 ms, then the instance
sleeps) and ``loaded`` (a stress case far above claude's real output rate: every instance
streams a recorded stream at full speed before and after its crossing line, so the
coordinator is busy with all of them when the budget is crossed).

Bias: ``exited`` and ``gone`` are taken by Python threads that need the GIL after waking,
which the event loop may hold for up to the switch interval (5 ms): they can be late by
that much, never early, so the figures err on the slow side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.recorded import generate, live_descendants, quiet_logging, replay_plan, write_scripts
from coordinator.engine.instance import Limits
from coordinator.engine.orchestrator import Orchestrator
from coordinator.engine.state import InstanceState, Status
from coordinator.plan import PlannedInstance, RunPlan

TARGET_P99_MS = 250.0
SESSION = "bench-latency"


@dataclass(slots=True)
class Trial:
    name: str
    pgid: int = 0
    written_before: int | None = None
    written: int | None = None
    decided: int | None = None
    sigterm: int | None = None
    exited: int | None = None
    gone: int | None = None
    finished: int | None = None
    status: str = ""

    def ms(self, start: int | None, end: int | None) -> float:
        assert start is not None and end is not None, self
        return (end - start) / 1e6


@dataclass(slots=True)
class Watch:
    trials: dict[str, Trial] = field(default_factory=dict)
    threads: list[threading.Thread] = field(default_factory=list)


def watch_group(trial: Trial, pidfd: int) -> None:
    """Block until the leader exits, then until its group is gone (reaped)."""
    try:
        readable, _w, _x = select.select([pidfd], [], [], 120.0)
        if not readable:
            return
        trial.exited = time.time_ns()
        while True:
            try:
                os.killpg(trial.pgid, 0)
            except ProcessLookupError:
                trial.gone = time.time_ns()
                return
            time.sleep(0.0001)
    finally:
        os.close(pidfd)


class TimedOrchestrator(Orchestrator):
    """The real Orchestrator; its hooks also record when things happen."""

    def __init__(self, plan: RunPlan, watch: Watch, **kwargs: Any) -> None:
        super().__init__(plan, **kwargs)
        self.watch = watch

    def on_started(self, state: InstanceState) -> None:
        trial = self.watch.trials[state.name]
        assert state.pid is not None
        trial.pgid = state.pid  # own session: the leader's pid is the group id
        pidfd = os.pidfd_open(state.pid)
        thread = threading.Thread(target=watch_group, args=(trial, pidfd), daemon=True)
        thread.start()
        self.watch.threads.append(thread)
        proc = self.runs[state.name].proc
        assert proc is not None
        send = proc._signal_all

        def signal_all(sig: signal.Signals) -> None:
            if sig is signal.SIGTERM and trial.sigterm is None:
                trial.sigterm = time.time_ns()
            send(sig)

        setattr(proc, "_signal_all", signal_all)  # noqa: B010 - this object only
        super().on_started(state)

    def on_tokens(self, state: InstanceState) -> None:
        super().on_tokens(state)
        trial = self.watch.trials[state.name]
        run = self.runs.get(state.name)
        if trial.decided is None and run is not None and run._stop is not None:
            trial.decided = time.time_ns()

    def on_finished(self, state: InstanceState) -> None:
        trial = self.watch.trials[state.name]
        trial.finished = time.time_ns()
        trial.status = state.status.value
        super().on_finished(state)


def stream_event(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "stream_event",
        "event": event,
        "session_id": SESSION,
        "parent_tool_use_id": None,
    }


def message_start(msg_id: str, cache_read: int) -> dict[str, Any]:
    usage = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cache_read,
        "output_tokens": 1,
    }
    return stream_event(
        {
            "type": "message_start",
            "message": {"id": msg_id, "model": "claude-sonnet-4-5", "usage": usage},
        }
    )


def small_response(msg_id: str, cache_read: int) -> list[dict[str, Any]]:
    delta = {"type": "content_block_delta", "index": 0}
    return [
        message_start(msg_id, cache_read),
        *[stream_event({**delta, "delta": {"type": "text_delta", "text": "w"}})] * 20,
        stream_event({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 50}}),
    ]


QUIET_BUDGET = 100_000


def quiet_batch(
    workdir: Path, batch: int, n: int
) -> tuple[RunPlan, dict[str, str], dict[str, Path]]:
    """A short stream under the budget (2 x 30k tokens), a pause of 1 s, the crossing line
    (+50k), then sleep until stopped; crossings 30 ms apart."""
    names = [f"q{batch:02d}-{i:02d}" for i in range(n)]
    scripts: dict[str, list[dict[str, Any]]] = {}
    stamps = {}
    for i, name in enumerate(names):
        stamps[name] = workdir / f"{name}.stamp"
        scripts[name] = [
            {"lines": [*small_response("m1", 29_930), *small_response("m2", 29_930)]},
            {"sleep": 1.0 + 0.03 * i},  # past the batch's start-up (10 Pythons on 2 cores)
            {"lines": [message_start("m3", 50_000)], "stamp": str(stamps[name])},
            {"sleep": 60},
        ]
    plan = replay_plan(
        workdir,
        names,
        {"budget": {"mode": "block"}},
        {name: {"max_tokens_per_command": QUIET_BUDGET} for name in names},
    )
    return plan, write_scripts(workdir, scripts), stamps


def loaded_batch(
    workdir: Path, batch: int, n: int, streams: list[tuple[Path, int]], tail: Path
) -> tuple[RunPlan, dict[str, str], dict[str, Path]]:
    """Each instance streams a recorded stream at full speed (a different length each),
    crosses its budget with one line, and keeps streaming at full speed until stopped."""
    names = [f"l{batch:02d}-{i:02d}" for i in range(n)]
    scripts: dict[str, list[dict[str, Any]]] = {}
    stamps = {}
    budgets = {}
    for i, name in enumerate(names):
        path, tokens = streams[i % len(streams)]
        stamps[name] = workdir / f"{name}.stamp"
        budgets[name] = {"max_tokens_per_command": tokens + 100}
        scripts[name] = [
            {"file": str(path)},
            {"lines": [message_start(f"cross-{i}", 50_000)], "stamp": str(stamps[name])},
            {"file": str(tail), "repeat": 40},
            {"sleep": 60},
        ]
    plan = replay_plan(workdir, names, {"budget": {"mode": "block"}}, budgets)
    return plan, write_scripts(workdir, scripts), stamps


async def run_batch(plan: RunPlan, scripts: dict[str, str], watch: Watch) -> None:
    def env(inst: PlannedInstance) -> dict[str, str]:
        return {"REPLAY_SCRIPT": scripts[inst.name]}

    orch = TimedOrchestrator(
        plan,
        watch,
        base_env=dict(os.environ),
        limits=Limits(timeout=30.0),
        instance_env=env,
    )
    await orch.run()


def run_workload(
    label: str,
    batches: list[tuple[RunPlan, dict[str, str], dict[str, Path]]],
) -> list[Trial]:
    trials: list[Trial] = []
    for plan, scripts, stamps in batches:
        watch = Watch({inst.name: Trial(inst.name) for inst in plan.instances})
        asyncio.run(run_batch(plan, scripts, watch))
        for thread in watch.threads:
            thread.join(5.0)
        leftovers = live_descendants()
        assert not leftovers, leftovers
        for name, trial in watch.trials.items():
            before, after = (int(x) for x in stamps[name].read_text().split())
            trial.written_before, trial.written = before, after
            assert trial.status == Status.BLOCKED.value, (label, trial)
            assert trial.decided is not None and trial.gone is not None, (label, trial)
            trials.append(trial)
    return trials


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p99 of 120 values is the 119th smallest)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def describe(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(pct(values, 50), 2),
        "p90": round(pct(values, 90), 2),
        "p99": round(pct(values, 99), 2),
        "max": round(max(values), 2),
        "mean": round(statistics.fmean(values), 2),
    }


def report(label: str, trials: list[Trial], seconds: float) -> dict[str, Any]:
    parts = {
        "written -> gone (total)": [t.ms(t.written, t.gone) for t in trials],
        "  written -> decided": [t.ms(t.written, t.decided) for t in trials],
        "  decided -> exited": [t.ms(t.decided, t.exited) for t in trials],
        "    decided -> SIGTERM sent": [t.ms(t.decided, t.sigterm) for t in trials],
        "    SIGTERM -> exited": [t.ms(t.sigterm, t.exited) for t in trials],
        "  exited -> gone": [t.ms(t.exited, t.gone) for t in trials],
        "written -> on_finished": [t.ms(t.written, t.finished) for t in trials],
        "(stamp: write+flush took)": [t.ms(t.written_before, t.written) for t in trials],
    }
    print(f"\n{label}: {len(trials)} instances, all BLOCKED, none left behind ({seconds:.1f}s)")
    print(f"  {'ms':<30} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8} {'mean':>8}")
    out: dict[str, Any] = {"trials": len(trials)}
    for name, values in parts.items():
        d = describe(values)
        print(
            f"  {name:<30} {d['p50']:8.2f} {d['p90']:8.2f} {d['p99']:8.2f} "
            f"{d['max']:8.2f} {d['mean']:8.2f}"
        )
        key = name.strip().replace(" -> ", "_to_").replace(" ", "_")
        if not key.startswith("("):
            out[key] = d
    grace = Limits().stop_grace
    hit = sum(1 for t in trials if t.ms(t.decided, t.exited) >= grace * 1000)
    print(f"  SIGTERM grace ({grace:g}s, then SIGKILL) reached: {hit} of {len(trials)}")
    out["grace_reached"] = hit
    total = describe(parts["written -> gone (total)"])
    ok = total["p99"] < TARGET_P99_MS
    print(f"  target p99 < {TARGET_P99_MS:.0f} ms: {'met' if ok else 'NOT met'}")
    out["target_met"] = ok
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--per-batch", type=int, default=10)
    ap.add_argument("--loaded-lines", type=int, default=4000, help="before crossing, min")
    args = ap.parse_args(argv)
    quiet_logging()
    summary: dict[str, Any] = {"bench": "budget_latency", "target_p99_ms": TARGET_P99_MS}
    with tempfile.TemporaryDirectory(prefix="coord-bench-latency-") as tmp:
        workdir = Path(tmp)
        t0 = time.perf_counter()
        quiet = [quiet_batch(workdir, b, args.per_batch) for b in range(args.batches)]
        summary["quiet"] = report(
            "quiet (crossings 30 ms apart, instance idle after)",
            run_workload("quiet", quiet),
            time.perf_counter() - t0,
        )

        streams = []
        for i in range(args.per_batch):
            path = workdir / f"pre-{i}.jsonl"
            truth = generate(path, lines=args.loaded_lines + 400 * i, seed=500 + i, result=False)
            streams.append((path, truth.total_tokens))
        tail = workdir / "tail.jsonl"
        generate(tail, lines=5000, seed=999, result=False)
        t0 = time.perf_counter()
        loaded = [
            loaded_batch(workdir, b, args.per_batch, streams, tail) for b in range(args.batches)
        ]
        summary["loaded"] = report(
            f"loaded (each streams {args.loaded_lines:,}+ lines at full speed before and "
            "after its crossing)",
            run_workload("loaded", loaded),
            time.perf_counter() - t0,
        )
    summary["loadavg_1m"] = round(os.getloadavg()[0], 2)
    print(f"load average (1 min) at the end: {summary['loadavg_1m']:.2f} on {os.cpu_count()} CPUs")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
