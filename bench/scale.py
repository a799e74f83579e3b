"""50 instances replaying recorded streams at full speed through the real Orchestrator.

    python -m bench.scale [--instances 50] [--lines 25000] [--big 1000000]

Each instance is the replay stand-in for claude (scripts/replay-claude) writing its own
recorded stream (``bench.recorded``, a different seed each, one multi-MB tool result each)
to its stdout as fast as the pipe takes it. The streams are generated in child processes
beforehand, so the coordinator's own peak RSS and CPU time are the run's.

Checked: every instance completed; its ``lines`` and ``bytes`` equal what was written and
its exact token totals (deduplicated live sums and reconciled) equal the ground truth.
Reported: wall time, coordinator CPU (``RUSAGE_SELF`` delta) per million lines, children's
CPU (``RUSAGE_CHILDREN`` delta: the replay processes and the guardian), peak RSS of the
coordinator (``ru_maxrss`` and psutil samples every 20 ms) and whether it stayed flat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.recorded import (
    Truth,
    generate_in_children,
    live_descendants,
    quiet_logging,
    replay_plan,
    stream_path,
    write_scripts,
)
from coordinator.engine.instance import Limits
from coordinator.engine.orchestrator import Orchestrator, RunOutcome
from coordinator.engine.state import Status
from coordinator.plan import PlannedInstance
from runner.events import Usage

MB = 1 << 20


class RssSampler(threading.Thread):
    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()
        self._proc = psutil.Process()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.monotonic(), self._proc.memory_info().rss))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    @property
    def peak(self) -> int:
        return max(rss for _t, rss in self.samples)


async def run(workdir: Path, names: list[str], scripts: dict[str, str]) -> RunOutcome:
    plan = replay_plan(workdir, names)

    def env(inst: PlannedInstance) -> dict[str, str]:
        return {"REPLAY_SCRIPT": scripts[inst.name]}

    orch = Orchestrator(plan, base_env=dict(os.environ), limits=Limits(), instance_env=env)
    return await orch.run()


def check(outcome: RunOutcome, truths: dict[str, Truth]) -> None:
    assert len(outcome.states) == len(truths)
    for state in outcome.states:
        truth = truths[state.name]
        want = Usage(
            truth.input_tokens,
            truth.output_tokens,
            truth.cache_read_tokens,
            truth.cache_creation_tokens,
        )
        acct = state.accountant
        assert state.status is Status.COMPLETED, (state.name, state.status, state.error)
        assert state.lines == truth.lines, (state.name, state.lines, truth.lines)
        assert state.bytes == truth.bytes, (state.name, state.bytes, truth.bytes)
        assert acct.streamed_usage == want, (state.name, acct.streamed_usage, want)
        assert acct.usage == want, (state.name, acct.usage, want)
        assert acct.messages == truth.messages and acct.tool_call_count == truth.tool_calls
        tail = state.output_tail
        assert tail.maxlen is not None and len(tail) <= tail.maxlen  # a ring buffer


@dataclass(frozen=True, slots=True)
class Measured:
    lines: int
    bytes: int
    wall_s: float
    self_user: float
    self_sys: float
    kids_user: float
    kids_sys: float
    rss_before: int
    rss_peak: int
    samples: int
    ru_maxrss: int

    @property
    def self_cpu(self) -> float:
        return self.self_user + self.self_sys

    @property
    def kids_cpu(self) -> float:
        return self.kids_user + self.kids_sys


def measure(workdir: Path, names: list[str], lines: int, big: int, seed: int) -> Measured:
    """Generate the streams (in children), run them all at once, check every figure."""
    streams = workdir / f"streams-{lines}"
    truth_list = generate_in_children(
        streams, count=len(names), lines=lines, big=[big] if big else [], seed=seed
    )
    truths = dict(zip(names, truth_list, strict=True))
    scripts = write_scripts(
        workdir, {n: [{"file": str(stream_path(streams, i))}] for i, n in enumerate(names)}
    )
    rss_before = psutil.Process().memory_info().rss
    sampler = RssSampler()
    sampler.start()
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    w0 = time.perf_counter()
    outcome = asyncio.run(run(workdir, names, scripts))
    wall = time.perf_counter() - w0
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler.stop()
    leftovers = live_descendants()
    assert not leftovers, leftovers
    check(outcome, truths)
    total = sum(s.lines for s in outcome.states)
    assert total == sum(t.lines for t in truth_list)
    for path in streams.iterdir():
        path.unlink()
    return Measured(
        lines=total,
        bytes=sum(t.bytes for t in truth_list),
        wall_s=wall,
        self_user=self1.ru_utime - self0.ru_utime,
        self_sys=self1.ru_stime - self0.ru_stime,
        kids_user=kids1.ru_utime - kids0.ru_utime,
        kids_sys=kids1.ru_stime - kids0.ru_stime,
        rss_before=rss_before,
        rss_peak=sampler.peak,
        samples=len(sampler.samples),
        ru_maxrss=self1.ru_maxrss * 1024,  # KiB on Linux
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=50)
    ap.add_argument("--lines", type=int, default=25_000, help="per instance")
    ap.add_argument("--big", type=int, default=1_000_000, help="one tool result this big")
    args = ap.parse_args(argv)
    quiet_logging()
    names = [f"i{k:02d}" for k in range(args.instances)]
    short_lines = max(1000, args.lines // 5)

    with tempfile.TemporaryDirectory(prefix="coord-bench-scale-") as tmp:
        workdir = Path(tmp)
        # a run with 1/5 of the stream first: if memory grew with stream length, the
        # full run's peak would be far above it (Python keeps freed arenas, so a bounded
        # engine shows the same peak twice)
        short = measure(workdir, names, short_lines, args.big, seed=1000)
        full = measure(workdir, names, args.lines, args.big, seed=100)

    per_m = full.self_cpu / (full.lines / 1e6)
    growth = full.rss_peak - short.rss_peak
    bounded = growth < 32 * MB
    print(
        f"{args.instances} instances x ~{args.lines:,} lines at full speed through the "
        f"Orchestrator: {full.lines:,} lines, {full.bytes / 1e6:.0f} MB; each with one "
        f"{args.big / 1e6:.1f} MB tool-result line"
    )
    print(f"all {args.instances} instances completed; every line, byte and token accounted")
    print(
        f"  wall time                      {full.wall_s:8.2f} s   "
        f"({full.lines / full.wall_s:,.0f} lines/s, {full.bytes / 1e6 / full.wall_s:.0f} MB/s)"
    )
    print(
        f"  coordinator CPU (RUSAGE_SELF)  {full.self_cpu:8.2f} s   (user {full.self_user:.2f}"
        f" + sys {full.self_sys:.2f}) = {per_m:.2f} CPU-s per million lines "
        f"({full.lines / full.self_cpu:,.0f} lines per CPU-s; "
        f"{full.self_cpu / full.wall_s:.0%} of one core)"
    )
    print(
        f"  children CPU (RUSAGE_CHILDREN) {full.kids_cpu:8.2f} s   (user {full.kids_user:.2f}"
        f" + sys {full.kids_sys:.2f}: 50 replay processes + guardian; coordinator/children "
        f"{full.self_cpu / full.kids_cpu:.2f})"
    )
    print(
        f"  coordinator RSS                before any run {short.rss_before / MB:.0f} MiB, "
        f"sampled peak {full.rss_peak / MB:.0f} MiB ({full.samples} samples at 20 ms), "
        f"ru_maxrss {full.ru_maxrss / MB:.0f} MiB: "
        f"{(full.ru_maxrss - short.rss_before) / MB / args.instances:.2f} MiB per instance"
    )
    print(
        f"  RSS vs stream length           {short_lines:,} lines/instance: peak "
        f"{short.rss_peak / MB:.0f} MiB; {args.lines:,}: peak {full.rss_peak / MB:.0f} MiB "
        f"({growth / MB:+.1f} MiB for 5x the lines) -> "
        f"{'bounded' if bounded else 'GROWS WITH THE STREAM'}"
    )
    print(
        f"  short run for reference        {short.lines:,} lines, {short.wall_s:.2f} s wall, "
        f"{short.self_cpu / (short.lines / 1e6):.2f} CPU-s per million lines"
    )
    print("  orphans after each run:        none")
    summary = {
        "bench": "scale",
        "instances": args.instances,
        "lines": full.lines,
        "mb": round(full.bytes / 1e6, 1),
        "wall_s": round(full.wall_s, 2),
        "lines_per_s": round(full.lines / full.wall_s),
        "coordinator_cpu_s": round(full.self_cpu, 2),
        "coordinator_cpu_s_per_million_lines": round(per_m, 2),
        "children_cpu_s": round(full.kids_cpu, 2),
        "rss_before_mib": round(short.rss_before / MB, 1),
        "rss_peak_sampled_mib": round(full.rss_peak / MB, 1),
        "ru_maxrss_mib": round(full.ru_maxrss / MB, 1),
        "rss_peak_short_run_mib": round(short.rss_peak / MB, 1),
        "rss_bounded": bounded,
        "all_accounted": True,
        "orphans": 0,
    }
    summary["loadavg_1m"] = round(os.getloadavg()[0], 2)
    print(f"load average (1 min) at the end: {summary['loadavg_1m']:.2f} on {os.cpu_count()} CPUs")
    print(json.dumps(summary))
    return 0 if bounded else 1


if __name__ == "__main__":
    sys.exit(main())
