"""``coordinator report``: one run's comparison (from a results file or Postgres, any
host; default the newest run), in the terminal, as JSON, or as an HTML page; with
``--compare`` two runs side by side. The CLI opens the database only when a run comes
from it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson
from rich.console import Console

from coordinator.db.postgres import PostgresStore
from coordinator.errors import UsageError
from coordinator.report.compare import Comparison, compare
from coordinator.report.facts import ReportInputError, RunFacts
from coordinator.report.load import facts_from_file, facts_from_store
from coordinator.report.terminal import deltas, render_comparison, render_two


@dataclass(frozen=True, slots=True)
class ReportRequest:
    orchestration_id: str | None = None
    results_file: Path | None = None
    compare_with: str | None = None  # an orchestration id, or a results file (*.json, a path)
    json_output: bool = False
    html: Path | None = None

    def __post_init__(self) -> None:
        if self.orchestration_id and self.results_file is not None:
            raise UsageError("give an orchestration id or --results FILE, not both")

    @property
    def compare_is_file(self) -> bool:
        ref = self.compare_with
        return ref is not None and (ref.endswith(".json") or "/" in ref or Path(ref).is_file())

    @property
    def needs_database(self) -> bool:
        return self.results_file is None or (
            self.compare_with is not None and not self.compare_is_file
        )


async def load_runs(req: ReportRequest, store: PostgresStore | None) -> list[RunFacts]:
    """The run to report (and the one to compare it with)."""

    async def one(ref: str | None, file: Path | None) -> RunFacts:
        if file is not None:
            return facts_from_file(file)
        assert store is not None, "a run from the database needs the store"
        return await facts_from_store(store, ref, over_time=req.html is not None)

    runs = [await one(req.orchestration_id, req.results_file)]
    if req.compare_with is not None:
        file = Path(req.compare_with) if req.compare_is_file else None
        runs.append(await one(req.compare_with, file))
    return runs


def show(req: ReportRequest, runs: list[RunFacts], console: Console) -> int:
    comps: list[Comparison] = [compare(run) for run in runs]
    if req.html is not None:
        from coordinator.report.html import write_html_report

        try:
            write_html_report(req.html, runs[0], comps[0], comps[1] if len(comps) == 2 else None)
        except OSError as exc:
            raise ReportInputError(f"--html {req.html}: {exc.strerror or exc}") from None
    if req.json_output:
        doc: dict[str, object] = {"comparison": comps[0].as_dict()}
        if len(comps) == 2:
            doc = {"a": comps[0].as_dict(), "b": comps[1].as_dict(), "deltas": deltas(*comps)}
        console.print_json(orjson.dumps(doc).decode())
    elif len(comps) == 2:
        console.print(render_two(comps[0], comps[1]))
    else:
        console.print(render_comparison(comps[0]))
    if req.html is not None and not req.json_output:
        console.print(f"HTML report: {req.html.resolve()}", highlight=False, soft_wrap=True)
    return 0
