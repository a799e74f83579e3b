"""`coordinator report` as a user runs it (a real process): from a results file, from real
Postgres (a finished run, and one still going read from its rows, before and after the
measures column exists), --compare, --html, and every bad input as one line and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from coordinator.db.postgres import PostgresStore, create_pool
from coordinator.db.rows import CheckpointRow, InstanceRow, OrchestrationRow
from coordinator.report.compare import compare
from coordinator.report.facts import facts_from_results
from coordinator.report.html import render_html
from coordinator.report.section import comparison_section
from tests.report.samples import EVIL, run_doc


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coordinator.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
        stdin=subprocess.DEVNULL,
        check=False,
    )


def write(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_from_a_results_file_the_numbers_are_the_instances_own(tmp_path: Path) -> None:
    doc = run_doc()
    out = cli("report", "--results", str(write(tmp_path / "r.json", doc)), "--json")
    assert out.returncode == 0, out.stderr
    comp = json.loads(out.stdout)["comparison"]
    by = {s["name"]: s for s in comp["scenarios"]}
    for inst in doc["instances"]:
        s = by[inst["scenario"]["difficulty"]]
        assert s["tokens"] == inst["total_tokens"]
        assert s["cost_usd"] == pytest.approx(inst["total_cost_usd"])
        assert s["time_s"] == pytest.approx(inst["duration_s"] - inst["wait_s"])
        assert s["wait_s"] == pytest.approx(inst["wait_s"])
        assert s["tool_calls"] == sum(inst["tool_calls"].values())
        assert s["peak_mb"] == inst["measures"]["memory"]["peak_mb"]
        assert s["quality"] == inst["measures"]["quality"]["score"]
        assert s["met"] == inst["measures"]["quality"]["met"]
    assert [s["name"] for s in comp["scenarios"]] == ["simple", "medium", "complex"]
    assert comp["quality"]["missed"] == ["complex"]
    kinds = {r["kind"]: r for r in comp["recommendations"]}
    assert kinds["missed_expectation"]["scenario"] == "complex"
    assert "5 of 8 tests passed" in kinds["missed_expectation"]["reason"]
    assert kinds["best_value"]["scenario"] == "simple"
    assert comp["scaling"]["x"] == "complexity_multiplier"
    assert comp["scaling"]["tokens"]["words"] == "superlinear"

    table = cli("report", "--results", str(tmp_path / "r.json"))
    assert table.returncode == 0, table.stderr
    text = table.stdout
    assert "12,345" in text and "45,678" in text and "234,567" in text
    assert "best tier for the money: simple" in text
    assert "complex missed its expected quality" in text
    assert "tokens vs complexity: exponent" in text


def test_measures_absent_show_as_na(tmp_path: Path) -> None:
    doc = run_doc()
    for inst in doc["instances"]:
        del inst["measures"]
    out = cli("report", "--results", str(write(tmp_path / "r.json", doc)))
    assert out.returncode == 0, out.stderr
    simple = next(line for line in out.stdout.splitlines() if line.startswith("simple"))
    assert simple.split()[-4:] == ["n/a", "n/a", "0.90", "n/a"]  # peak, quality, expected, met
    assert "no quality measured" in out.stdout


def test_compare_two_result_files_side_by_side(tmp_path: Path) -> None:
    before = run_doc("orch-before")
    after = run_doc("orch-after")
    after["instances"][2]["total_tokens"] = 200_000
    after["instances"][2]["measures"]["quality"].update(score=0.875, met=True)
    a = write(tmp_path / "a.json", before)
    b = write(tmp_path / "b.json", after)
    out = cli("report", "--results", str(a), "--compare", str(b), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["a"]["orchestration_id"] == "orch-before"
    assert doc["b"]["orchestration_id"] == "orch-after"
    complex_ = next(d for d in doc["deltas"] if d["scenario"] == "complex")
    assert complex_["tokens_per_item"] == {"a": 234_567, "b": 200_000, "delta": -34_567}
    assert complex_["quality"]["delta"] == pytest.approx(0.25)
    assert complex_["met"] == {"a": False, "b": True}
    table = cli("report", "--results", str(a), "--compare", str(b))
    assert table.returncode == 0, table.stderr
    assert "234,567 → 200,000" in table.stdout and "-34,567 (-15%)" in table.stdout
    assert "NO → yes" in table.stdout


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "No such file or directory"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a results document"),
        (
            b'{"orchestration_id": "x", "instances": [{"name": "a", "duration_s": "long"}]}',
            "instances[0].duration_s = 'long': not a number",
        ),
        (
            b'{"orchestration_id": "x", "instances": [{"name": "a", "started_at": "noon"}]}',
            "instances[0].started_at = 'noon': not an ISO 8601 time",
        ),
    ],
)
def test_bad_results_file_is_one_line_and_exit_2(
    tmp_path: Path, content: bytes | None, problem: str
) -> None:
    path = tmp_path / "r.json"
    if content is not None:
        path.write_bytes(content)
    out = cli("report", "--results", str(path))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and problem in out.stderr and str(path) in out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_an_id_and_a_results_file_together_is_refused(tmp_path: Path) -> None:
    out = cli("report", "some-id", "--results", str(write(tmp_path / "r.json", run_doc())))
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "not both" in out.stderr


def test_html_escapes_every_string_from_the_run() -> None:
    doc = run_doc(name0=EVIL)
    doc["instances"][0]["scenario"]["difficulty"] = "<b>simple</b>"
    doc["instances"][0]["description"] = "<iframe src=x>"
    run = facts_from_results(doc)
    page = render_html(run, compare(run))
    assert "PWNED" in page  # the name is in the page ...
    assert "<script>window.PWNED" not in page and "<img src=x" not in page  # ... never as markup
    assert "<b>simple</b>" not in page and "<iframe" not in page
    assert page.count("</script>") == page.count("<script")  # nothing closes a script early
    assert "&lt;/script&gt;&lt;script&gt;window.PWNED=1" in page  # shown as text in the table
    assert "<script src" not in page and "<link" not in page  # nothing loaded from elsewhere


# ------------------------------------------------------------------ from Postgres


async def _store(dsn: str) -> tuple[asyncpg.Pool, PostgresStore]:
    pool = await create_pool(dsn)
    return pool, PostgresStore(pool)


def _config_of(doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "instances": [
            {
                "name": i["name"],
                "command": "go",
                "scenario": i["scenario"],
                "description": i["description"],
            }
            for i in doc["instances"]
        ]
    }


async def _finished_run(store: PostgresStore, doc: dict[str, Any]) -> None:
    await store.create_orchestration(
        OrchestrationRow(doc["orchestration_id"], "running", "host-a", "free", _config_of(doc))
    )
    await store.finish_orchestration(
        doc["orchestration_id"], "completed", {**doc, "comparison": comparison_section(doc)}
    )


@pytest.mark.postgres
async def test_from_postgres_finished_run_and_its_comparison_column(
    pg_dsn: str, tmp_path: Path
) -> None:
    doc = run_doc("orch-pg-1")
    pool, store = await _store(pg_dsn)
    try:
        await _finished_run(store, doc)
        stored = await pool.fetchval(
            "SELECT comparison FROM orchestrations WHERE id = $1", "orch-pg-1"
        )
    finally:
        await pool.close()
    assert stored == comparison_section(doc)  # the column is the results' section
    out = cli("report", "--database-url", pg_dsn, "--json")  # the newest run by default
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["comparison"] == json.loads(
        json.dumps(compare(facts_from_results(doc)).as_dict())
    )
    by_id = cli("report", "orch-pg-1", "--database-url", pg_dsn)
    assert by_id.returncode == 0 and "234,567" in by_id.stdout

    file = write(tmp_path / "other.json", run_doc("orch-file"))
    both = cli("report", "orch-pg-1", "--compare", str(file), "--database-url", pg_dsn, "--json")
    assert both.returncode == 0, both.stderr
    assert json.loads(both.stdout)["b"]["orchestration_id"] == "orch-file"

    missing = cli("report", "no-such-run", "--database-url", pg_dsn)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "'no-such-run' not found" in missing.stderr
    cmp_missing = cli("report", "orch-pg-1", "--compare", "nope-2", "--database-url", pg_dsn)
    assert cmp_missing.returncode == 2 and "'nope-2' not found" in cmp_missing.stderr


@pytest.mark.postgres
async def test_from_postgres_empty_database_is_one_line(pg_dsn: str) -> None:
    out = cli("report", "--database-url", pg_dsn)
    assert out.returncode == 2 and "no orchestration recorded" in out.stderr
    assert out.stderr.count("\n") == 1


async def _running_run(store: PostgresStore, doc: dict[str, Any]) -> None:
    """A run still going: instance rows and checkpoints, no results yet."""
    orch_id = doc["orchestration_id"]
    await store.create_orchestration(
        OrchestrationRow(orch_id, "running", "host-a", "free", _config_of(doc))
    )
    t0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    rows, checkpoints = [], []
    for inst in doc["instances"]:
        start = t0 + timedelta(seconds=1)
        rows.append(
            InstanceRow(
                orch_id,
                inst["name"],
                "completed",
                total_tokens=inst["total_tokens"],
                cost_usd=inst["total_cost_usd"],
                tool_calls=inst["tool_calls"],
                wait_s=inst["wait_s"],
                progress_pct=100.0,
                started_at=start,
                ended_at=start + timedelta(seconds=inst["duration_s"]),
            )
        )
        for pct, label, frac in ((0, "started", 0.0), (50, "50%", 0.5), (100, "completed", 1.0)):
            checkpoints.append(
                CheckpointRow(
                    orch_id,
                    inst["name"],
                    label,
                    float(pct),
                    int((start.timestamp() + frac * inst["duration_s"]) * 1000),
                    metrics={
                        "total_tokens": int(frac * inst["total_tokens"]),
                        "cost_usd": frac * inst["total_cost_usd"],
                    },
                )
            )
    await store.upsert_instances(rows)
    await store.add_checkpoints(checkpoints)


@pytest.mark.postgres
async def test_from_postgres_rows_without_and_with_measures(pg_dsn: str) -> None:
    doc = run_doc("orch-pg-rows")
    pool, store = await _store(pg_dsn)
    try:
        await _running_run(store, doc)
        before = cli("report", "orch-pg-rows", "--database-url", pg_dsn, "--json")
        assert before.returncode == 0, before.stderr
        comp = json.loads(before.stdout)["comparison"]
        by = {s["name"]: s for s in comp["scenarios"]}
        assert by["complex"]["tokens"] == 234_567 and by["complex"]["peak_mb"] is None
        assert by["medium"]["time_s"] == pytest.approx(28 - 3)
        assert by["medium"]["expected_quality"] == 0.85  # from the config's scenario

        # the measures of an instance (migration 007), as the engine's snapshot writes them
        await pool.execute(
            "UPDATE instances SET measures = $1 WHERE orchestration_id = $2 AND name = $3",
            doc["instances"][2]["measures"],
            "orch-pg-rows",
            "complex",
        )
    finally:
        await pool.close()
    after = cli("report", "orch-pg-rows", "--database-url", pg_dsn, "--json")
    assert after.returncode == 0, after.stderr
    by = {s["name"]: s for s in json.loads(after.stdout)["comparison"]["scenarios"]}
    assert by["complex"]["peak_mb"] == 700.0 and by["complex"]["quality"] == 0.625
    assert by["complex"]["met"] is False and by["simple"]["quality"] is None


@pytest.mark.postgres
async def test_html_from_postgres_is_written_and_named(pg_dsn: str, tmp_path: Path) -> None:
    pool, store = await _store(pg_dsn)
    try:
        await _finished_run(store, run_doc("orch-pg-html"))
    finally:
        await pool.close()
    page = tmp_path / "out" / "report.html"
    out = cli("report", "--database-url", pg_dsn, "--html", str(page))
    assert out.returncode == 0, out.stderr
    assert f"HTML report: {page}" in out.stdout
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "orch-pg-html" in text
    bad = cli("report", "--database-url", pg_dsn, "--html", "/proc/no/report.html")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--html" in bad.stderr


def test_large_runs_draw_one_trace_per_scenario_not_per_instance() -> None:
    doc = run_doc()
    base = doc["instances"]
    doc["instances"] = [
        {**base[k % 3], "name": f"inst-{k:03d}"} for k in range(30)
    ]  # 30 instances, 10 per tier
    run = facts_from_results(doc)
    from coordinator.report.html import progress_figure, timeline_figure, tokens_figure

    progress = progress_figure(run)
    assert [t.name for t in progress.data] == ["simple", "medium", "complex"]
    # each tier's trace holds its ten instances' lines, split by gaps
    assert sum(1 for x in progress.data[0].x if x is None) == 9
    assert len(tokens_figure(run).data) == 2 * 3
    timeline = timeline_figure(run)
    bars = [t for t in timeline.data if t.type == "bar" and t.name == "completed"]
    assert len(bars) == 1 and len(bars[0].y) == 30  # one bar per instance, one trace
