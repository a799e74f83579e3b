"""Real CLI: 10 concurrent real claude instances, by hand vs through the coordinator.

    python -m bench.real_cli [--instances 10] [--rounds 3] [--delay 0.25]

Workload (the same both ways): ``--instances`` real, pinned ``claude`` processes, all
started at once, each a scripted conversation with the project's offline model server:
four API responses, a Write (``note.txt``), a Bash that transforms it (``tr ... >
out.txt``), a Bash that reads it back, and a closing text; ``--delay`` seconds of model
latency per response. Each run gets a fresh plan (new session UUIDs), fresh workspaces,
its own ``HOME``/``CLAUDE_CONFIG_DIR`` per instance, and a fresh model server.

* by hand: the exact argv lists of the plan (``build_plan``, what ``--dry-run`` shows),
  launched with ``subprocess.Popen`` in their workspaces with the same environment as the
  coordinator gives them (``child_env`` + the ``--offline`` env), stdin ``/dev/null``,
  stdout and stderr to files (the kernel writes them: no reader), each in its own session
  as the coordinator starts them, then ``wait()`` for all. The session matters on a busy
  machine: with CFS autogroup (``/proc/sys/kernel/sched_autogroup_enabled``) every session
  is one scheduling group, so 10 instances in 10 sessions get 10 shares of the CPU against
  other load where 10 in this process's session get one (``--hand-one-session`` shows it).
* coordinator: the same plan through the real ``Orchestrator`` the way ``coordinator run
  --offline --quiet --no-database`` wires it (``NullSink``, the quiet status reporter,
  the ``--offline`` instance env, the guardian process on).

The model server runs in a separate process (``python -m bench.real_cli --serve``), so
its CPU is in neither ``RUSAGE_SELF`` nor ``RUSAGE_CHILDREN`` of this process during the
window (it is reaped after the window closes); it is reported on its own.

The Orchestrator makes this process a child subreaper (``PR_SET_CHILD_SUBREAPER``) on
its first run, and it stays one for the by-hand runs after it; nothing is orphaned in
this workload, so that changes nothing measured. "other load" is the machine's busy CPU
time during a run minus this process, its children and the model server: other sessions'
work, which slows wall times but not the per-process CPU figures.

Checked, every run: every instance completed (exit 0, result ``success``) and its tokens
equal what the server served it (coordinator: live sums and reconciled totals; by hand:
the ``result`` line's usage), the server answered exactly the four scripted requests per
instance, and ``out.txt`` holds what the Bash tool made of ``note.txt``. Runs alternate
(ABBA order), medians are reported. Afterwards no claude process may be left.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console

from bench.recorded import live_descendants, quiet_logging
from coordinator.app import offline_instance_env
from coordinator.claude_bin import PROJECT_LOCAL
from coordinator.config import parse_config
from coordinator.engine.instance import Limits
from coordinator.engine.orchestrator import Orchestrator, RunOutcome, child_env
from coordinator.engine.sink import NullSink
from coordinator.engine.state import InstanceState, Status
from coordinator.offline.launch import OFFLINE_KEY
from coordinator.offline.scenarios import RESPONSE_DELAY_S
from coordinator.offline.server import serve_in_thread
from coordinator.plan import RunOptions, RunPlan, build_plan
from coordinator.status.live import StatusReporter, note_printer
from coordinator.status.render import ReportOptions
from runner.events import Result, Usage, parse_line

ROOT = Path(__file__).resolve().parents[1]
MB = 1 << 20
RESPONSES = 4  # per instance: Write, Bash, Bash, text
RUN_TIMEOUT_S = 120.0


# ------------------------------------------------------------------ the workload


def conversation(name: str, workspace: Path, delay: float) -> dict[str, Any]:
    def usage(n: int) -> dict[str, int]:
        return {
            "input_tokens": 40 + 15 * n,
            "output_tokens": 120 + 10 * n,
            "cache_creation_input_tokens": 2500 if n == 0 else 300,
            "cache_read_input_tokens": 0 if n == 0 else 2500 + 400 * n,
        }

    tools: list[dict[str, Any]] = [
        {
            "name": "Write",
            "input": {"file_path": str(workspace / "note.txt"), "content": f"hello from {name}\n"},
        },
        {
            "name": "Bash",
            "input": {"command": "tr a-z A-Z < note.txt > out.txt", "description": "shout"},
        },
        {"name": "Bash", "input": {"command": "cat out.txt", "description": "read it back"}},
    ]
    responses: list[dict[str, Any]] = [
        {
            "text": f"Step {n + 1}.\nPROGRESS: {25 * (n + 1)}%",
            "tool_uses": [tool],
            "usage": usage(n),
            "delay_s": delay,
        }
        for n, tool in enumerate(tools)
    ]
    responses.append(
        {"text": "Done.\nPROGRESS: 100%", "usage": usage(len(tools)), "delay_s": delay}
    )
    assert len(responses) == RESPONSES
    return {"responses": responses}


def make_plan(rundir: Path, names: list[str]) -> RunPlan:
    """Fresh orchestration id (so fresh session UUIDs), workspaces and config dirs."""
    config = parse_config(
        {
            "orchestration": {
                "startup_delay": 0,
                "timeout": RUN_TIMEOUT_S,
                "idle_timeout": 60,
            },
            "instances": [
                {
                    "name": name,
                    "command": f"Instance {name}: write a note, shout it, read it back.",
                    "workspace": name,
                    "allowed_tools": ["Bash", "Write"],
                    "env": {
                        "HOME": str(rundir / "home" / name),
                        "CLAUDE_CONFIG_DIR": str(rundir / "home" / name / ".claude"),
                    },
                }
                for name in names
            ],
        }
    )
    plan = build_plan(
        config,
        RunOptions(orchestration_id=f"bench-real-{rundir.name}"),
        claude_bin=str(PROJECT_LOCAL),
        config_path=None,
        cwd=rundir,
        now=datetime.now(UTC),
    )
    for inst in plan.instances:
        inst.workspace.mkdir(parents=True)
        Path(inst.env["CLAUDE_CONFIG_DIR"]).mkdir(parents=True)
    return plan


# ------------------------------------------------------------------ the model server


def serve(script_path: str) -> int:
    """``--serve``: the model server in this (separate) process. Prints its URL; each
    ``report`` line on stdin gets one JSON line of what was served; EOF stops it."""
    script = json.loads(Path(script_path).read_text())
    with serve_in_thread(script) as server:
        print(server.url, flush=True)
        for line in sys.stdin:
            if line.strip() != "report":
                continue
            keys = {s.key for s in server.served} | {r.key for r in server.requests}
            usage = server.usage_by_key()
            report = {
                key: {
                    "usage": [
                        usage[key].input_tokens if key in usage else 0,
                        usage[key].output_tokens if key in usage else 0,
                        usage[key].cache_read_input_tokens if key in usage else 0,
                        usage[key].cache_creation_input_tokens if key in usage else 0,
                    ],
                    "served": server.served_count(key),
                    "messages": server.message_count(key),
                    "tool_results": sum(
                        1 for r in server.requests if r.key == key and r.last_has_tool_result
                    ),
                    "auxiliary": sum(1 for r in server.requests if r.key == key and r.auxiliary),
                }
                for key in keys
            }
            print(json.dumps(report), flush=True)
    return 0


class ServerProcess:
    def __init__(self, script: dict[str, Any], path: Path) -> None:
        path.write_text(json.dumps(script))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.real_cli", "--serve", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            raise RuntimeError(f"model server did not start: {self.url!r}")
        self.ps = psutil.Process(self.proc.pid)

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def report(self) -> dict[str, dict[str, Any]]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("report\n")
        self.proc.stdin.flush()
        report: dict[str, dict[str, Any]] = json.loads(self.proc.stdout.readline())
        return report

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def offline_env(url: str) -> dict[str, str]:
    """What ``start_offline_server`` yields for ``coordinator run --offline``."""
    return {
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_API_KEY": OFFLINE_KEY,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }


# ------------------------------------------------------------------ measuring


class RssSampler(threading.Thread):
    """This process's RSS every ``interval`` (the same sampler runs in both modes)."""

    def __init__(self, interval: float = 0.05) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.interval = interval
        self.peak = 0
        self._halt = threading.Event()
        self._proc = psutil.Process()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


