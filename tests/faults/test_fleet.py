"""Several hosts, one orchestration: ``coordinator submit`` queues the instances, three
``coordinator runner`` processes (each a host of its own: its own HOME and state dir)
claim and run them on the same engine, a runner that is SIGKILLed loses its claims after
the lease and the others take them over, a runner stopped past its lease comes back to a
moved epoch and stops its copy. Real Postgres, real processes and signals; the replay
stand-in for claude (the fleet's mechanics are the point here, not the model)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.engine.helpers import REPLAY, alive_cmdlines
from tests.faults.harness import (
    COORDINATOR,
    answer,
    coordinator,
    coordinator_env,
    process_ended,
    wait_for,
    write_config,
)

pytestmark = [pytest.mark.postgres]

LEASE_S = "3"


@dataclass
class Host:
    """One runner process and the directories that make it a host of its own."""

    name: str
    proc: subprocess.Popen[bytes]
    state: Path
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_runner(
    tmp_path: Path,
    name: str,
    dsn: str,
    *,
    capacity: int = 1,
    labels: str | None = None,
    home: Path | None = None,
    env: dict[str, str] | None = None,
) -> Host:
    """A runner as a host of its own: its HOME (unless ``home``: two runners on one host)
    and its state dir; ``env``: settings of its own."""
    where = tmp_path / "hosts" / name
    user_home = home or where / "home"
    user_home.mkdir(parents=True, exist_ok=True)
    where.mkdir(parents=True, exist_ok=True)
    state = where / "state"
    log = where / "runner.log"
    env = {
        **coordinator_env(state, COORDINATOR_LEASE_S=LEASE_S),
        "HOME": str(user_home),
        **(env or {}),
    }
    args = ["runner", "--database-url", dsn, "--capacity", str(capacity), "--name", name]
    if labels:
        args += ["--labels", labels]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*COORDINATOR, *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    return Host(name, proc, state, log)


def run_argv(verb: list[str], tmp_path: Path, config: Path, dsn: str, orch_id: str) -> list[str]:
    """``coordinator <verb>`` of a replay run on ``dsn``, its results beside the config."""
    return [
        *COORDINATOR,
        *verb,
        "--config",
        str(config),
        "--claude-bin",
        REPLAY,
        "--workspace",
        str(tmp_path),
        "--database-url",
        dsn,
        "--orchestration-id",
        orch_id,
        "--output",
        str(tmp_path / f"results-{orch_id}.json"),
    ]


def submit(
    tmp_path: Path, config: Path, dsn: str, orch_id: str, *extra: str, wait: bool = False
) -> subprocess.Popen[bytes]:
    out = tmp_path / f"submit-{orch_id}.out"
    with out.open("wb") as sink, (tmp_path / f"submit-{orch_id}.err").open("wb") as err:
        return subprocess.Popen(
            [
                *run_argv(["submit"], tmp_path, config, dsn, orch_id),
                *(["--wait"] if wait else []),
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=err,
            start_new_session=True,
            env=coordinator_env(tmp_path / "submit-state", COORDINATOR_LEASE_S=LEASE_S),
        )


def status_json(tmp_path: Path, dsn: str, orch_id: str) -> dict[str, Any]:
    done = coordinator(
        ["status", orch_id, "--json", "--database-url", dsn], tmp_path / "status-state"
    )
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def rows(tmp_path: Path, dsn: str, orch_id: str) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in status_json(tmp_path, dsn, orch_id)["instances"]}


def slow_answer(tag: str, inp: int, out: int, seconds: float) -> list[dict[str, Any]]:
    """Works ``seconds`` (a sleep) and then answers: one API response and its result."""
    lines = answer(f"msg-{tag}", inp, out)
    return [{"lines": lines[:1]}, {"sleep": seconds}, {"lines": lines[1:]}]


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    started: list[Host] = []
    yield started
    for host in started:  # whatever the test did: no runner left behind
        if host.proc.poll() is None:
            os.killpg(host.proc.pid, signal.SIGKILL)
            host.proc.wait()


def test_one_orchestration_spread_over_three_runners(
    tmp_path: Path, pg_dsn: str, hosts: list[Host]
) -> None:
    """Submit queues six instances; three runners (capacity 1 each, three homes) share
    them; ``submit --wait`` writes the results once all ended; tokens exact per instance;
    ``status`` lists the runners; no process is left."""
    scripts = {f"w{i}": slow_answer(f"w{i}", 100 + i, 10 + i, 1.5) for i in range(6)}
    config = write_config(tmp_path, scripts)
    waiter = submit(tmp_path, config, pg_dsn, "fleet-a", wait=True)
    hosts += [start_runner(tmp_path, f"r{k}", pg_dsn) for k in range(3)]
    assert waiter.wait(timeout=120) == 0, (tmp_path / "submit-fleet-a.err").read_text()
    assert (tmp_path / "submit-fleet-a.out").read_text().strip() == "fleet-a"
    results = json.loads((tmp_path / "results-fleet-a.json").read_text())
    by_name = {i["name"]: i for i in results["instances"]}
    for i in range(6):
        inst = by_name[f"w{i}"]
        assert inst["status"] == "completed", inst
        assert (inst["input_tokens"], inst["output_tokens"]) == (100 + i, 10 + i)
    assert results["totals"]["total_tokens"] == sum(110 + 2 * i for i in range(6))
    snap = status_json(tmp_path, pg_dsn, "fleet-a")
    assert snap["orchestration"]["status"] == "completed"
    names = sorted(r["name"] for r in snap["runners"])
    assert names == ["r0", "r1", "r2"]  # every runner held some of them
    for r in snap["runners"]:
        assert r["capacity"] == 1 and r["held"] == []
    shown = coordinator(["status", "fleet-a", "--database-url", pg_dsn], tmp_path / "st")
    assert shown.returncode == 0, shown.stderr
    for k in range(3):  # the table names each runner: host, heartbeat age, capacity, held
        assert f"runner r{k} on " in shown.stdout and "capacity 1, holds 0" in shown.stdout
    for host in hosts:
        assert host.stop() == 0, host.text()
    assert alive_cmdlines(str(tmp_path)) == []


def instance_rows(dsn: str, orch_id: str) -> dict[str, dict[str, Any]]:
    """Each instance's row with its claim: epoch, runner name, pid, attempts."""
    import asyncio

    import asyncpg

    async def read() -> list[Any]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(
                await conn.fetch(
                    "SELECT i.name, i.status, i.claim_epoch, r.name AS runner, i.pid, "
                    "i.attempts, i.total_tokens, i.session_id::text AS session_id "
                    "FROM instances i LEFT JOIN runners r ON r.id = i.runner "
                    "WHERE i.orchestration_id = $1",
                    orch_id,
                )
            )
        finally:
            await conn.close()

    return {r["name"]: dict(r.items()) for r in asyncio.run(read())}


