"""Can the user who runs write everywhere a run will write? Asked before anything launches.

Each check does what the run will do: create (and remove) a temporary file beside the
results, the log file, in the state directory and in every workspace. Permission bits alone
would lie: root passes them, and a read-only mount, ``/proc`` or a path under a regular file
refuse everyone. Every refusal is one :class:`PreflightError` line naming the path and the
OS's reason.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from coordinator.errors import ConfigError, PreflightError
from coordinator.plan import RunPlan

_PROBE_PREFIX = ".coordinator-preflight-"


def writable_dir(path: Path, what: str, *, create: bool = False, hint: str = "") -> None:
    """``path`` is (or, with ``create``, becomes) a directory this user can write in."""
    if create:
        _make(path, f"{what} {path}", hint)
    if not path.is_dir():
        problem = "is not a directory" if path.exists() else "does not exist"
        raise PreflightError(f"{what} {path} {problem}{hint}")
    _probe(path, f"{what} {path}", hint)


def writable_file(path: Path, what: str, *, hint: str = "") -> None:
    """A file can be written (or atomically replaced) at ``path``: its directory exists or can
    be created, takes a new file, and ``path`` itself is not a directory."""
    if path.is_dir():
        raise PreflightError(f"{what} {path} is a directory, not a file{hint}")
    _make(path.parent, f"{what} {path}", hint)
    _probe(path.parent, f"{what} {path}", hint)


def verify_executables(plan: RunPlan, environ: Mapping[str, str]) -> None:
    """Every instance's verify command can be started: its executable exists and may be
    executed (a bare name is looked up on the PATH it will run with). One ConfigError line
    naming the field otherwise, found before launching (dry-run included)."""
    for inst in plan.instances:
        verify = inst.measure.verify
        if verify is None:
            continue
        program = verify.argv[0]
        env = {**environ, **inst.env, **verify.env}
        if "/" in program:
            found = program if os.path.isfile(program) and os.access(program, os.X_OK) else None
        else:
            found = shutil.which(program, path=env.get("PATH", os.defpath))
        if found is None:
            where = "" if "/" in program else " on PATH"
            raise ConfigError(
                plan.config_source,
                f"{verify.field}.argv[0]",
                program,
                f"verify executable not found{where} (or not executable)",
            )


def _make(directory: Path, label: str, hint: str) -> None:
    blocker = next((p for p in (directory, *directory.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise PreflightError(f"{label}: {blocker} is not a directory{hint}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PreflightError(f"{label}: cannot create {directory}: {_why(exc)}{hint}") from None


def _probe(directory: Path, label: str, hint: str) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=_PROBE_PREFIX, dir=directory)
    except OSError as exc:
        raise PreflightError(f"{label}: cannot write there: {_why(exc)}{hint}") from None
    os.close(fd)
    os.unlink(tmp)


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
