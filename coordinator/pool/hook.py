"""The PreToolUse hook claude runs before each write of an instance in ``pool.conflicts:
block`` mode: ``python -I -S .../coordinator/pool/hook.py --instance NAME`` (the
coordinator passes it with ``--settings``; ``python -m coordinator.pool.hook`` works
alike). It reads the hook's JSON on stdin, asks the coordinator that runs the instance (a
unix socket in a 0700 directory the coordinator made, named by ``COORDINATOR_POOL_SOCKET``)
who owns the path, and denies the write naming the owner.

Facts of the pinned CLI this relies on: coordinator/pool/CLI-FACTS.md. Standard library
only: it runs (a fresh Python) before every write. A coordinator it cannot reach allows
the write (the coordinator is gone or going: its instances are being stopped)."""

from __future__ import annotations

import json
import os
import shlex
import socket
import sys

SOCKET_ENV = "COORDINATOR_POOL_SOCKET"
PATH_KEYS = ("file_path", "notebook_path", "path")
TIMEOUT_S = 10.0


WRITE_MATCHER = "Write|Edit|MultiEdit|NotebookEdit"


def settings_for(instance: str, python: str | None = None) -> str:
    """The ``--settings`` JSON of an instance in block mode: this hook before each write.
    claude runs a hook's command with /bin/sh, so the argv is quoted into it."""
    # this file run as a script with -I -S (isolated, no site: its folder is not on
    # sys.path, and the stdlib is all it needs): the fresh Python before every write
    # starts in tens of milliseconds so, against ~200 ms through site
    script = os.path.abspath(__file__)
    command = shlex.join([python or sys.executable, "-I", "-S", script, "--instance", instance])
    hook = {"type": "command", "command": command, "timeout": 30}
    return json.dumps({"hooks": {"PreToolUse": [{"matcher": WRITE_MATCHER, "hooks": [hook]}]}})


def ask(socket_path: str, request: dict[str, str]) -> dict[str, object] | None:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT_S)
            sock.connect(socket_path)
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        answer = json.loads(data)
        return answer if isinstance(answer, dict) else None
    except (OSError, ValueError):
        return None


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "--instance":
        sys.stderr.write("usage: hook.py --instance NAME\n")
        return 1  # a non-blocking hook error: the write goes on
    instance = argv[1]
    try:
        event = json.loads(sys.stdin.read())
    except ValueError:
        return 0
    tool_input = event.get("tool_input") if isinstance(event, dict) else None
    if not isinstance(tool_input, dict):
        return 0
    path = next((v for k in PATH_KEYS if isinstance(v := tool_input.get(k), str) and v), None)
    socket_path = os.environ.get(SOCKET_ENV)
    if path is None or not socket_path:
        return 0
    cwd = event.get("cwd") if isinstance(event.get("cwd"), str) else os.getcwd()
    full = os.path.normpath(os.path.join(str(cwd), os.path.expanduser(path)))
    answer = ask(socket_path, {"instance": instance, "path": full})
    if answer is None:
        sys.stderr.write("coordinator pool: coordinator not reachable, write allowed\n")
        return 0
    if answer.get("allow", True):
        return 0
    decision = {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "deny",
            "permissionDecisionReason": str(answer.get("reason", "owned by another instance")),
        }
    }
    sys.stdout.write(json.dumps(decision) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