def field_of(dsn: str, orch_id: str, name: str, key: str) -> Any:
    """One field of an instance's row; None while the row is not there yet."""
    row = instance_rows(dsn, orch_id).get(name)
    return None if row is None else row[key]


def running_copies(session_id: str) -> int:
    """Processes of this instance's claude (its session id is in the argv) that run: a
    stopped one (SIGSTOP) does not count, a zombie is gone."""
    count = 0
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] in (psutil.STATUS_ZOMBIE, psutil.STATUS_STOPPED):
                continue
            if session_id in " ".join(proc.info["cmdline"] or []):
                count += 1
        except psutil.Error:
            continue
    return count


def copies_of(session_id: str) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if session_id in " ".join(proc.info["cmdline"] or []):
                out.append(proc)
        except psutil.Error:
            continue
    return out


def test_a_sigkilled_runner_loses_its_instances_to_the_others(
    tmp_path: Path, pg_dsn: str, hosts: list[Host]
) -> None:
    """Three runners hold one instance each; one is SIGKILLed mid-run: the guardian reaps
    its instance, its claim goes stale after the lease, another runner takes the instance
    over (epoch 2, a new attempt recorded as such) and it completes; tokens are exact; no
    instance ever ran twice at once (sampled all along); no process is left."""
    scripts = {f"k{i}": slow_answer(f"k{i}", 200 + i, 20 + i, 6.0) for i in range(3)}
    config = write_config(tmp_path, scripts)
    waiter = submit(tmp_path, config, pg_dsn, "fleet-k", wait=True)
    hosts += [start_runner(tmp_path, f"r{k}", pg_dsn) for k in range(3)]

    def all_running() -> bool:
        found = instance_rows(pg_dsn, "fleet-k")
        return len(found) == 3 and all(
            r["status"] == "running" and r["runner"] and r["pid"] for r in found.values()
        )

    wait_for(all_running, 60, "each runner to run one instance")
    before = instance_rows(pg_dsn, "fleet-k")
    victim_name, victim = next((n, r) for n, r in before.items() if r["runner"] == "r0")
    sessions = {n: r["session_id"] for n, r in before.items()}
    guardians = [
        p for p in psutil.Process(hosts[0].proc.pid).children() if "runner.guardian" in p.cmdline()
    ]
    assert len(guardians) == 1  # one per runner, for every instance it holds
    os.kill(hosts[0].proc.pid, signal.SIGKILL)
    hosts[0].proc.wait()
    wait_for(lambda: process_ended(guardians[0].pid), 30, "the dead runner's guardian to reap")
    assert copies_of(sessions[victim_name]) == []  # reaped before anyone took it over
    most = 0
    deadline = time.monotonic() + 90
    while waiter.poll() is None:  # sample: never two running copies of one instance
        most = max(most, *(running_copies(s) for s in sessions.values()))
        assert time.monotonic() < deadline, "the run did not end"
        time.sleep(0.05)
    assert waiter.returncode == 0, (tmp_path / "submit-fleet-k.err").read_text()
    assert most == 1
    after = instance_rows(pg_dsn, "fleet-k")
    assert after[victim_name]["claim_epoch"] == 2
    assert after[victim_name]["runner"] in ("r1", "r2")
    assert after[victim_name]["attempts"] == 2
    assert not psutil.pid_exists(victim["pid"]) or copies_of(sessions[victim_name]) == []
    results = json.loads((tmp_path / "results-fleet-k.json").read_text())
    by_name = {i["name"]: i for i in results["instances"]}
    for i in range(3):
        inst = by_name[f"k{i}"]
        assert inst["status"] == "completed", inst
        assert (inst["input_tokens"], inst["output_tokens"]) == (200 + i, 20 + i)
    lost = by_name[victim_name]["attempt_log"][0]
    assert lost["status"] == "lost" and lost["error"] == "its runner stopped"
    assert "new attempt from the start" in lost["then"]
    for host in hosts[1:]:
        assert host.stop() == 0, host.text()
    assert alive_cmdlines(str(tmp_path)) == []


