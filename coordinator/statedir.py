"""Where the coordinator keeps its local state: the embedded server's data, logs, the
journal of rows a run could not write. ``$COORDINATOR_STATE_DIR``, else the user state
directory (``~/.local/state/coordinator``)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

STATE_DIR_ENV = "COORDINATOR_STATE_DIR"


def default_state_dir() -> Path:
    override = os.environ.get(STATE_DIR_ENV)
    if override:
        return Path(override).expanduser()
    return platformdirs.user_state_path("coordinator")
