"""The HTML report in a real headless Chromium (Debian's ``chromium``): with every
connection sent to a dead proxy the charts are still drawn (nothing is fetched), they carry
the run's data points, a name built to break out of the page stays text, and a screenshot
is written as an artifact (its path printed).

``make test`` installs chromium when it runs as root; without it this test FAILS, saying
how to install it, never skips."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from coordinator.report.compare import compare
from coordinator.report.facts import facts_from_results
from coordinator.report.html import CHARTS, write_html_report
from tests.report.samples import EVIL, run_doc

ARTIFACTS = Path(__file__).resolve().parents[2] / ".artifacts"
FLAGS = (
    "--headless",
    "--no-sandbox",  # root in CI
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--proxy-server=http://127.0.0.1:9",  # any request off the page would fail
    "--virtual-time-budget=10000",
)


def chromium() -> str:
    """``$COORDINATOR_TEST_CHROMIUM``, else Debian's chromium; missing is a failure."""
    found = (
        os.environ.get("COORDINATOR_TEST_CHROMIUM")
        or shutil.which("chromium")
        or "/usr/bin/chromium"
    )
    if not os.access(found, os.X_OK):
        pytest.fail(
            f"no chromium at {found}: install Debian's chromium (apt-get install chromium)",
            pytrace=False,
        )
    return found


def run_chromium(*args: str) -> subprocess.CompletedProcess[str]:
    """One headless run in a session of its own, the whole group killed after (Chromium
    leaves helpers behind on a timeout), a fresh profile each time."""
    with tempfile.TemporaryDirectory(prefix="coordinator-chromium-") as profile:
        proc = subprocess.Popen(
            [chromium(), *FLAGS, f"--user-data-dir={profile}", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=120)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        assert group_gone(proc.pid), "chromium left processes behind"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def group_gone(pgid: int, deadline_s: float = 10.0) -> bool:
    """No live process of the group is left (polled: killed helpers take a moment to go).
    A zombie counts as gone: the helpers are re-parented to PID 1, and not every init reaps
    (a container's often does not), so ``killpg(pgid, 0)`` would still find them."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not any(_alive_in(proc, pgid) for proc in psutil.process_iter()):
            return True
        time.sleep(0.05)
    return False


def _alive_in(proc: psutil.Process, pgid: int) -> bool:
    try:
        return os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE
    except (ProcessLookupError, psutil.Error):
        return False


def sections(dom: str) -> dict[str, str]:
    """The rendered DOM of each chart: from its div to the next chart's."""
    starts = sorted((dom.index(f'id="chart-{key}"'), key) for key in CHARTS)
    ends = [pos for pos, _ in starts[1:]] + [len(dom)]
    return {key: dom[pos:end] for (pos, key), end in zip(starts, ends, strict=True)}


def test_charts_drawn_with_the_runs_data_and_a_screenshot(tmp_path: Path) -> None:
    doc = run_doc(name0=EVIL)
    run = facts_from_results(doc)
    comp = compare(run)
    page = write_html_report(tmp_path / "report.html", run, comp)

    dumped = run_chromium("--dump-dom", page.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = dumped.stdout
    charts = sections(dom)
    for key, html in charts.items():
        assert 'data-drawn="1"' in html[:200], f"{key}: plotly did not finish drawing it"
        assert 'class="main-svg"' in html, f"{key}: no SVG drawn"

    # The timeline: one bar per instance, plus the one barrier wait (medium's, at 50%),
    # and the instance names as its axis labels; the evil name is text, never elements.
    timeline = charts["timeline"]
    assert timeline.count('<g class="point"') == len(doc["instances"]) + 1
    labels = re.findall(r'class="ytick"><text[^>]*>([^<]*)', timeline)
    shown_evil = EVIL.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    assert sorted(labels) == sorted(["complex", "medium", shown_evil])
    assert "50%" in timeline  # milestone labels
    assert "<script>window.PWNED" not in dom and "<img src=" not in dom

    # Per-scenario bars: five panels of three scenarios, the token totals written on them.
    bars = charts["scenarios"]
    assert bars.count('<g class="point"') == 5 * len(comp.scenarios)
    for inst in doc["instances"]:
        assert f">{inst['total_tokens']:,}<" in bars
    assert f">{0.625:.2f}<" in bars and ">700<" in bars  # complex: quality, peak memory

    # Tokens over time: the series the instances recorded, three points each, per panel.
    assert charts["tokens"].count('class="point"') == 2 * 3 * len(doc["instances"])
    # The scaling chart: the fits named with their exponent and words.
    tokens_fit = comp.scaling["tokens"]
    assert tokens_fit is not None
    assert f"tokens fit: x^{tokens_fit.exponent:.2f} ({tokens_fit.words})" in charts["scaling"]

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-screenshot.png"
    shot.unlink(missing_ok=True)
    taken = run_chromium(f"--screenshot={shot}", "--window-size=1400,2600", page.as_uri())
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    print(f"screenshot: {shot}")


def test_two_runs_side_by_side(tmp_path: Path) -> None:
    before, after = run_doc("orch-before"), run_doc("orch-after")
    after["instances"][2]["total_tokens"] = 111_111
    run_a, run_b = facts_from_results(before), facts_from_results(after)
    comp_a, comp_b = compare(run_a), compare(run_b)
    page = write_html_report(tmp_path / "versus.html", run_a, comp_a, comp_b)
    dumped = run_chromium("--dump-dom", page.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = dumped.stdout
    start = dom.index('id="chart-versus"')
    versus = dom[start : dom.index('id="chart-timeline"')]
    assert 'data-drawn="1"' in versus[:200] and 'class="main-svg"' in versus
    assert versus.count('<g class="point"') == 2 * 4 * len(comp_a.scenarios)  # A, B x 4 panels
    assert ">234,567<" in versus and ">111,111<" in versus  # complex: A's tokens and B's
    assert "A: orch-before" in versus and "B: orch-after" in versus
    table = dom[dom.index('<table id="versus"') :]
    assert "<td>-123,456</td>" in table[: table.index("</table>")]  # complex: B - A tokens