@pytest.mark.parametrize("frozen", ["runner", "host", "stubborn"])
def test_a_runner_stopped_past_its_lease_never_overlaps_and_comes_back_fenced(
    tmp_path: Path, pg_dsn: str, hosts: list[Host], frozen: str
) -> None:
    """The runner is SIGSTOPped past its lease (``runner``: only its process, its claude
    goes on; ``host``: its instance too, a frozen machine; ``stubborn``: its claude ignores
    SIGTERM, so only a SIGKILL before the lease ends saves the take-over, not a default
    grace). Its guardian's watchdog stops the copy before the lease ends; only then does
    another runner take the instance over (the epoch moves), so two copies never run at
    once (sampled). SIGCONT: the runner sees the epoch moved, writes nothing over the new
    holder's row, leaves the job alone; the instance completes on the other runner with
    exact tokens."""
    scripts = {"x": slow_answer("x", 300, 30, 12.0)}
    config = write_config(tmp_path, scripts)
    if frozen == "stubborn":
        written = json.loads(config.read_text())
        written["instances"][0]["env"]["REPLAY_IGNORE_SIGTERM"] = "1"
        config.write_text(json.dumps(written))
    waiter = submit(tmp_path, config, pg_dsn, "fleet-s", wait=True)
    hosts.append(start_runner(tmp_path, "r0", pg_dsn))

    def held_by(name: str, epoch: int) -> bool:
        row = instance_rows(pg_dsn, "fleet-s").get("x")
        if row is None:
            return False
        return (row["runner"], row["claim_epoch"], row["status"]) == (name, epoch, "running")

    wait_for(lambda: held_by("r0", 1), 60, "r0 to run x")
    first = instance_rows(pg_dsn, "fleet-s")["x"]
    old = psutil.Process(first["pid"])
    hosts.append(start_runner(tmp_path, "r1", pg_dsn))
    wait_for(lambda: "r1: runner on" in hosts[1].text(), 30, "r1 to be up")
    os.kill(hosts[0].proc.pid, signal.SIGSTOP)
    if frozen == "host":
        os.killpg(os.getpgid(old.pid), signal.SIGSTOP)
    most = 0
    old_gone_at_take_over = None
    try:
        deadline = time.monotonic() + 60
        while not held_by("r1", 2):
            most = max(most, running_copies(first["session_id"]))
            old_gone_at_take_over = not old.is_running() or old.status() == psutil.STATUS_ZOMBIE
            assert time.monotonic() < deadline, "r1 did not take x over"
            time.sleep(0.05)
    finally:
        os.kill(hosts[0].proc.pid, signal.SIGCONT)
    assert old_gone_at_take_over, "the frozen runner's copy was still there at the take-over"
    assert most <= 1
    wait_for(lambda: "copy stopped (claim lost" in hosts[0].text(), 30, "r0 to say so")
    row = instance_rows(pg_dsn, "fleet-s")["x"]
    assert (row["runner"], row["claim_epoch"], row["status"]) == ("r1", 2, "running")
    assert waiter.wait(timeout=90) == 0, (tmp_path / "submit-fleet-s.err").read_text()
    row = instance_rows(pg_dsn, "fleet-s")["x"]
    assert (row["runner"], row["claim_epoch"], row["status"]) == ("r1", 2, "completed")
    results = json.loads((tmp_path / "results-fleet-s.json").read_text())
    [inst] = results["instances"]
    assert (inst["input_tokens"], inst["output_tokens"]) == (300, 30)
    for host in hosts:
        assert host.stop() == 0, host.text()
    assert alive_cmdlines(str(tmp_path)) == []


