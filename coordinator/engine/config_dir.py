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

A run with a database keeps it instead (``keep_in``: under the state directory, one per
orchestration and instance) until the instance completes: its session's transcript lives
there, and ``coordinator resume`` (a later attempt, in another process) continues it.
"""

from __future__ import annotations

import hashlib
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


def create_config_dir(env: Mapping[str, str], name: str, keep_in: Path | None = None) -> Path:
    """A config dir for instance ``name`` with the user's login in it: fresh in the temp
    dir, or (``keep_in``) the one an earlier attempt of the instance left there, if any,
    with the login copied again (it may have been renewed since)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:40]
    fresh = True
    if keep_in is None:
        target = Path(tempfile.mkdtemp(prefix=f"coordinator-claude-{safe}-"))  # 0700
    else:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]  # two names, one safe form
        target = keep_in / f"{safe}-{digest}"
        keep_in.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            target.mkdir(mode=0o700)
        except FileExistsError:
            fresh = False
    try:
        source, global_config = user_config(env)
        for file in COPIED:
            _copy_private(source / file, target / file)
        if fresh or not (target / GLOBAL_CONFIG).exists():  # claude keeps state in it
            _copy_private(global_config, target / GLOBAL_CONFIG)
        for folder in LINKED:
            link = target / folder
            if (source / folder).is_dir() and not link.is_symlink():
                link.symlink_to(source / folder, target_is_directory=True)
    except BaseException:
        if fresh:
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
    target.unlink(missing_ok=True)  # a kept dir's old copy: replaced, never written through
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