@dataclass(frozen=True, slots=True)
class Measured:
    mode: str
    wall_s: float
    self_cpu: float
    kids_cpu: float
    guardian_cpu: float
    server_cpu: float
    other_cpu: float  # busy CPU of the whole machine not accounted above: other load
    rss_before: int
    rss_peak: int
    tokens: int


class GuardianCpu(Orchestrator):
    """The production Orchestrator; also samples the guardian's CPU time when the last
    instance has finished (just before the guardian is told to exit)."""

    guardian_cpu = 0.0

    def on_finished(self, state: InstanceState) -> None:
        super().on_finished(state)
        guardian = self.guardian_pid
        if guardian is not None and all(s.status.finished for s in self.states.values()):
            try:
                times = psutil.Process(guardian).cpu_times()
                self.guardian_cpu = float(times.user + times.system)
            except psutil.Error:
                pass


async def run_coordinator(
    plan: RunPlan, base: Mapping[str, str], env: dict[str, str]
) -> tuple[RunOutcome, float]:
    """As ``app.run`` with ``--offline --quiet --no-database``, minus results.json."""
    printed = io.StringIO()
    console = Console(file=printed, width=120)
    reporter = StatusReporter(
        console, plan.status_report_interval, ReportOptions(max_line_length=120), quiet=True
    )
    limits = Limits(
        timeout=plan.timeout,
        idle_timeout=plan.idle_timeout,
        max_line_length=120,
        max_console_lines=20,
        max_line_bytes=None,
    )
    orch = GuardianCpu(
        plan,
        base_env=base,
        limits=limits,
        sink=NullSink(),
        instance_env=offline_instance_env(env),
        on_note=note_printer(console, enabled=False),
    )
    done = asyncio.Event()
    report = asyncio.create_task(reporter.run(orch, done))
    try:
        outcome = await orch.run()
    finally:
        done.set()
        await report
    reporter.final(orch)
    assert not printed.getvalue().strip(), printed.getvalue()  # quiet: errors only
    return outcome, orch.guardian_cpu