def test_sigterm_drains_and_a_second_one_hands_back(
    tmp_path: Path, pg_dsn: str, hosts: list[Host]
) -> None:
    """SIGTERM: the runner claims nothing more and finishes what it holds (the other
    instance stays queued, unclaimed). Then a runner holding a long instance gets SIGTERM
    twice: it stops it (no process left) and hands it back; another runner continues it."""
    scripts = {"d0": slow_answer("d0", 10, 1, 3.0), "d1": slow_answer("d1", 20, 2, 3.0)}
    scripts["long"] = slow_answer("long", 30, 3, 600.0)
    config = write_config(tmp_path, {k: v for k, v in scripts.items() if k != "long"})
    waiter = submit(tmp_path, config, pg_dsn, "fleet-d", wait=True)
    hosts.append(start_runner(tmp_path, "r0", pg_dsn))
    wait_for(
        lambda: any(r["status"] == "running" for r in instance_rows(pg_dsn, "fleet-d").values()),
        60,
        "r0 to run one instance",
    )
    hosts[0].proc.send_signal(signal.SIGTERM)
    assert hosts[0].proc.wait(timeout=60) == 0, hosts[0].text()
    assert "draining" in hosts[0].text()
    found = instance_rows(pg_dsn, "fleet-d")
    assert sorted(r["status"] for r in found.values()) == ["completed", "pending"]
    assert sorted(r["claim_epoch"] for r in found.values()) == [0, 1]  # never claimed
    hosts.append(start_runner(tmp_path, "r1", pg_dsn))
    assert waiter.wait(timeout=60) == 0
    hosts[1].stop()

    config = write_config(tmp_path, {"long": scripts["long"]})
    waiter = submit(tmp_path, config, pg_dsn, "fleet-h", wait=True)
    hosts.append(start_runner(tmp_path, "r2", pg_dsn))
    wait_for(lambda: field_of(pg_dsn, "fleet-h", "long", "status") == "running", 60, "r2 runs")
    session = instance_rows(pg_dsn, "fleet-h")["long"]["session_id"]
    hosts[2].proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "draining" in hosts[2].text(), 10, "r2 to drain")
    hosts[2].proc.send_signal(signal.SIGTERM)
    assert hosts[2].proc.wait(timeout=30) == 0, hosts[2].text()
    assert copies_of(session) == []
    row = instance_rows(pg_dsn, "fleet-h")["long"]
    assert row["status"] == "retrying" and row["claim_epoch"] == 1  # unfinished, queued again
    hosts.append(start_runner(tmp_path, "r3", pg_dsn))
    wait_for(lambda: field_of(pg_dsn, "fleet-h", "long", "claim_epoch") == 2, 60, "r3 claims it")
    wait_for(lambda: running_copies(session) == 1, 30, "r3 to run it")
    hosts[3].proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "draining" in hosts[3].text(), 10, "r3 to drain")  # two at once: one
    hosts[3].proc.send_signal(signal.SIGTERM)
    assert hosts[3].proc.wait(timeout=30) == 0
    waiter.send_signal(signal.SIGINT)
    assert waiter.wait(timeout=30) == 130
    assert alive_cmdlines(str(tmp_path)) == []


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--config", "{missing}"], "missing.json"),
        (["--config", "{bad}"], "instances[0].labels[0]"),
        (["--config", "{good}", "--no-db"], "submit needs a database"),
        (["--config", "{good}", "--database-url", "mysql://x@y/z"], "--no-db"),
        (["--config", "{good}", "--start-at", "whenever"], "--start-at"),
    ],
)
def test_bad_submit_is_one_line_exit_2(tmp_path: Path, args: list[str], fragment: str) -> None:
    good = write_config(tmp_path, {"a": slow_answer("a", 1, 1, 0)})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"instances": [{"command": "x", "labels": ["a b"]}]}))
    paths = {"missing": str(tmp_path / "missing.json"), "bad": str(bad), "good": str(good)}
    argv = ["submit", "--claude-bin", REPLAY, *[a.format(**paths) for a in args]]
    out = coordinator(argv, tmp_path / "state")
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [ln for ln in out.stderr.strip().splitlines() if not ln.startswith("warning:")]
    assert len(lines) == 1 and fragment in lines[0], out.stderr  # as `run` says it
    assert "Traceback" not in out.stderr


