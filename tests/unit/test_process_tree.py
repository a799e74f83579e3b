"""runner.process: ProcessTree.snapshot finds every descendant of a leader, also a grandchild
forked by a thread other than the leader's main one (the kernel lists a child under the
thread that forked it), the same set psutil's pass over the whole table finds; concurrent
reaps share their passes over /proc. Real processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from runner.process import CHILDREN_LISTS, ProcessTree, descendants_by_leader

# The leader: a child from its main thread, one from another thread that stays alive (each
# a shell that starts a sleep of its own), then it says how many it started and waits.
LEADER = """
import subprocess, sys, threading
kids, done = [], threading.Event()
def start(stay):
    kids.append(subprocess.Popen(["sh", "-c", "sleep 60 & wait"]))
    if stay:  # the thread lives on: its child stays listed under it, not the main one
        done.wait()
start(False)
threading.Thread(target=start, args=(True,), daemon=True).start()
while len(kids) < 2:
    pass
print(len(kids), flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(not CHILDREN_LISTS, reason="this kernel keeps no per-thread children lists")
def test_the_snapshot_finds_every_descendant_also_those_forked_by_another_thread(
    tmp_path: Path,
) -> None:
    leader = subprocess.Popen(
        [sys.executable, "-c", LEADER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert leader.stdout is not None and leader.stdout.readline().strip() == b"2"
        want: set[int] = set()
        deadline = time.monotonic() + 10
        while len(want) < 4:  # two shells, each with its sleep (forked, not yet seen)
            want = {p.pid for p in psutil.Process(leader.pid).children(recursive=True)}
            assert time.monotonic() < deadline, f"the leader's tree never filled: {want}"
            time.sleep(0.01)  # polling foreign processes: nothing to wait on
        tree = ProcessTree(leader.pid)
        found = {ident.pid for ident in tree.snapshot()}
        assert found == want
        [(leader_pid, walked)] = descendants_by_leader({leader.pid}).items()
        assert leader_pid == leader.pid and {i.pid for i in walked} == want
        for ident in tree.seen:
            assert ident.create_time == psutil.Process(ident.pid).create_time()
    finally:
        for kid in psutil.Process(leader.pid).children(recursive=True):
            kid.kill()
        leader.kill()
        leader.wait()


def test_concurrent_reaps_share_their_passes_over_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Five finds at once, for three marked processes and two marks nobody carries: each
    gets its own process(es), the leader excluded where asked, and all of it takes two
    passes over /proc at most (the first asked, the rest batched), not five."""
    from runner import process

    marks = [process.new_mark() for _ in range(3)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"],
            stdin=subprocess.PIPE,
            env={**os.environ, process.MARK_ENV: mark},
        )
        for mark in marks
    ]
    passes: list[set[str]] = []
    real = process.processes_by_mark

    def counted(asked: set[str], exclude: tuple[int, ...] = ()) -> dict[str, list[psutil.Process]]:
        passes.append(set(asked))
        return real(asked, exclude)

    monkeypatch.setattr(process, "processes_by_mark", counted)

    async def find_all() -> list[list[int]]:
        scans = process.mark_scans()
        found = await asyncio.gather(
            scans.find(marks[0]),
            scans.find(marks[1]),
            scans.find(marks[2], exclude={procs[2].pid}),
            scans.find(process.new_mark()),
            scans.find(marks[0]),
        )
        return [sorted(p.pid for p in got) for got in found]

    try:
        got = asyncio.run(find_all())
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    assert got == [[procs[0].pid], [procs[1].pid], [], [], [procs[0].pid]]
    assert 1 <= len(passes) <= 2
    assert set().union(*passes) >= set(marks)
