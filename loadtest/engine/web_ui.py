"""Locust's own web UI on our user and shape (``loadtest run --web``): an HDR tab, and a results directory per test.

Through the extension points Locust documents (its ``examples/extend_web_ui.py``), not a UI of our
own: the ``init`` event hands over the web UI; ``template_args`` gains an extended tab, the table
that fills it, and a CSV link; an ``after_request`` hook adds the table's rows to every
``/stats/requests`` answer, which the page polls every two seconds while a test runs. The rows are
the response-time percentiles of our HDR histograms (from each arrival's intended send time, per
request class and for all), as the master has merged them, next to Locust's own statistics.

Each test started from the browser is a run of its own: it writes ``OUT/<n>-<time>``
(``engine.web_tests``) when it stops (stopped from the browser, or ended by the shape), and
``RunState.next_test`` readies the process for the next one. A headless run never gets here: it
has no web UI, and writes its directory at ``quitting`` as before.
"""

from __future__ import annotations

import csv
import io
import json
import shutil

from flask import Response, request
from locust import events

from loadtest.engine.collector import latency_stats
from loadtest.engine.users import RunState, run_state, write_measurements
from loadtest.engine.web_tests import RUN_FILES, web_test_dir
from loadtest.results.summary import ALL

TAB = "hdr"  # the tab's key: ``/?tab=hdr`` opens it
COLUMNS = (  # row key -> column title; keys without "_", since the page turns keys into camelCase
    ("name", "Class"),
    ("count", "# requests"),
    ("p50", "p50 (ms)"),
    ("p95", "p95 (ms)"),
    ("p99", "p99 (ms)"),
    ("p999", "p99.9 (ms)"),
    ("max", "Max (ms)"),
)
PERCENTILES = {"p50": "p50", "p95": "p95", "p99": "p99", "p999": "p99.9"}  # row key -> the summary's name


def hdr_rows(state: RunState) -> list[dict]:
    """Response time for all classes, then each, from the histograms merged so far (none before an answer)."""
    collector = state.collector
    if collector is None:
        return []
    rows = []
    for cls in (ALL, *collector.classes()):
        stats = latency_stats(collector.histogram("response", cls))
        if not stats.count:
            continue
        row = {"name": cls, "count": stats.count, "max": round(stats.max, 2)}
        row |= {key: round(stats.by_percentile[name], 2) for key, name in PERCENTILES.items()}
        rows.append(row)
    return rows


def hdr_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[key for key, _ in COLUMNS])
    writer.writerow({key: title for key, title in COLUMNS})
    writer.writerows(rows)
    return buffer.getvalue()


@events.init.add_listener
def _extend(environment, web_ui=None, **_) -> None:
    if web_ui is None:  # headless, or a worker
        return
    web_ui.template_args["extended_tabs"] = [{"title": "HDR latency", "key": TAB}]
    web_ui.template_args["extended_tables"] = [
        {"key": TAB, "structure": [{"key": key, "title": title} for key, title in COLUMNS]}
    ]
    web_ui.template_args["extended_csv_files"] = [{"href": "./hdr/csv", "title": "Download HDR latency CSV"}]

    @web_ui.app.after_request
    def _with_hdr_rows(response: Response) -> Response:
        if request.path != "/stats/requests" or response.status_code != 200:
            return response
        rows = hdr_rows(run_state(environment))
        # Locust caches this answer for 2 s: its state may be older than a test just started, and a
        # page told "ready" or "stopped" goes back to its form and stops polling while the test runs.
        live = {"state": environment.runner.state, "extended_stats": [{"key": TAB, "data": rows}]}
        response.set_data(json.dumps({**response.json, **live}))
        return response

    @web_ui.app.route("/hdr/csv")
    @web_ui.auth_required_if_enabled
    def _hdr_csv() -> Response:
        return Response(
            hdr_csv(hdr_rows(run_state(environment))),
            mimetype="text/csv",
            headers={"Content-Disposition": "attachment;filename=hdr_latency.csv"},
        )


@events.test_start.add_listener
def _on_test_start(environment, **_) -> None:
    if environment.web_ui is None:
        return
    state = run_state(environment)  # users.py's listener, which runs first, has set the start time
    state.new_collector()  # the last test's figures were shown until now
    state.tests += 1
    state.test_dir = web_test_dir(state.config.out_dir, state.tests, state.started_epoch)


@events.test_stop.add_listener
def _on_test_stop(environment, **_) -> None:
    if environment.web_ui is None:
        return
    state = run_state(environment)
    if state.test_dir is None or state.collector is None:
        return
    try:
        state.test_dir.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:  # the session's scenario and configuration, so the directory stands alone
            if (source := state.config.out_dir / name).exists():
                shutil.copyfile(source, state.test_dir / name)
        write_measurements(state, state.test_dir)  # summary.json last: the CLI takes the directory as finished
    finally:
        state.test_dir = None
        state.next_test()