def test_bad_runner_flags_are_one_line_exit_2(tmp_path: Path) -> None:
    for args, fragment in (
        (["--labels", "a b"], "'a b'"),
        (["--labels", ",".join(f"l{i}" for i in range(9))], "at most 8"),
        (["--capacity", "0"], "--capacity"),
        (["--database-url", "mysql://x@y/z"], "database"),
    ):
        out = coordinator(["runner", *args], tmp_path / "state", timeout=30)
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], out.stderr


@pytest.mark.parametrize("poll_s", ["0.1", "120"])
def test_an_overall_budget_blocks_instances_on_every_runner(
    tmp_path: Path, pg_dsn: str, hosts: list[Host], poll_s: str
) -> None:
    """Block mode, overall token budget: an instance on r0 crosses it; the instance running
    on r1 is stopped (blocked) within a bounded time of the crossing line, and the one still
    queued is skipped by whichever runner claims it. With the runners' budget poll at 120 s,
    only the crossing pushed by the runner that saw it (NOTIFY) can stop it in time."""
    from tests.unit.streams import api_response, init, result, usage

    go = tmp_path / "go"
    stamp = tmp_path / "crossing.stamp"
    burn: list[dict[str, Any]] = [
        {"lines": [init().decode()]},
        {"wait_file": str(go), "timeout": 120},
        {"lines": [b.decode() for b in api_response("m-burn", 5000, 10)], "stamp": str(stamp)},
        {"sleep": 600},
        {"lines": [result(usage(5000, 10)).decode()]},
    ]
    idle: list[dict[str, Any]] = [
        {"lines": [init().decode(), *(b.decode() for b in api_response("m-idle", 10, 1))]},
        {"sleep": 600},
    ]
    config = write_config(
        tmp_path,
        {"burn": burn, "idle": idle, "late": slow_answer("late", 1, 1, 0)},
        {"budget": {"overall_tokens": 1000, "mode": "block"}},
    )
    waiter = submit(tmp_path, config, pg_dsn, "fleet-b", wait=True)
    hosts += [
        start_runner(tmp_path, f"r{k}", pg_dsn, env={"COORDINATOR_BUDGET_POLL_S": poll_s})
        for k in range(2)
    ]

    def both_running() -> bool:
        found = instance_rows(pg_dsn, "fleet-b")
        return (
            all(
                found.get(n, {}).get("status") == "running" and found[n]["total_tokens"] > 0
                for n in ("idle",)
            )
            and found.get("burn", {}).get("status") == "running"
        )

    wait_for(both_running, 60, "burn and idle to run on the two runners")
    found = instance_rows(pg_dsn, "fleet-b")
    assert found["burn"]["runner"] != found["idle"]["runner"]
    session = found["idle"]["session_id"]
    go.write_text("go")
    wait_for(lambda: stamp.exists() and stamp.read_text().strip() != "", 30, "the crossing")
    wait_for(lambda: copies_of(session) == [], 30, "idle to be stopped on the other runner")
    stopped_at = time.time()
    crossed_at = int(stamp.read_text().split()[1]) / 1e9
    latency = stopped_at - crossed_at
    print(f"cross-runner block latency (crossing line -> group gone, polled): {latency:.3f}s")
    assert latency < 3.0
    assert waiter.wait(timeout=90) == 1, (tmp_path / "submit-fleet-b.err").read_text()
    results = json.loads((tmp_path / "results-fleet-b.json").read_text())
    by = {i["name"]: i for i in results["instances"]}
    assert by["burn"]["status"] == "blocked"
    assert by["idle"]["status"] == "blocked"
    assert "overall token budget" in by["idle"]["reason"]
    assert by["late"]["status"] == "skipped"
    for host in hosts:
        assert host.stop() == 0, host.text()
    assert alive_cmdlines(str(tmp_path)) == []