def run_by_hand(
    plan: RunPlan, base: Mapping[str, str], env: dict[str, str], new_session: bool
) -> None:
    per_instance = offline_instance_env(env)
    assert per_instance is not None
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    for inst in plan.instances:
        assert not inst.streams_input  # one prompt in argv: stdin is /dev/null
        with (
            (inst.workspace.parent / f"{inst.name}.stdout").open("wb") as out,
            (inst.workspace.parent / f"{inst.name}.stderr").open("wb") as err,
        ):
            proc = subprocess.Popen(
                inst.argv,
                cwd=inst.workspace,
                env=child_env(base, inst, per_instance(inst)),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=new_session,
            )
        procs.append((inst.name, proc))
    for name, proc in procs:
        code = proc.wait(RUN_TIMEOUT_S)
        assert code == 0, (name, code)


def served_usage(entry: dict[str, Any]) -> Usage:
    return Usage(*(int(v) for v in entry["usage"]))


def check_served(plan: RunPlan, served: dict[str, dict[str, Any]]) -> None:
    names = {inst.name for inst in plan.instances}
    assert set(served) == names, sorted(served)
    for name, entry in served.items():
        assert entry["served"] == RESPONSES and entry["messages"] == RESPONSES, (name, entry)
        assert entry["tool_results"] == RESPONSES - 1, (name, entry)
        assert entry["auxiliary"] == 0, (name, entry)


