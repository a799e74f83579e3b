"""The ``comparison`` section of a results document, computed from the document itself (so
its numbers are the run's own). It never costs a run its results: a comparison that
cannot be made is a section that says why."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog
from rich.console import RenderableType

from coordinator.report.compare import compare
from coordinator.report.facts import facts_from_results
from coordinator.report.terminal import render_comparison

log = structlog.get_logger("coordinator.report")


def comparison_section(results: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return compare(facts_from_results(results)).as_dict()
    except Exception as exc:  # a bug here must not lose the results it is part of
        log.warning("no comparison", error=str(exc))
        return {"error": f"no comparison: {exc}"}


def end_of_run_table(results: Mapping[str, Any]) -> RenderableType | None:
    """The compact comparison every run ends with, when its instances have scenarios."""
    try:
        run = facts_from_results(results)
        if not run.has_scenarios:
            return None
        return render_comparison(compare(run), compact=True)
    except Exception as exc:
        log.warning("no comparison table", error=str(exc))
        return None