def test_a_take_over_continues_the_session_when_its_transcript_is_visible(
    tmp_path: Path, pg_dsn: str, hosts: list[Host]
) -> None:
    """Two runners on one host (one HOME): the session's transcript the first one's claude
    wrote is visible to the second, so the take-over continues the session (``--resume``)
    instead of starting again; recorded as such."""
    go = tmp_path / "go"
    lines = answer("msg-c", 40, 4)
    # the API answered (so claude wrote the session), then the instance works until `go`
    steps: list[dict[str, Any]] = [
        {"lines": lines[:-1]},
        {"wait_file": str(go), "timeout": 120},
        {"lines": lines[-1:]},
    ]
    config = write_config(tmp_path, {"c": steps})
    waiter = submit(tmp_path, config, pg_dsn, "fleet-c", wait=True)
    shared_home = tmp_path / "hosts" / "shared-home"
    hosts.append(start_runner(tmp_path, "r0", pg_dsn, home=shared_home))
    wait_for(  # its tokens are written, and with them that its session exists
        lambda: (field_of(pg_dsn, "fleet-c", "c", "total_tokens") or 0) > 0, 60, "r0 runs c"
    )
    row = instance_rows(pg_dsn, "fleet-c")["c"]
    # what claude keeps of a session: its transcript, under the config dir of that HOME
    transcript = shared_home / ".claude" / "projects" / "-work" / f"{row['session_id']}.jsonl"
    transcript.parent.mkdir(parents=True)
    transcript.write_text('{"type": "user"}\n')
    hosts.append(start_runner(tmp_path, "r1", pg_dsn, home=shared_home))
    os.kill(hosts[0].proc.pid, signal.SIGKILL)
    hosts[0].proc.wait()
    wait_for(lambda: field_of(pg_dsn, "fleet-c", "c", "claim_epoch") == 2, 60, "r1 takes c")
    wait_for(lambda: running_copies(row["session_id"]) == 1, 30, "r1 to run c")
    [copy] = [p for p in copies_of(row["session_id"])]
    argv = copy.cmdline()
    assert "--resume" in argv and row["session_id"] in argv
    go.write_text("go")
    assert waiter.wait(timeout=60) == 0, (tmp_path / "submit-fleet-c.err").read_text()
    results = json.loads((tmp_path / "results-fleet-c.json").read_text())
    [inst] = results["instances"]
    assert inst["status"] == "completed" and inst["attempts"] == 2
    assert "continues its session" in inst["attempt_log"][0]["then"]
    assert hosts[1].stop() == 0
    assert alive_cmdlines(str(tmp_path)) == []


