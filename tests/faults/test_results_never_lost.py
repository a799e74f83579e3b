"""The results of a night's run are never lost: a results path that cannot be written at
the end (disk full) falls back to the state directory, said in one line; ``run --json``
prints exactly one JSON document (the results) on stdout."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import answer, start_run


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real filesystem with no space left (a 64 KiB tmpfs, filled)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill needs root (CI runs as root)")
    mount = tmp_path / "full"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        with pytest.raises(OSError):
            while True:
                os.write(fd, b"x" * 4096)
        os.close(fd)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_results_that_cannot_be_written_go_to_the_state_directory(
    tmp_path: Path, full_disk: Path
) -> None:
    run = start_run(
        tmp_path,
        {f"i{n}": [{"lines": answer(f"m{n}", 1000, 200)}] for n in range(4)},
        args=["--no-db", "--output", str(full_disk / "results.json")],
    )
    code = run.wait(timeout=60)
    output = run.stdout + run.stderr
    assert code == 0, output
    assert not (full_disk / "results.json").exists()
    fallback = run.state_dir / "results" / "results.json"
    assert f"written to {fallback} instead" in output.replace("\n", " "), output
    results = json.loads(fallback.read_text())
    assert [i["status"] for i in results["instances"]] == ["completed"] * 4
    assert results["totals"]["total_tokens"] == 4 * 1200
    assert "Traceback" not in output


def test_run_json_prints_one_json_document_on_stdout(tmp_path: Path) -> None:
    run = start_run(
        tmp_path,
        {"a": [{"lines": answer("m1", 10, 5)}], "b": [{"lines": answer("m2", 3, 2)}]},
        args=["--no-db", "--json"],
    )
    assert run.wait(timeout=60) == 0, run.stderr
    printed = json.loads(run.stdout)  # the whole of stdout is one document
    assert printed == run.results()
    assert printed["totals"]["total_tokens"] == 20
    assert "results:" in run.stderr  # the summary and the report went to stderr
