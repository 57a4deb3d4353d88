"""Reports: built from a real run's directory alone, and the HTML checked in a real headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest

from loadtest.results.summary import Summary, read_summary
from tests.helpers import REPO, chromium, loadtest

PLOTS = ("latency-over-time", "distribution", "rates", "failures", "resources", "server-timing")


@pytest.fixture
def run_dir(reported_run) -> Path:
    return reported_run


@pytest.mark.slow
def test_every_run_writes_both_reports(run_dir):
    html = (run_dir / "report.html").read_text()
    for name in PLOTS:
        assert f'data-plot="{name}"' in html
    assert html.count("<svg") >= len(PLOTS)
    fetches = re.findall(
        r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|<link\b|@import|url\(\s*["']?(?:https?:)?//""", html
    )
    assert not fetches, "the page must work offline: it fetches nothing"
    md = (run_dir / "report.md").read_text()
    assert "| class | ok |" in md and "### Gates" in md and "p99 < 5s" in md
    assert "### Sample sufficiency" in md
    # where the server's split came from, found on its own /metrics with no metrics key in the scenario
    assert "server split, per request, from the Server-Timing header" in md
    assert "cross-check, the reference server's /metrics (1 s means)" in md and "### Server split" in md


@pytest.mark.slow
def test_the_report_is_rebuilt_from_the_directory_alone(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "report.html").unlink()
    (copy / "report.md").unlink()
    result = loadtest("report", str(copy))
    assert result.returncode == 0, result.stderr
    assert (copy / "report.html").stat().st_size > 20_000


def test_a_directory_without_results_is_one_clear_error(tmp_path):
    result = loadtest("report", str(tmp_path))
    assert result.returncode == 2 and "no summary.json" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_the_html_renders_offline_in_headless_chromium(run_dir, tmp_path):
    browser = chromium()
    if browser is None:
        if os.environ.get("LOADTEST_REQUIRE_BROWSER"):
            pytest.fail("Chromium is required here (.ci/run installs Debian's chromium package)")
        pytest.skip("no Chromium on this machine; .ci/run installs it")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
    ]
    url = (run_dir / "report.html").resolve().as_uri()
    dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body, dom.stderr[-2000:]
    attributes = body.group(1)
    assert f'data-rendered="{len(PLOTS)}/{len(PLOTS)}"' in attributes, attributes
    assert "data-errors" not in attributes, attributes
    shot = run_dir / "report.png"
    subprocess.run(
        [browser, *flags, "--window-size=1200,3600", f"--screenshot={shot}", url], capture_output=True, timeout=120
    )
    assert shot.exists() and shot.stat().st_size > 50_000


def documented_summary_keys() -> list[str]:
    """The keys of the summary.json table in docs/results.md, in order."""
    text = (REPO / "docs" / "results.md").read_text()
    table = text[text.index("## `summary.json`") :]
    return re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.M)


@pytest.mark.slow
def test_the_documented_summary_schema_matches_a_real_run_and_the_typed_summary(run_dir):
    written = json.loads((run_dir / "summary.json").read_text())
    documented = documented_summary_keys()
    assert set(written) <= set(documented), set(written) - set(documented)  # every key a run writes is documented
    assert set(documented) == {f.name for f in fields(Summary)}  # and no documented key is missing from the type
    assert read_summary(run_dir).as_dict() == written  # the typed summary reads back exactly what was written
