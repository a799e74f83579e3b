"""What measuring memory costs on the engine's tick: the orchestrator already scans the
process table once a second for every instance's descendants; measuring adds reading the
resident memory of each instance's tree (its leader and descendants) in the same pass.

    python -m bench.measure_sampling [--instances 10] [--children 3] [--ticks 200]

Starts ``--instances`` process trees shaped like an instance (a leader in its own session
with ``--children`` tool processes under it), then times ``--ticks`` ticks of the scan alone
(``descendants_by_leader``) and of the scan with memory (the engine's ``scan_trees``), in
CPU time of this process, interleaved. Prints CPU ms per tick, the added cost per instance
per tick, and that cost as a share of one core at one tick per second.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from coordinator.engine.orchestrator import scan_trees
from runner.process import descendants_by_leader

LEADER = (
    "import subprocess, sys, time\n"
    "kids = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])"
    " for _ in range(int(sys.argv[1]))]\n"
    "time.sleep(600)\n"
)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--children", type=int, default=3)
    parser.add_argument("--ticks", type=int, default=200)
    args = parser.parse_args()
    leaders = [
        subprocess.Popen([sys.executable, "-c", LEADER, str(args.children)], start_new_session=True)
        for _ in range(args.instances)
    ]
    try:
        pids = {p.pid for p in leaders}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # every tool process started
            found = descendants_by_leader(pids)
            if all(len(found[p]) >= args.children for p in pids):
                break
            time.sleep(0.05)
        scan = with_rss = 0.0
        for _ in range(args.ticks):
            t0 = time.process_time()
            descendants_by_leader(pids)
            t1 = time.process_time()
            _found, rss = scan_trees(pids)
            t2 = time.process_time()
            scan += t1 - t0
            with_rss += t2 - t1
        assert all(v is not None and v > 0 for v in rss.values())
        per_tick = (with_rss - scan) / args.ticks
        print(
            f"{args.instances} instances x {1 + args.children} processes, {args.ticks} ticks: "
            f"scan {1000 * scan / args.ticks:.2f} CPU-ms/tick, scan + memory "
            f"{1000 * with_rss / args.ticks:.2f} CPU-ms/tick; memory adds "
            f"{1000 * per_tick:.2f} ms/tick = {1000 * per_tick / args.instances:.3f} ms per "
            f"instance = {100 * per_tick:.3f}% of a core at 1 tick/s"
        )
    finally:
        for proc in leaders:
            import os
            import signal

            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
