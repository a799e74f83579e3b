"""``isolation: "worktree"``: each such instance works in a git worktree and branch of its
own (``coordinator/<run>/<name>``), made before launch. At the end its work is committed
to its branch, the worktree is kept or removed (``keep_worktrees``), and the results list
each branch's changed files and diffstat and which instances changed the same files (a
merge preview). git runs with argv lists, never a shell.

Worktrees live in the state directory (``<state>/worktrees/<run>/<name>``): a directory of
the coordinator's own, outside the repository's working tree."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator.errors import CoordinatorError
from coordinator.plan import PlannedInstance, RunPlan
from coordinator.pool.identity import PROJECT_ROOT

GIT_TIMEOUT_S = 60.0
AUTHOR = {"GIT_AUTHOR_NAME": "coordinator", "GIT_AUTHOR_EMAIL": "coordinator@localhost"}
COMMITTER = {"GIT_COMMITTER_NAME": "coordinator", "GIT_COMMITTER_EMAIL": "coordinator@localhost"}


class WorktreeError(CoordinatorError):
    exit_code = 2


@dataclass(frozen=True, slots=True)
class WorktreeSpec:
    source: Path  # the workspace the config gave
    repo: Path | None  # its repository's top level; None: not a git repository
    path: Path  # the worktree
    branch: str
    subdir: str  # the workspace inside the repository ("." at its top)


def branch_name(orchestration_id: str, name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "instance"
    return f"coordinator/{orchestration_id}/{safe}"


def _git(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise WorktreeError(f"git {args[0]} in {cwd}: {exc}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise WorktreeError(f"git {' '.join(args[:2])} in {cwd}: {last}")
    return done.stdout


def _toplevel(workspace: Path) -> Path | None:
    if not workspace.is_dir():
        return None
    try:
        return Path(_git(["rev-parse", "--show-toplevel"], workspace).strip()).resolve()
    except WorktreeError:
        return None


def resolve(plan: RunPlan, worktrees_dir: Path) -> RunPlan:
    """The plan with each worktree instance's workspace (and PROJECT_ROOT) in its worktree.
    A workspace that is no git repository keeps its place; ``refusal`` names it."""
    orch = plan.config.orchestration
    changed: list[PlannedInstance] = []
    for inst in plan.instances:
        isolation = plan.config.instances[inst.index].isolation or orch.isolation
        if isolation != "worktree":
            changed.append(inst)
            continue
        repo = _toplevel(inst.workspace)
        subdir = os.path.relpath(inst.workspace.resolve(), repo) if repo is not None else "."
        branch = branch_name(plan.orchestration_id, inst.name)
        path = worktrees_dir / plan.orchestration_id / branch.rsplit("/", 1)[-1]
        spec = WorktreeSpec(inst.workspace, repo, path, branch, subdir)
        if repo is None:
            changed.append(dataclasses.replace(inst, worktree=spec))
            continue
        workspace = (path / subdir) if subdir != "." else path
        identity = {**inst.identity, PROJECT_ROOT: str(workspace)}
        changed.append(
            dataclasses.replace(inst, worktree=spec, workspace=workspace, identity=identity)
        )
    return dataclasses.replace(plan, instances=tuple(changed))


def refusal(plan: RunPlan) -> str | None:
    for inst in plan.instances:
        spec = inst.worktree
        if spec is not None and spec.repo is None:
            return (
                f"instance {inst.name}: isolation worktree needs a git repository, and "
                f"{spec.source} is not in one (git init it, or use isolation shared)"
            )
    return None


@dataclass(frozen=True, slots=True)
class Made:
    name: str
    spec: WorktreeSpec
    base: str  # the commit it started from


def create(plan: RunPlan) -> list[Made]:
    """Every worktree of the plan, before launch (one that exists, from an earlier attempt
    of the same run, is used again)."""
    made: list[Made] = []
    for inst in plan.instances:
        spec = inst.worktree
        if spec is None or spec.repo is None:
            continue
        head = _git(["rev-parse", "HEAD"], spec.repo).strip()
        if spec.path.is_dir():
            base = _git(["merge-base", head, spec.branch], spec.repo).strip()
        else:
            spec.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _git(["worktree", "add", "-b", spec.branch, str(spec.path), head], spec.repo)
            base = head
        made.append(Made(inst.name, spec, base))
    return made


def finish(made: list[Made], *, keep: bool) -> dict[str, Any]:
    """Commit each instance's work to its branch, keep or remove its worktree; the results'
    ``worktrees`` section."""
    branches: list[dict[str, Any]] = []
    touched: dict[str, list[str]] = {}
    for one in made:
        entry: dict[str, Any] = {"instance": one.name, "branch": one.spec.branch}
        try:
            entry.update(_finish_one(one, keep=keep))
        except WorktreeError as exc:
            entry["error"] = str(exc)
        for path in entry.get("files", []):
            touched.setdefault(path, []).append(one.name)
        branches.append(entry)
    overlaps = {path: names for path, names in sorted(touched.items()) if len(names) > 1}
    return {"branches": branches, "merge_preview": {"same_files": overlaps}}


def _finish_one(one: Made, *, keep: bool) -> dict[str, Any]:
    spec = one.spec
    work = spec.path
    _git(["add", "-A"], work)
    if _git(["status", "--porcelain"], work).strip():
        who = {} if _git_has_identity(work) else {**AUTHOR, **COMMITTER}
        _git(["commit", "-q", "-m", f"coordinator: work of {one.name}"], work, env=who)
    numstat = _git(["diff", "--numstat", f"{one.base}..{spec.branch}"], spec.repo or work)
    files: list[str] = []
    added = deleted = 0
    for line in numstat.splitlines():
        plus, minus, path = line.split("\t", 2)
        files.append(path)
        added += int(plus) if plus.isdigit() else 0
        deleted += int(minus) if minus.isdigit() else 0
    kept = keep
    if not keep:
        _git(["worktree", "remove", "--force", str(work)], spec.repo or work)
    return {
        "path": str(work),
        "kept": kept,
        "base": one.base,
        "files": files,
        "diffstat": {"files": len(files), "insertions": added, "deletions": deleted},
    }


def _git_has_identity(work: Path) -> bool:
    try:
        return bool(_git(["config", "user.email"], work).strip())
    except WorktreeError:
        return False