def check_workspace(plan: RunPlan) -> None:
    for inst in plan.instances:
        out = (inst.workspace / "out.txt").read_text()
        assert out == f"HELLO FROM {inst.name.upper()}\n", (inst.name, out)


def check_hand(plan: RunPlan, served: dict[str, dict[str, Any]]) -> None:
    for inst in plan.instances:
        results = []
        with (inst.workspace.parent / f"{inst.name}.stdout").open("rb") as lines:
            for line in lines:
                event = parse_line(line)
                if isinstance(event, Result):
                    results.append(event)
        assert len(results) == 1, (inst.name, len(results))
        result = results[0]
        assert result.subtype == "success" and not result.is_error, (inst.name, result)
        assert result.usage == served_usage(served[inst.name]), (inst.name, result.usage)


def check_coordinator(outcome: RunOutcome, served: dict[str, dict[str, Any]]) -> None:
    assert not outcome.interrupted and outcome.exit_code == 0
    for state in outcome.states:
        acct = state.accountant
        want = served_usage(served[state.name])
        assert state.status is Status.COMPLETED, (state.name, state.status, state.error)
        assert state.exit_code == 0, (state.name, state.exit_code)
        assert acct.usage == want, (state.name, acct.usage, want)
        assert acct.streamed_usage == want, (state.name, acct.streamed_usage, want)
        assert acct.last_result is not None and acct.last_result.usage == want
        assert acct.tool_calls == {"Write": 1, "Bash": 2}, (state.name, acct.tool_calls)


