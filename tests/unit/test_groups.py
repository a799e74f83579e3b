"""runner.groups: a group of zombies is not alive (real processes, no fakes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from runner.groups import group_alive


def test_a_live_group_is_alive_and_a_group_of_one_zombie_is_not() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        assert group_alive(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _state(proc.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.02)  # the kernel makes it a zombie; we have not reaped it yet
        assert _state(proc.pid) == "Z"
        assert not group_alive(proc.pid)  # killpg(pgid, 0) still finds it
    finally:
        proc.kill()
        proc.wait()
    assert not group_alive(proc.pid)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]
