"""Sync modes in the engine, on real (replay) processes and the in-memory barrier.

Each replay instance prints ``PROGRESS: NN%`` lines at its own pace. Right after each one it
sleeps briefly and then writes a marker file: the marker is written by the PROCESS, so it
shows when the process really went on (a paused process group writes it only after the
release), not only what the coordinator believed.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from coordinator.engine.instance import Limits
from coordinator.engine.state import Status
from tests.engine.helpers import run_replay
from tests.unit.streams import api_response, result, usage

MILESTONES = (30, 50, 70, 90)


def _lines(raw: list[bytes]) -> dict[str, list[str]]:
    return {"lines": [r.decode().rstrip("\n") for r in raw]}


def paced(name: str, pace: float, tmp: Path, *, stop_before: int | None = None) -> list[Any]:
    """Progress markers every ``pace`` seconds; ``stop_before``: exit 1 before that pct."""
    steps: list[Any] = []
    for i, pct in enumerate(MILESTONES):
        if stop_before is not None and pct >= stop_before:
            return [*steps, {"exit": 1}]
        steps.append({"sleep": pace})
        steps.append(
            _lines(api_response(f"{name}-{i}", 10, 5, texts=(f"working PROGRESS: {pct}%",)))
        )
        steps.append({"sleep": 0.05})
        steps.append({"marker": str(tmp / f"{name}.{pct}")})
    steps.append(_lines([result(usage(40, 20), turns=4)]))
    return steps


def marks(tmp: Path, names: list[str]) -> dict[str, dict[int, int]]:
    found: dict[str, dict[int, int]] = {}
    for name in names:
        found[name] = {
            pct: int((tmp / f"{name}.{pct}").read_text())
            for pct in MILESTONES
            if (tmp / f"{name}.{pct}").exists()
        }
    return found


async def test_milestone_mode_nobody_goes_past_a_milestone_before_all_reached_it(
    tmp_path: Path,
) -> None:
    paces = {"fast": 0.05, "medium": 0.4, "slow": 0.9}
    orch, outcome = await run_replay(
        tmp_path,
        [{"command": "go", "name": n} for n in paces],
        {n: paced(n, p, tmp_path) for n, p in paces.items()},
        orchestration={"sync": {"mode": "milestone", "timeout_s": 30}},
    )
    by = {s.name: s for s in outcome.states}
    assert all(s.status is Status.COMPLETED for s in outcome.states), [
        (s.name, s.status, s.error) for s in outcome.states
    ]
    # Coordinator view: every hit at the next milestone is later than every hit at this one.
    hits = {s.name: {h.pct: h.at_unix_ms for h in s.milestone_hits} for s in outcome.states}
    for m, nxt in itertools.pairwise(MILESTONES):
        latest_at_m = max(hits[n][m] for n in paces)
        earliest_next = min(hits[n][nxt] for n in paces)
        assert earliest_next >= latest_at_m, (m, hits)
    # Process view: the fast one's marker after 30% was written only after the slow one
    # reached 30%, so its process group really was paused.
    written = marks(tmp_path, list(paces))
    assert written["fast"][30] > hits["slow"][30] * 1_000_000
    # Waiting is counted apart from working; the fast one waited most.
    assert by["fast"].wait_s > by["slow"].wait_s
    assert by["fast"].wait_s > 1.5
    assert [w[0] for w in by["fast"].sync_waits] == [f"milestone:{m}" for m in MILESTONES]
    assert not any(timed_out for _, _, timed_out in by["fast"].sync_waits)
    assert orch.sync_line() == "Sync points: ✓ 30% ✓ 50% ✓ 70% ✓ 90%"
    assert outcome.sync["timeouts"] == []


async def test_free_mode_nobody_waits(tmp_path: Path) -> None:
    paces = {"fast": 0.05, "slow": 0.6}
    _orch, outcome = await run_replay(
        tmp_path,
        [{"command": "go", "name": n} for n in paces],
        {n: paced(n, p, tmp_path) for n, p in paces.items()},
    )
    by = {s.name: s for s in outcome.states}
    assert all(s.status is Status.COMPLETED for s in outcome.states)
    slow_50 = next(h.at_unix_ms for h in by["slow"].milestone_hits if h.pct == 50)
    assert (by["fast"].ended_unix or 0) * 1000 < slow_50
    assert by["fast"].wait_s == 0 and by["fast"].sync_waits == []


async def test_a_hanging_instance_is_waited_for_until_the_timeout_then_recorded(
    tmp_path: Path,
) -> None:
    scripts = {
        "quick": paced("quick", 0.05, tmp_path),
        # Reaches 30%, then works for 4 s before 50%: longer than the 1 s sync timeout.
        "hangs": [
            _lines(api_response("h0", 10, 5, texts=("PROGRESS: 30%",))),
            {"sleep": 4},
            _lines(api_response("h1", 10, 5, texts=("PROGRESS: 95%",))),
            _lines([result(usage(20, 10), turns=2)]),
        ],
    }
    orch, outcome = await run_replay(
        tmp_path,
        [{"command": "go", "name": n} for n in scripts],
        scripts,
        orchestration={"sync": {"mode": "milestone", "timeout_s": 1}},
    )
    by = {s.name: s for s in outcome.states}
    assert by["quick"].status is Status.COMPLETED and by["hangs"].status is Status.COMPLETED
    timeouts = outcome.sync["timeouts"]
    assert isinstance(timeouts, list)
    assert {"point": "milestone:50", "instance": "quick", "missing": ["hangs"]} in timeouts
    # The quick one went on after the timeout, long before the hanging one reached 50%.
    quick_done = (by["quick"].ended_unix or 0) * 1000
    hangs_50 = next(h.at_unix_ms for h in by["hangs"].milestone_hits if h.pct == 50)
    assert quick_done < hangs_50
    assert any("sync timeout at 50%" in n and "hangs" in n for n in outcome.notes)
    assert "✗ 50% (timeout: hangs)" in (orch.sync_line() or "")


async def test_an_instance_that_fails_before_a_milestone_is_not_waited_for(
    tmp_path: Path,
) -> None:
    scripts = {
        "ok": paced("ok", 0.3, tmp_path),
        "dies": paced("dies", 0.05, tmp_path, stop_before=30),
    }
    _orch, outcome = await run_replay(
        tmp_path,
        [{"command": "go", "name": n} for n in scripts],
        scripts,
        orchestration={"sync": {"mode": "milestone", "timeout_s": 60}},
    )
    by = {s.name: s for s in outcome.states}
    assert by["dies"].status is Status.FAILED
    assert by["ok"].status is Status.COMPLETED
    assert by["ok"].wait_s < 5  # never the 60 s timeout
    assert outcome.sync["timeouts"] == []


def stepped(name: str, pace: float, turns: int, tmp: Path) -> list[Any]:
    """A multi-turn session: each turn takes ``pace`` s and ends with a result; a marker
    records when each later turn came in."""
    steps: list[Any] = []
    for k in range(turns):
        steps.append({"await_turn": True})
        steps.append({"marker": str(tmp / f"{name}.turn{k}")})
        steps.append({"sleep": pace})
        steps.append(_lines(api_response(f"{name}-{k}", 10, 5)))
        steps.append({"marker": str(tmp / f"{name}.done{k}")})
        steps.append(_lines([result(usage(10 * (k + 1), 5 * (k + 1)), turns=k + 1)]))
    return steps


async def test_lockstep_nobody_starts_step_k_plus_1_before_all_finished_step_k(
    tmp_path: Path,
) -> None:
    paces = {"fast": 0.05, "medium": 0.3, "slow": 0.7}
    turns = 3
    _orch, outcome = await run_replay(
        tmp_path,
        [
            {"command": "first", "name": n, "steps": [f"step {k}" for k in range(1, turns)]}
            for n in paces
        ],
        {n: stepped(n, p, turns, tmp_path) for n, p in paces.items()},
        orchestration={"sync": {"mode": "lockstep", "timeout_s": 30}},
        limits=Limits(post_result_grace=5),
    )
    assert all(s.status is Status.COMPLETED for s in outcome.states), [
        (s.name, s.status, s.error) for s in outcome.states
    ]

    def at(name: str, what: str) -> int:
        return int((tmp_path / f"{name}.{what}").read_text())

    for k in range(1, turns):
        last_done = max(at(n, f"done{k - 1}") for n in paces)
        first_start = min(at(n, f"turn{k}") for n in paces)
        assert first_start > last_done, k
    by = {s.name: s for s in outcome.states}
    assert [w[0] for w in by["fast"].sync_waits] == ["step:1", "step:2"]
    assert by["fast"].wait_s > by["slow"].wait_s
