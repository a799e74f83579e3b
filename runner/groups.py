"""Is a process group still alive? Its zombies do not count.

``killpg(pgid, 0)`` succeeds while any member exists, zombies included. A process whose
parent died is re-parented to PID 1 (or a subreaper), and not every PID 1 reaps: in a
container whose init is the program itself, the killed helpers of an instance stay zombies
for good, and a group made only of them would look alive forever. So when the signal finds
the group, its members are looked at: alive means one of them is not a zombie.
"""

from __future__ import annotations

import contextlib
import os

import psutil


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
    return False