def test_start_at_and_the_stagger_become_not_before_times(
    tmp_path: Path, pg_dsn: str, hosts: list[Host]
) -> None:
    """``--start-at`` and the stagger (``startup_delay``) hold across runners: a runner
    with room for all of them launches none before its time."""
    from datetime import datetime, timedelta

    scripts = {f"s{i}": slow_answer(f"s{i}", 5, 1, 0) for i in range(3)}
    config = write_config(tmp_path, scripts, {"startup_delay": 1.5})
    start = datetime.now().astimezone() + timedelta(seconds=4)
    waiter = submit(tmp_path, config, pg_dsn, "fleet-t", "--start-at", start.isoformat(), wait=True)
    hosts.append(start_runner(tmp_path, "r0", pg_dsn, capacity=5))
    assert waiter.wait(timeout=90) == 0, (tmp_path / "submit-fleet-t.err").read_text()
    results = json.loads((tmp_path / "results-fleet-t.json").read_text())
    for inst in results["instances"]:
        k = int(inst["name"][1:])
        due = start.timestamp() + 1.5 * k
        started = datetime.fromisoformat(inst["started_at"]).timestamp()
        assert started >= due - 0.05, (inst["name"], started - due)
    assert hosts[0].stop() == 0


def test_rows_a_runner_had_to_journal_at_an_instance_end_reach_the_database_while_it_runs(
    tmp_path: Path, pg_dsn: str, hosts: list[Host]
) -> None:
    """The final flush of each instance misses its deadline (here 1 ms, at full size a
    hundred engines closing at once behind one pool): its rows are journalled. The runner,
    still running, replays its journal into the database (fenced by the claim's epoch),
    so the run ends and ``submit --wait`` writes the results, with exact tokens; before,
    the rows waited for the next coordinator command on that host and the run never
    ended."""
    scripts = {f"j{i}": slow_answer(f"j{i}", 100 + i, 10 + i, 0.5) for i in range(2)}
    config = write_config(tmp_path, scripts)
    waiter = submit(tmp_path, config, pg_dsn, "fleet-j", wait=True)
    hosts.append(
        start_runner(
            tmp_path, "r0", pg_dsn, capacity=2, env={"COORDINATOR_DB_CLOSE_TIMEOUT": "0.001"}
        )
    )
    assert waiter.wait(timeout=90) == 0, (tmp_path / "submit-fleet-j.err").read_text()
    text = hosts[0].text()
    assert "journalled" in text and "replayed" in text, text
    rows = instance_rows(pg_dsn, "fleet-j")
    assert {n: r["status"] for n, r in rows.items()} == {"j0": "completed", "j1": "completed"}
    results = json.loads((tmp_path / "results-fleet-j.json").read_text())
    by_name = {i["name"]: i for i in results["instances"]}
    for i in range(2):
        assert (by_name[f"j{i}"]["input_tokens"], by_name[f"j{i}"]["output_tokens"]) == (
            100 + i,
            10 + i,
        )
    assert hosts[0].stop() == 0, hosts[0].text()
    assert not list((hosts[0].state / "journal").glob("*.jsonl"))
    assert alive_cmdlines(str(tmp_path)) == []