def busy_cpu() -> float:
    """CPU-seconds the whole machine has spent busy (all CPUs, not idle or iowait)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def measure(
    mode: str,
    rundir: Path,
    names: list[str],
    delay: float,
    base: Mapping[str, str],
    sessions: set[str],
    hand_new_session: bool = True,
) -> Measured:
    plan = make_plan(rundir, names)
    sessions.update(inst.session_id for inst in plan.instances)
    script = {
        "conversations": {
            inst.name: conversation(inst.name, inst.workspace, delay) for inst in plan.instances
        }
    }
    server = ServerProcess(script, rundir / "script.json")
    try:
        env = offline_env(server.url)
        outcome: RunOutcome | None = None
        guardian_cpu = 0.0
        rss_before = psutil.Process().memory_info().rss
        sampler = RssSampler()
        sampler.start()
        server0 = server.cpu()
        busy0 = busy_cpu()
        self0 = resource.getrusage(resource.RUSAGE_SELF)
        kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        w0 = time.perf_counter()
        if mode == "hand":
            run_by_hand(plan, base, env, hand_new_session)
        else:
            outcome, guardian_cpu = asyncio.run(run_coordinator(plan, base, env))
        wall = time.perf_counter() - w0
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        server1 = server.cpu()
        busy1 = busy_cpu()
        sampler.stop()
        served = server.report()
    finally:
        server.close()
    leftovers = live_descendants()
    assert not leftovers, leftovers
    check_served(plan, served)
    check_workspace(plan)
    if outcome is None:
        check_hand(plan, served)
    else:
        check_coordinator(outcome, served)
    self_cpu = (self1.ru_utime - self0.ru_utime) + (self1.ru_stime - self0.ru_stime)
    kids_cpu = (kids1.ru_utime - kids0.ru_utime) + (kids1.ru_stime - kids0.ru_stime)
    return Measured(
        mode=mode,
        wall_s=wall,
        self_cpu=self_cpu,
        kids_cpu=kids_cpu,
        guardian_cpu=guardian_cpu,
        server_cpu=server1 - server0,
        other_cpu=max(0.0, (busy1 - busy0) - self_cpu - kids_cpu - (server1 - server0)),
        rss_before=rss_before,
        rss_peak=sampler.peak,
        tokens=sum(served_usage(e).total for e in served.values()),
    )


def claude_processes() -> dict[int, str]:
    """Live claude processes on the whole machine: pid -> command line."""
    found = {}
    for proc in psutil.process_iter(["pid", "name", "cmdline", "status"]):
        info = proc.info
        if info["status"] == psutil.STATUS_ZOMBIE:
            continue
        argv0 = (info["cmdline"] or [""])[0]
        if "claude" in (info["name"] or "") or os.path.basename(argv0).startswith("claude"):
            found[info["pid"]] = " ".join(info["cmdline"] or [])
    return found


def ours(procs: dict[int, str], sessions: set[str]) -> list[str]:
    """The ones this benchmark started (its session UUIDs are in their argv)."""
    return [f"{pid} {cmd}" for pid, cmd in procs.items() if any(s in cmd for s in sessions)]


def med(runs: list[Measured], key: Callable[[Measured], float]) -> float:
    return statistics.median(key(r) for r in runs)


# ------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="runs per mode, interleaved")
    ap.add_argument(
        "--delay", type=float, default=RESPONSE_DELAY_S, help="model latency per response, s"
    )
    ap.add_argument(
        "--hand-one-session",
        action="store_true",
        help="by hand: all instances in this process's session (one autogroup)",
    )
    ap.add_argument("--serve", metavar="SCRIPT", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        return serve(args.serve)
    quiet_logging()
    names = [f"i{k:02d}" for k in range(args.instances)]
    sessions: set[str] = set()
    base = {k: v for k, v in os.environ.items() if k != "CLAUDE_CONFIG_DIR"}
    # ABBA: neither mode always goes first (page cache, CPU frequency, load drift)
    order = [
        ("hand", "coordinator") if r % 2 == 0 else ("coordinator", "hand")
        for r in range(args.rounds)
    ]
    runs: list[Measured] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="coord-bench-real-") as tmp:
        workdir = Path(tmp)
        # page cache and first-start effects, not counted
        measure("hand", workdir / "warmup", names[:2], 0.0, base, sessions)
        for r, pair in enumerate(order):
            for mode in pair:
                runs.append(
                    measure(
                        mode,
                        workdir / f"r{r}-{mode}",
                        names,
                        args.delay,
                        base,
                        sessions,
                        hand_new_session=not args.hand_one_session,
                    )
                )
    total_s = time.perf_counter() - t0
    on_machine = claude_processes()
    left = ours(on_machine, sessions)

    hand = [m for m in runs if m.mode == "hand"]
    coord = [m for m in runs if m.mode == "coordinator"]
    n = args.instances
    h_wall, c_wall = med(hand, lambda m: m.wall_s), med(coord, lambda m: m.wall_s)
    c_self = med(coord, lambda m: m.self_cpu)
    h_self = med(hand, lambda m: m.self_cpu)
    c_guard = med(coord, lambda m: m.guardian_cpu)
    h_kids = med(hand, lambda m: m.kids_cpu)
    c_kids = med(coord, lambda m: m.kids_cpu)
    c_claude = med(coord, lambda m: m.kids_cpu - m.guardian_cpu)
    overhead = c_self + c_guard
    rss_peak = max(m.rss_peak for m in coord)
    rss_before = min(m.rss_before for m in coord)
    tokens = runs[-1].tokens
    kid_maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    version = subprocess.run(
        [str(PROJECT_LOCAL), "--version"], capture_output=True, text=True, check=True
    ).stdout.split()[0]

    print(
        f"Real CLI: {n} concurrent claude {version} instances, each {RESPONSES} API responses "
        f"(Write, Bash, Bash, text; {args.delay:g} s model latency each) from the offline "
        f"model server (a separate process), on {os.cpu_count()} CPUs; "
        f"{args.rounds} runs per mode, ABBA-interleaved, medians; by hand: each instance in "
        + (
            "this process's session"
            if args.hand_one_session
            else "its own session (as the coordinator)"
        )
    )
    print(
        f"all {n} instances completed in every run ({len(runs)} runs); every instance's "
        f"tokens equal what the server served ({tokens:,} per run; coordinator: live sums "
        f"and result; by hand: the result line); every Bash tool really ran"
    )
    print(
        f"  wall time                        by hand {h_wall:6.2f} s   coordinator "
        f"{c_wall:6.2f} s   (coordinator/by hand {c_wall / h_wall:.3f})"
    )
    print(
        f"  coordinator CPU (RUSAGE_SELF)    {c_self:6.3f} s = {c_self / n * 1000:.0f} ms per "
        f"instance   (by-hand launcher: {h_self:.3f} s)"
    )
    print(
        f"  + guardian process CPU           {c_guard:6.3f} s   -> coordinator overhead "
        f"{overhead:.3f} s = {overhead / n * 1000:.0f} ms per instance"
    )
    print(
        f"  children CPU (RUSAGE_CHILDREN)   by hand {h_kids:6.2f} s   coordinator "
        f"{c_kids:6.2f} s (claude + tools {c_claude:.2f} s + guardian)"
    )
    print(
        f"  coordinator CPU / children CPU   {c_self / c_claude:.1%} "
        f"(with guardian {overhead / c_claude:.1%}) of the claude instances' own CPU"
    )
    print(
        f"  coordinator RSS                  {rss_before / MB:.0f} MiB before a run, sampled "
        f"peak {rss_peak / MB:.0f} MiB (50 ms samples; "
        f"+{(rss_peak - rss_before) / MB:.1f} MiB during the run)"
    )
    print(
        f"  model server CPU (not above)     {med(runs, lambda m: m.server_cpu):.3f} s per run; "
        f"largest child's peak RSS {kid_maxrss / MB:.0f} MiB"
    )
    print(
        "  per run, in order                mode          wall s  self CPU s  children CPU s"
        "  other load CPU s"
    )
    for m in runs:
        print(
            f"{'':35}{m.mode:<12} {m.wall_s:7.2f}  {m.self_cpu:10.3f}  {m.kids_cpu:14.2f}"
            f"  {m.other_cpu:16.2f}"
        )
    busy = max(m.other_cpu / m.kids_cpu for m in runs)
    if busy > 0.1:
        print(
            f"  note: other processes on this machine used up to {busy:.0%} as much CPU as the "
            "claude instances during a run: wall times (and their ratio) are noisy; the CPU "
            "figures are per process and hold"
        )
    others = len(on_machine) - len(left)
    print(
        f"  claude processes of this benchmark left afterwards: {len(left) or 'none'}"
        + (f" {left}" if left else "")
        + (f" ({others} other claude processes on the machine, not ours)" if others else "")
    )
    summary = {
        "bench": "real_cli",
        "instances": n,
        "rounds": args.rounds,
        "claude_version": version,
        "tokens_per_run": tokens,
        "wall_by_hand_s": round(h_wall, 2),
        "wall_coordinator_s": round(c_wall, 2),
        "wall_ratio": round(c_wall / h_wall, 3),
        "coordinator_cpu_s": round(c_self, 3),
        "coordinator_cpu_ms_per_instance": round(c_self / n * 1000, 1),
        "guardian_cpu_s": round(c_guard, 3),
        "children_cpu_by_hand_s": round(h_kids, 2),
        "children_cpu_coordinator_s": round(c_kids, 2),
        "coordinator_cpu_pct_of_children": round(100 * c_self / c_claude, 2),
        "rss_peak_mib": round(rss_peak / MB, 1),
        "other_load_cpu_s_max": round(max(m.other_cpu for m in runs), 2),
        "all_completed": True,
        "claude_left": len(left),
        "total_s": round(total_s, 1),
    }
    print(
        f"total {total_s:.0f} s; load average (1 min) at the end: {os.getloadavg()[0]:.2f} "
        f"on {os.cpu_count()} CPUs"
    )
    print(json.dumps(summary))
    return 0 if not left else 1


if __name__ == "__main__":
    sys.exit(main())
