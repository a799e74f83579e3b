"""``orchestration.isolate_config_dir``: each instance gets a claude config dir of its own
(``CLAUDE_CONFIG_DIR``: its transcripts, locks and state apart from the others') that still
authenticates.

An API key in the environment works anywhere. A ``claude login`` lives in the user's config
dir; the pinned CLI (2.1.x) reads it from ``$CLAUDE_CONFIG_DIR/.credentials.json`` and
``$CLAUDE_CONFIG_DIR/.claude.json`` when that is set, else ``~/.claude/.credentials.json``
and ``~/.claude.json``. Those (and ``settings.json``) are copied, 0600, into a 0700
directory the coordinator creates in the temp dir; the user's ``commands``, ``skills`` and
``agents`` are linked, so user-scope slash commands still resolve. The directory is
removed when the instance ends.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

CREDENTIALS = ".credentials.json"
GLOBAL_CONFIG = ".claude.json"
COPIED = (CREDENTIALS, "settings.json")
LINKED = ("commands", "skills", "agents")


def user_config(env: Mapping[str, str]) -> tuple[Path, Path]:
    """(the user's config dir, the user's global config file), as the CLI would read them
    with this environment."""
    configured = env.get("CLAUDE_CONFIG_DIR")
    if configured:
        base = Path(configured).expanduser()
        return base, base / GLOBAL_CONFIG
    home = Path(env.get("HOME") or Path.home())
    return home / ".claude", home / GLOBAL_CONFIG


def create_config_dir(env: Mapping[str, str], name: str) -> Path:
    """A fresh config dir for instance ``name`` with the user's login in it."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:40]
    target = Path(tempfile.mkdtemp(prefix=f"coordinator-claude-{safe}-"))  # 0700
    try:
        source, global_config = user_config(env)
        for file in COPIED:
            _copy_private(source / file, target / file)
        _copy_private(global_config, target / GLOBAL_CONFIG)
        for folder in LINKED:
            if (source / folder).is_dir():
                (target / folder).symlink_to(source / folder, target_is_directory=True)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def remove_config_dir(path: Path | None) -> None:
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def _copy_private(source: Path, target: Path) -> None:
    try:
        data = source.read_bytes()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
