"""``coordinator run --fleet``: the one-host form of a fleet run, which runners on other
hosts join. The run's own process claims only its own instances; a runner elsewhere
claims them too (and, unlike the run's process, also a submitted run's); Ctrl-C of the
run's process stops every instance on every runner and still writes the results. Real
Postgres, real processes and signals, the replay stand-in."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.engine.helpers import alive_cmdlines
from tests.faults.harness import (
    coordinator,
    coordinator_env,
    wait_for,
    write_config,
)
from tests.faults.test_fleet import (
    LEASE_S,
    Host,
    hosts,
    instance_rows,
    run_argv,
    slow_answer,
    start_runner,
    submit,
)

pytestmark = [pytest.mark.postgres]
__all__ = ["hosts"]  # the fixture, shared with test_fleet


def run_fleet(
    tmp_path: Path, config: Path, dsn: str, orch_id: str, *extra: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *run_argv(["run", "--fleet"], tmp_path, config, dsn, orch_id),
            *extra,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=coordinator_env(tmp_path / "run-state", COORDINATOR_LEASE_S=LEASE_S),
    )


def test_runners_join_a_run_and_its_process_claims_only_its_own(
    tmp_path: Path, pg_dsn: str, hosts: list[Host]
) -> None:
    """``run --fleet --capacity 1`` of four instances, and a submitted run of one; one
    runner r1 (capacity 2). r1 runs some of the run's instances and the submitted one; the
    run's process runs the rest of its own and never the submitted one's; the run writes
    the results with exact tokens per instance and both runners listed; nothing is left."""
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = write_config(other_dir, {"o": slow_answer("o", 50, 5, 2.0)})
    queued = submit(other_dir, other, pg_dsn, "other")
    assert queued.wait(timeout=60) == 0, (other_dir / "submit-other.err").read_text()
    scripts = {f"h{i}": slow_answer(f"h{i}", 120 + i, 12 + i, 2.5) for i in range(4)}
    config = write_config(tmp_path, scripts)
    run = run_fleet(tmp_path, config, pg_dsn, "hosted-a", "--capacity", "1", "--json")
    hosts.append(start_runner(tmp_path, "r1", pg_dsn, capacity=2))
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    assert "runners on other hosts join" in err  # --json: the lines on stderr
    results = json.loads((tmp_path / "results-hosted-a.json").read_text())
    assert json.loads(out) == results  # and the document on stdout, as `run --json` does
    by_name = {i["name"]: i for i in results["instances"]}
    for i in range(4):
        inst = by_name[f"h{i}"]
        assert inst["status"] == "completed", inst
        assert (inst["input_tokens"], inst["output_tokens"]) == (120 + i, 12 + i)
    ran_on = {r["runner"] for r in instance_rows(pg_dsn, "hosted-a").values()}
    own = next(r["name"] for r in results["runners"] if r["name"] != "r1")
    assert ran_on == {"r1", own}, ran_on  # both ran some of them
    wait_for(lambda: instance_rows(pg_dsn, "other")["o"]["status"] == "completed", 60, "o to end")
    assert instance_rows(pg_dsn, "other")["o"]["runner"] == "r1"  # never the run's process
    report = coordinator(["report", "hosted-a", "--json", "--database-url", pg_dsn], tmp_path)
    assert report.returncode == 0, report.stderr  # the comparison, kept as a run's is
    shown = json.loads(report.stdout)
    assert shown["comparison"]["orchestration_id"] == "hosted-a", report.stdout
    assert shown["comparison"]["scenarios"], report.stdout
    assert hosts[0].stop() == 0, hosts[0].text()
    assert alive_cmdlines(str(tmp_path)) == []


def test_ctrl_c_of_the_run_stops_every_instance_on_every_runner(
    tmp_path: Path, pg_dsn: str, hosts: list[Host]
) -> None:
    """Two long instances, one on the run's process and one on runner r1: SIGINT to the
    run's process stops both (the one on r1 too), the results are written with both
    cancelled, exit 130, and nothing is left."""
    scripts = {n: slow_answer(n, 100, 10, 60.0) for n in ("a", "b")}
    config = write_config(tmp_path, scripts)
    run = run_fleet(tmp_path, config, pg_dsn, "hosted-c", "--capacity", "1")
    hosts.append(start_runner(tmp_path, "r1", pg_dsn, capacity=1))

    def both_running() -> bool:
        found = instance_rows(pg_dsn, "hosted-c")
        return len(found) == 2 and all(r["status"] == "running" for r in found.values())

    wait_for(both_running, 60, "a and b to run")
    runners = {r["runner"] for r in instance_rows(pg_dsn, "hosted-c").values()}
    assert "r1" in runners and len(runners) == 2
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert "SIGINT: stopping every instance, on every runner" in out
    results = json.loads((tmp_path / "results-hosted-c.json").read_text())
    assert {i["name"]: i["status"] for i in results["instances"]} == {
        "a": "cancelled",
        "b": "cancelled",
    }
    assert hosts[0].stop() == 0, hosts[0].text()
    assert alive_cmdlines(str(tmp_path)) == []
