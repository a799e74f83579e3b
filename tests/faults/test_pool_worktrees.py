"""``isolation: "worktree"``: the two real claude instances that conflict in one workspace
each get a git worktree and branch (real git) and so do not conflict; each branch carries
its own diff, the results list files, diffstat and the merge preview. A workspace that is
no git repository is one line and exit 2 (dry-run shows it)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.faults.test_pool import coordinator, run_offline


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@localhost", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout


def writes(content: str) -> dict[str, Any]:
    return {
        "tool_uses": [{"name": "Write", "input": {"file_path": "src/app.py", "content": content}}]
    }


SCRIPT = {
    "conversations": {
        "alpha": {"responses": [writes("alpha = 1\n"), {"text": "alpha wrote it"}]},
        "beta": {"responses": [writes("beta = 2\n"), {"text": "beta wrote it"}]},
    }
}


def config(orch_id: str, **orchestration: Any) -> dict[str, Any]:
    return {
        "orchestration": {
            "id": orch_id,
            "workspace": "repo",
            "startup_delay": 0,
            "isolation": "worktree",
            "pool": {"conflicts": "block"},
            **orchestration,
        },
        "instances": [
            {"name": "alpha", "command": "write the app", "allowed_tools": ["Write"]},
            {"name": "beta", "command": "write the app", "allowed_tools": ["Write"]},
        ],
    }


@pytest.mark.claude
@pytest.mark.parametrize("keep", [True, False])
def test_two_instances_in_worktrees_two_branches_no_conflict(tmp_path: Path, keep: bool) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README").write_text("hello\n")
    git(repo, "add", "README")
    git(repo, "commit", "-q", "-m", "start")
    orch_id = f"orch-wt-{'keep' if keep else 'drop'}"
    done, results = run_offline(
        tmp_path, config(orch_id, keep_worktrees=keep), SCRIPT, None, "--quiet"
    )
    assert done.returncode == 0, done.stderr
    assert results["pool"]["conflicts"] == []
    assert "conflict:" not in done.stderr + done.stdout
    assert not (repo / "src").exists()  # the main working tree is untouched
    section = results["worktrees"]
    by_name = {b["instance"]: b for b in section["branches"]}
    for name, content in (("alpha", "alpha = 1\n"), ("beta", "beta = 2\n")):
        branch = by_name[name]
        assert branch["branch"] == f"coordinator/{orch_id}/{name}"
        assert branch["files"] == ["src/app.py"]
        assert branch["diffstat"] == {"files": 1, "insertions": 1, "deletions": 0}
        assert git(repo, "show", f"{branch['branch']}:src/app.py") == content  # its own diff
        assert Path(branch["path"]).is_dir() is keep
        assert branch["kept"] is keep
    listed = git(
        repo, "branch", "--list", "--format=%(refname:short)", f"coordinator/{orch_id}/*"
    ).split()
    assert sorted(listed) == [f"coordinator/{orch_id}/alpha", f"coordinator/{orch_id}/beta"]
    assert section["merge_preview"] == {"same_files": {"src/app.py": ["alpha", "beta"]}}


def test_a_workspace_that_is_no_git_repository_is_refused(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()  # no git init
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config("orch-wt-nogit")))
    done = coordinator(tmp_path, ["run", "--config", str(path), "--no-db"], timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "isolation worktree needs a git repository" in lines[0]
    assert str((tmp_path / "repo").resolve()) in lines[0]
    dry = coordinator(tmp_path, ["run", "--dry-run", "--config", str(path)], timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert "worktree   branch coordinator/orch-wt-nogit/alpha of NOT A GIT REPOSITORY" in dry.stdout
    assert "isolation worktree needs a git repository" in dry.stdout + dry.stderr
