"""The command line as a new user (or a hostile environment) meets it: a real subprocess of
the real entry point, a claude stand-in that leaves a mark if it is ever launched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
REPLAY = str(ROOT / "scripts" / "replay-claude")
ISOLATING = ("COORDINATOR_", "DATABASE_URL", "XDG_STATE_HOME")


@dataclass
class Sandbox:
    """A directory with a config, a claude stand-in and a private state directory."""

    root: Path

    @property
    def marker(self) -> Path:
        return self.root / "launched"

    def config(self, data: Any, name: str = "config.json") -> Path:
        path = self.root / name
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        return path

    def env(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(ISOLATING)}
        script = self.root / "replay.json"
        script.write_text(json.dumps([{"marker": str(self.marker)}]))
        return {
            **base,
            "NO_COLOR": "1",
            "COLUMNS": "200",
            "REPLAY_SCRIPT": str(script),
            "COORDINATOR_STATE_DIR": str(self.root / "state"),
            "COORDINATOR_CLAUDE_BIN": REPLAY,
            **extra,
        }

    def run(
        self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "coordinator.cli", *args],
            cwd=cwd or self.root,
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env() if env is None else env,
            stdin=subprocess.DEVNULL,
            check=False,
        )


def assert_refused(out: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit 2, exactly one line on stderr holding every fragment, no traceback."""
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert len(lines) == 1, out.stderr[-2000:]
    assert "Traceback" not in out.stderr + out.stdout
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
