"""`loadtest run --web`: Locust's own web UI on our user and shape, driven in headless Chromium.

The browser is driven over the DevTools protocol (websocket-client, which Locust's Socket.IO client
brings): the page's own Start, Stop and New buttons are clicked, and the HDR tab is read as the page
renders it. Each test started there must write a results directory of its own as it stops, and a
second test must send requests as the first did.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import websocket

from tests.helpers import FEATURES, FRAUD, REPO, chromium, free_port, scenario

HDR_ROWS = """(() => {
  const table = [...document.querySelectorAll('table')].find(t => t.textContent.includes('p99.9 (ms)'));
  const cells = row => [...row.cells].map(cell => cell.textContent);
  return table ? [...table.querySelectorAll('tbody tr')].map(cells) : null;
})()"""  # the HDR tab's rows as rendered: null while the tab is not shown, [] while it has none
CLICK = """((text) => {
  const button = [...document.querySelectorAll('button')].filter(b => b.textContent.trim() === text).pop();
  return button ? (button.click(), true) : false;
})"""  # the last button that reads ``text`` (a dialog's comes after the page's), if there is one yet
FETCHED_STATS = "performance.getEntriesByType('resource').some(e => e.name.includes('stats/') && e.responseEnd)"


class Page:
    """One Chromium tab over the DevTools protocol: navigate, run a script, click a button by its text."""

    def __init__(self, socket_url: str) -> None:
        self.ws = websocket.create_connection(socket_url, timeout=10, suppress_origin=True)
        self.ids = itertools.count(1)

    def call(self, method: str, **params) -> dict:
        sent = next(self.ids)
        self.ws.send(json.dumps({"id": sent, "method": method, "params": params}))
        while (answer := json.loads(self.ws.recv())).get("id") != sent:  # no domain is enabled: no events come
            pass
        assert "error" not in answer, answer
        return answer["result"]

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def open(self, url: str) -> None:
        """Load ``url`` and wait for the page's first statistics: a Start clicked before they come is undone by them."""
        self.call("Page.navigate", url=url)
        wait_for(lambda: self.js("location.href") == url and self.js(FETCHED_STATS), "the page and its statistics")

    def buttons(self) -> list[str]:
        return self.js("[...document.querySelectorAll('button')].map(b => b.textContent.trim())")

    def click(self, text: str) -> None:
        wait_for(lambda: self.js(f"{CLICK}({json.dumps(text)})"), f"a {text} button")


def wait_for(check: Callable[[], object], what: str, timeout: float = 10.0):
    """``check()`` once it is truthy, polled every 50 ms; fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


@contextmanager
def chromium_page(browser: str, profile: Path):
    """Headless Chromium with the DevTools protocol on a port of its choosing (read from DevToolsActivePort)."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    flags += ["--disable-component-update", "--disable-sync", "--remote-debugging-port=0", f"--user-data-dir={profile}"]
    process = subprocess.Popen([browser, *flags, "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        active = profile / "DevToolsActivePort"
        port = wait_for(lambda: active.exists() and active.read_text().split("\n")[0], "Chromium's DevTools port")
        targets = wait_for(
            lambda: [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page"],
            "Chromium's page",
        )
        page = Page(targets[0]["webSocketDebuggerUrl"])
        try:
            yield page
        finally:
            page.ws.close()
    finally:
        process.kill()
        process.wait()


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def finished(out: Path, number: int) -> dict | None:
    """Test ``number``'s summary once its directory is written (``OUT/<n>-<time>/summary.json``)."""
    found = sorted(out.glob(f"{number}-*/summary.json"))
    return json.loads(found[0].read_text()) if found else None


@pytest.mark.slow
def test_tests_started_from_the_web_ui_each_write_their_directory_and_show_live_hdr_percentiles(server, tmp_path):
    browser = chromium()
    if browser is None:
        if os.environ.get("LOADTEST_REQUIRE_BROWSER"):
            pytest.fail("Chromium is required here (.ci/run installs Debian's chromium package)")
        pytest.skip("no Chromium on this machine; .ci/run installs it")
    path = scenario(
        tmp_path,
        'shape = { kind = "constant", value = 20 }\nduration = "3s"\ntimeout = "1s"',
        f'url = "{server.url}"\n{FRAUD}',
        FEATURES,
    )
    out, port = tmp_path / "out", free_port()
    ui = f"http://127.0.0.1:{port}/?tab=hdr"
    command = [sys.executable, "-m", "loadtest", "run", str(path), "--out", str(out), "--web", "--web-port", str(port)]
    command += ["--sample-hz", "0"]  # no resource sampler: a process less, and not what this test is about
    # Ctrl-C as at a terminal: a background job of a non-interactive shell (a CI step) inherits SIGINT ignored.
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    cli = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint
    )
    try:
        with chromium_page(browser, tmp_path / "profile") as page:
            wait_for(lambda: cli.poll() is not None or answers(ui), "the web UI", timeout=30)
            assert cli.poll() is None, cli.communicate()
            page.open(ui)
            page.click("Start")  # the page's own form: our shape, started as a user starts it

            # The HDR tab, live: rendered without rows as the test starts, then with the first merged second's.
            seen: list[list | None] = []
            rows = wait_for(lambda: seen.append(page.js(HDR_ROWS)) or seen[-1], "the HDR tab's rows")
            assert [] in seen and "Stop" in page.buttons()  # it changed while the test ran
            assert rows[0][0] == "all" and int(rows[0][1]) > 0 and all(float(v) > 0 for v in rows[0][2:])
            page.click("Stop")
            first = wait_for(lambda: finished(out, 1), "the first test's directory")

            page.open(ui)  # as a user comes back to it: the finished test's figures, and New
            rows = wait_for(lambda: page.js(HDR_ROWS), "the first test's rows")
            assert int(rows[0][1]) == first["latency_ms"]["response"]["all"]["count"]
            page.click("New")
            page.click("Start")
            second = wait_for(lambda: finished(out, 2), "the second test's directory (ended by its shape)")
            page.open(ui)
            rows = wait_for(lambda: page.js(HDR_ROWS), "the second test's rows")
            assert int(rows[0][1]) == second["latency_ms"]["response"]["all"]["count"]  # its own, not the sum
    finally:
        if cli.poll() is None:
            cli.send_signal(signal.SIGINT)  # how a user quits
        stdout, stderr = cli.communicate(timeout=60)
    assert cli.returncode == 0, stdout + stderr
    assert f"Locust's web UI: http://127.0.0.1:{port}" in stderr and "2 test(s) run from the web UI" in stderr
    assert first["run"]["interrupted"] and not second["run"]["interrupted"]  # stopped by the user; ended by the shape
    for summary in (first, second):
        assert summary["accounting"]["ok"] > 10 and summary["accounting"]["errors"] == 0
    directories = sorted(p for p in out.iterdir() if p.is_dir())
    assert [p.name.split("-")[0] for p in directories] == ["1", "2"]
    for directory in directories:
        names = {p.name for p in directory.iterdir()}
        assert {"summary.json", "response.hlog", "timeline.csv", "report.html", "scenario.toml"} <= names, names
