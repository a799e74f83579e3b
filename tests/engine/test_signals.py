"""Real processes, real signals: Ctrl-C, SIGTERM and a killed coordinator leave nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.engine.helpers import REPLAY, alive_cmdlines, sleeper
from tests.faults.harness import wait_for, write_config

COORDINATOR = [sys.executable, "-m", "coordinator.cli"]


def launch(
    tmp_path: Path,
    scripts: dict[str, list[dict[str, Any]]],
    orchestration: dict[str, Any],
) -> tuple[subprocess.Popen[bytes], Path]:
    """``coordinator run`` as a subprocess (own session) over replay instances."""
    config = write_config(tmp_path, scripts, orchestration)
    output = tmp_path / "results.json"
    proc = subprocess.Popen(
        [
            *COORDINATOR,
            "run",
            "--config",
            str(config),
            "--claude-bin",
            REPLAY,
            "--no-db",
            "--output",
            str(output),
            "--workspace",
            str(tmp_path),
            "--status-report-interval",
            "0.5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "NO_COLOR": "1"},
    )
    return proc, output


def start(
    tmp_path: Path, names: list[str], startup_delay: float, tag: str
) -> tuple[subprocess.Popen[bytes], Path, list[Path]]:
    markers = [tmp_path / f"{n}.started" for n in names]
    scripts: dict[str, list[dict[str, Any]]] = {
        name: [
            {"spawn": sleeper(tag)},
            {"spawn": sleeper(tag), "new_session": True},
            {"marker": str(marker)},
            {"sleep": 600},
        ]
        for name, marker in zip(names, markers, strict=True)
    }
    proc, output = launch(tmp_path, scripts, {"startup_delay": startup_delay})
    return proc, output, markers


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_stops_every_instance_and_writes_results(tmp_path: Path, sig: int) -> None:
    tag = uuid.uuid4().hex
    proc, output, markers = start(tmp_path, ["a", "b", "c"], 0.0, tag)
    try:
        wait_for(lambda: all(m.exists() for m in markers), 30, "all instances to start")
        wait_for(lambda: len(alive_cmdlines(tag)) == 6, 10, "every grandchild to run")
        sent = time.monotonic()
        proc.send_signal(sig)
        code = proc.wait(timeout=15)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == 130, proc.stdout.read().decode() if proc.stdout else ""
    assert elapsed < 5.0, f"stopping took {elapsed:.1f}s"
    results = json.loads(output.read_text())
    assert [i["status"] for i in results["instances"]] == ["cancelled"] * 3
    assert results["interrupted"] is True
    assert alive_cmdlines(tag) == []


def test_ctrl_c_during_the_stagger_launches_nothing_more(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    proc, output, markers = start(tmp_path, ["first", "second", "third"], 60.0, tag)
    try:
        wait_for(markers[0].exists, 30, "the first instance to start")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    results = json.loads(output.read_text())
    statuses = {i["name"]: (i["status"], i["pid"]) for i in results["instances"]}
    assert statuses["first"][0] == "cancelled" and statuses["first"][1] is not None
    assert statuses["second"] == ("cancelled", None)
    assert statuses["third"] == ("cancelled", None)
    assert not markers[1].exists()
    assert alive_cmdlines(tag) == []


def test_killed_coordinator_leaves_no_orphans(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    proc, _output, markers = start(tmp_path, ["a", "b"], 0.0, tag)
    try:
        wait_for(lambda: all(m.exists() for m in markers), 30, "instances to start")
        wait_for(lambda: len(alive_cmdlines(tag)) == 4, 10, "every grandchild to run")
        proc.kill()  # SIGKILL: no handler runs; the guardian must reap
        proc.wait(timeout=10)
        wait_for(lambda: alive_cmdlines(tag) == [], 10, "the guardian to reap every instance")
        wait_for(lambda: alive_cmdlines(str(tmp_path)) == [], 10, "the replays to be reaped")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _statuses(tag: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if tag in " ".join(proc.info["cmdline"] or []):
            found.append(proc.info["status"])
    return found


def test_ctrl_c_while_paused_at_a_barrier_stops_the_stopped_group(tmp_path: Path) -> None:
    """Milestone sync: ``fast`` reaches 30% and its whole group (with a tool's grandchild)
    is SIGSTOPped to wait for ``slow``, which never gets there. Ctrl-C then still stops
    everything within 5 s (a stopped process gets SIGCONT with the SIGTERM)."""
    tag = uuid.uuid4().hex
    progress = {
        "type": "assistant",
        "message": {
            "id": "m1",
            "role": "assistant",
            "content": [{"type": "text", "text": "PROGRESS: 30%"}],
            "usage": {"input_tokens": 1, "output_tokens": 1},
        },
    }
    scripts: dict[str, list[dict[str, Any]]] = {
        "fast": [{"spawn": sleeper(f"{tag}-fast")}, {"lines": [progress]}, {"sleep": 600}],
        "slow": [{"spawn": sleeper(f"{tag}-slow")}, {"sleep": 600}],
    }
    proc, output = launch(
        tmp_path,
        scripts,
        {"startup_delay": 0, "sync": {"mode": "milestone", "timeout_s": 600}},
    )
    try:
        wait_for(lambda: _statuses(f"{tag}-fast") == ["stopped"], 30, "fast's group to pause")
        assert _statuses(f"{tag}-slow") != ["stopped"]  # the slow one keeps working
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=15)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == 130
    assert elapsed < 5.0, f"stopping took {elapsed:.1f}s"
    results = json.loads(output.read_text())
    by = {i["name"]: i for i in results["instances"]}
    assert by["fast"]["status"] == "cancelled" and by["slow"]["status"] == "cancelled"
    assert by["fast"]["wait_s"] > 0 and by["slow"]["wait_s"] == 0
    assert results["sync"]["points"][0]["point"] == "milestone:30"
    assert results["sync"]["points"][0]["arrived"] == ["fast"]
    assert alive_cmdlines(tag) == []
