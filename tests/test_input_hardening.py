"""Hostile or mistaken input: redirects, numbers that would exhaust memory, credentials in a URL, text that
looks like markup, paths that cannot be written, TOML the parser chokes on. Each is one line and exit 2
before anything runs, or, in a run, is counted and shown as what it is, and nothing secret is written."""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess

import httpx
import psutil
import pytest
from rich.console import Console

from loadtest.config.profile import load_profile
from loadtest.errors import ConfigError, ExitCode
from loadtest.replay.readers import read_capture
from loadtest.replay.redact import redact_url, redact_urls_in, replay_headers
from loadtest.replay.schedule import check_replay_load
from loadtest.report.terminal import summary_table
from loadtest.results.summary import read_summary
from loadtest.traffic.payloads import jsonl_pool
from loadtest.traffic.shapes import from_table
from tests.helpers import JSON_ENDPOINT, loadtest, scenario
from tests.servers import recording, redirecting

NOWHERE = "http://127.0.0.1:9"  # nothing listens there: a run that got past the checks would fail on it
SECRET = "s3cret"


def one_line_exit_2(result: CompletedProcess, *says: str) -> None:
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for text in says:
        assert text in result.stderr, result.stderr


# -- a real run: a target that redirects, credentials in its URL, markup in names -------------------


@dataclass(frozen=True)
class Run:
    result: CompletedProcess
    out: Path
    seen: list  # what the target received: (method, path, headers, body)
    elsewhere: list  # what the server the redirects point to received
    commands: set[str]  # the command lines of the run's child processes, read while it ran

    @property
    def summary(self) -> dict:
        return json.loads((self.out / "summary.json").read_text())


@contextmanager
def child_commands() -> Iterator[set[str]]:
    """The command lines of this process's children, read every 50 ms while the block runs (what `ps` shows)."""
    found: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            for child in psutil.Process().children(recursive=True):
                with suppress(psutil.Error):
                    found.add(" ".join(child.cmdline()))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield found
    finally:
        done.set()
        watcher.join()


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory) -> Run:
    """One 2 s run, report included, against a loopback target that answers every other request with a 307 to
    another loopback server; the target URL carries a password, the one class is named ``short[/]`` and the
    threshold names it. The tests below each read one side of it."""
    tmp = tmp_path_factory.mktemp("hostile")
    path = scenario(
        tmp,
        'shape = { kind = "constant", value = 20 }\nduration = "2s"\narrivals = "uniform"',
        JSON_ENDPOINT,
        'classes = [{ name = "short[/]", min_tokens = 4, max_tokens = 8 }]',
    )
    with recording() as (elsewhere, reached), redirecting(elsewhere + "/") as (url, seen), child_commands() as seen_ps:
        target = url.replace("http://", f"http://alice:{SECRET}@")
        result = loadtest("run", str(path), "--target", target, "--out", str(tmp / "out"),
                          "--threshold", "p99{class=short[/]} < 5s")  # fmt: skip
    return Run(result, tmp / "out", seen, reached, seen_ps)


def test_a_redirect_is_counted_as_the_answer_and_never_followed(hostile_run):
    assert hostile_run.result.returncode == ExitCode.PASSED, hostile_run.result.stderr
    assert hostile_run.elsewhere == []  # the loopback guard judged the target; nothing went past it
    accounting = hostile_run.summary["accounting"]
    assert accounting["scheduled"] == 40 and accounting["errors"] == 20  # every other one of 40 sends
    assert accounting["errors_by_kind"] == {"http_307": 20} and accounting["ok"] == 20
    assert "answers were redirects (http_307" in hostile_run.result.stderr
    assert "redirects are not followed" in hostile_run.result.stderr


def test_a_preflight_answered_with_a_redirect_stops_and_says_where_it_leads(tmp_path):
    path = scenario(tmp_path, 'shape = { kind = "constant", value = 5 }\nduration = "1s"', JSON_ENDPOINT)
    with recording() as (elsewhere, reached), redirecting(elsewhere + "/") as (url, _):
        httpx.post(url + "/", content=b"{}")  # the server's one answer: the preflight gets its 307
        result = loadtest("run", str(path), "--target", url, "--out", str(tmp_path / "out"))
    one_line_exit_2(result, f"answered 307, a redirect to {elsewhere}/ (redirects are not followed")
    assert reached == []


def test_a_password_in_the_target_url_reaches_the_target_and_nothing_else(hostile_run):
    posts = [headers for method, _, headers, _ in hostile_run.seen if method == "POST"]
    basic = "Basic " + base64.b64encode(f"alice:{SECRET}".encode()).decode()
    assert len(posts) == 41 and all(h.get("authorization") == basic for h in posts)  # the preflight, 40 sends
    files = [p for p in hostile_run.out.rglob("*") if p.is_file()]
    assert {"summary.json", "run.json", "scenario.toml", "report.html", "report.md", "locust.log"} <= {
        p.name for p in files
    }
    assert [p.name for p in files if SECRET.encode() in p.read_bytes()] == []
    console = hostile_run.result.stdout + hostile_run.result.stderr
    assert SECRET not in console and "http://alice:***@127.0.0.1:" in console
    assert hostile_run.summary["target"]["url"].startswith("http://alice:***@")
    assert any("locust" in command for command in hostile_run.commands)  # the watch saw Locust's command line
    assert [c for c in hostile_run.commands if SECRET in c] == []


def test_markup_in_a_class_name_and_a_threshold_is_printed_and_reported_as_text(hostile_run):
    err = hostile_run.result.stderr
    assert "MarkupError" not in err and "p99{class=short[/]} < 5s" in err  # the gate table, as written
    wide = Console(width=400, record=True, file=io.StringIO())  # the end table, its class column uncut
    wide.print(summary_table(read_summary(hostile_run.out)))
    assert "│ short[/] │" in wide.export_text()
    assert "short[/]" in (hostile_run.out / "report.md").read_text()
    assert "short[/]" in (hostile_run.out / "report.html").read_text()
    gates = json.loads((hostile_run.out / "gates.json").read_text())
    assert [(r["name"], r["status"]) for r in gates["results"]] == [("p99{class=short[/]} < 5s", "pass")]


def test_redact_url_hides_a_password_or_a_bare_user_token_and_secret_query_values():
    assert redact_url("http://alice:pw@host:8000/v1") == "http://alice:***@host:8000/v1"
    assert redact_url("https://TOKEN@host") == "https://***@host"
    assert redact_url("http://host/x?api_key=k&a=1") == "http://host/x?api_key=REDACTED&a=1"
    assert redact_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000"
    assert redact_urls_in('url = "http://alice:p@ss@host"\nx = 1') == 'url = "http://alice:***@host"\nx = 1'


def test_a_replayed_header_whose_name_holds_auth_is_stripped():
    captured = (("x-custom-auth", "k"), ("x-auth-user", "u"), ("authorization", "b"), ("x-tenant", "t"))
    assert replay_headers(captured, send_secrets=False) == {"x-tenant": "t"}
    assert len(replay_headers(captured, send_secrets=True)) == 4


# -- numbers that would exhaust memory -----------------------------------------------------------------

SHAPES = [
    ('{ kind = "constant", value = 1e9 }', "a rate of 1e+09/s", "that takes 200,000 processes: lower it"),
    ('{ kind = "ramp", start = 1, end = 20000 }', "a rate of 20,000/s", "use --processes 4"),
    (
        '{ kind = "stages", stages = [{ duration = "1s", target = 5 }, { duration = "1s", target = 6000 }] }',
        "a rate of 6,000/s",
        "use --processes 2",
    ),
    ('{ kind = "spike", base = 10, peak = 1e6, at = "1s", length = "1s" }', "a rate of 1e+06/s", "--processes 200"),
    ('{ kind = "diurnal", low = 1, high = 9000 }', "a rate of 9,000/s", "use --processes 2"),
    ('{ kind = "bursty", value = 7000 }', "a rate of 7,000/s", "use --processes 2"),
]


@pytest.mark.parametrize(("shape", "says", "fix"), SHAPES, ids=[s.split('"')[1] for s, _, _ in SHAPES])
def test_a_scenario_rate_over_the_per_process_cap_is_one_line_before_anything_runs(tmp_path, shape, says, fix):
    path = scenario(tmp_path, f'shape = {shape}\nduration = "2s"', f'url = "{NOWHERE}"')
    result = loadtest("run", str(path), "--out", str(tmp_path / "out"))
    one_line_exit_2(result, f"{path}: load.shape: {says} is over the 5,000/s a load-generator process", fix)
    assert not (tmp_path / "out").exists()


def test_a_command_line_load_gets_the_same_cap_and_more_processes_lift_it(tmp_path):
    path = scenario(tmp_path, 'shape = { kind = "constant", value = 5 }\nduration = "2s"', f'url = "{NOWHERE}"')
    one_line_exit_2(loadtest("run", str(path), "--rate", "6000"), "--rate: a rate of 6,000/s", "use --processes 2")
    one_line_exit_2(loadtest("run", str(path), "--users", "12000"), "--users: 12,000 users", "use --processes 3")
    lifted = loadtest("run", str(path), "--rate", "6000", "--processes", "2", "--out", str(tmp_path / "o"))
    one_line_exit_2(lifted, "cannot reach http://127.0.0.1:9")  # past the cap: on to the preflight


def test_a_replay_whose_busiest_second_is_over_the_cap_is_refused():
    check_replay_load([10, 4999, 5000], 1, "c.jsonl")
    with pytest.raises(ConfigError, match=r"c.jsonl: its busiest second, 12,000 requests.*use --processes 3"):
        check_replay_load([10, 12000, 3], 1, "c.jsonl")


@pytest.mark.parametrize(
    "table",
    [
        {"kind": "constant", "value": 7},
        {"kind": "ramp", "start": 30, "end": 5},
        {"kind": "step", "start": 1, "step": 2.5, "every": "3s"},
        {"kind": "step", "start": 1, "step": 5, "every": "1s", "max": 12},
        {"kind": "spike", "base": 3, "peak": 40, "at": "10s", "length": "5s"},
        {"kind": "sine", "mean": 10, "amplitude": 4, "period": "7s"},
        {"kind": "diurnal", "low": 2, "high": 9},
        {"kind": "bursty", "value": 11},
        {"kind": "stages", "start": 3, "stages": [{"duration": "5s", "target": 20}, {"duration": "5s", "target": 1}]},
    ],
    ids=lambda t: t["kind"],
)
def test_a_shapes_ceiling_is_its_highest_value_without_sampling(table):
    shape = from_table(table, 30.0, "s.toml")
    highest = max(shape.at(i / 100) for i in range(3001))
    assert shape.ceiling == pytest.approx(highest, rel=1e-3)


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("payload", "pool_size = 1e9", "payload.pool_size: must be at most 65,536"),
        ("payload", "width = 10000000", "payload.width: must be at most 65,536"),
        ("payload", 'classes = [{ name = "x", min_tokens = 4, max_tokens = 1e8 }]', "max_tokens: must be at most"),
        ("messy", "share = 0.1\noversized_bytes = 1e12", "messy.oversized_bytes: must be at most 1,000,000,000"),
        ("top", "seed = -1", "seed: must be at least 0"),
    ],
)
def test_a_number_that_sizes_memory_has_a_ceiling(tmp_path, key, value, says):
    path = tmp_path / "s.toml"
    tables = {"top": "", "payload": "", "messy": ""} | {key: value}
    path.write_text(f'{tables["top"]}\n[target]\nurl = "{NOWHERE}"\n[payload]\n{tables["payload"]}\n'
                    f'[messy]\n{tables["messy"]}\n[load]\nduration = "1s"\n')  # fmt: skip
    one_line_exit_2(loadtest("run", str(path)), says)


def test_a_payload_line_over_the_limit_is_refused_without_reading_it_whole(tmp_path):
    payloads = tmp_path / "bodies.jsonl"
    with payloads.open("wb") as f:
        f.write(b'{"input": "fine"}\n{"input": "' + b"x" * 20_000_000 + b'"}\n')
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match=r"bodies.jsonl:2: the line is longer than 1.0 MB; payload.max_line"):
            jsonl_pool(payloads, seed=1, max_line=1_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4_000_000  # the 20 MB line was never held (the limit, once, and change)
    assert len(jsonl_pool(payloads, seed=1, max_line=50_000_000).payloads["default"]) == 2


def test_the_scenario_key_and_the_replay_option_set_the_line_limit(tmp_path):
    bodies = tmp_path / "bodies.jsonl"
    bodies.write_text('{"input": "short"}\n{"input": "' + "x" * 2000 + '"}\n')
    path = scenario(tmp_path, 'shape = { kind = "constant", value = 5 }\nduration = "1s"',
                    f'url = "{NOWHERE}"', f'source = "jsonl"\nfile = "{bodies}"\nmax_line_bytes = 1000')  # fmt: skip
    one_line_exit_2(loadtest("run", str(path)), f"{bodies}:2: the line is longer than 1.0 KB; payload.max_line_bytes")
    capture = tmp_path / "capture.jsonl"
    line = {"timestamp": 1_700_000_000, "path": "/v2/models/minilm/infer", "body": {"input": "y" * 2000}}
    capture.write_text(json.dumps({**line, "body": {}}) + "\n" + json.dumps(line) + "\n")
    assert len(list(read_capture(capture))) == 2
    replayed = loadtest("replay", str(capture), "--target", NOWHERE, "--max-line-bytes", "1000")
    one_line_exit_2(replayed, f"{capture}:2: the line is longer than 1.0 KB; --max-line-bytes")


# -- paths, TOML and profiles: one line and exit 2, never a traceback ----------------------------------


def unwritable(tmp_path: Path) -> Path:
    """A directory nobody may write in: a read-only one, or, for root (whom modes do not stop), sysfs."""
    if os.geteuid() == 0:
        return Path("/sys")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    return locked


def test_an_out_that_cannot_be_written_is_one_line_before_the_run(tmp_path):
    in_the_way = tmp_path / "file"
    in_the_way.write_text("mine")
    path = scenario(tmp_path, 'shape = { kind = "constant", value = 5 }\nduration = "1s"', f'url = "{NOWHERE}"')
    for out, says in [
        (in_the_way, "is a file, not a directory"),
        (in_the_way / "sub", f"{in_the_way} is a file, not a directory"),
        (unwritable(tmp_path) / "out", "cannot write in"),
    ]:
        one_line_exit_2(loadtest("run", str(path), "--out", str(out)), "argument --out", says)
    one_line_exit_2(loadtest("run", str(path), "--junit", str(tmp_path)), "argument --junit: ", "is a directory")
    assert in_the_way.read_text() == "mine"


def test_toml_nested_too_deeply_a_bom_and_a_core_that_is_not_there_are_one_line(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 10_000 + "]" * 10_000 + "\n")
    one_line_exit_2(loadtest("run", str(deep)), f"{deep}: not valid TOML: arrays or tables nested too deeply")
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b'\xef\xbb\xbfname = "bom"\n[model]\nname = "minilm"\n')
    with pytest.raises(ConfigError, match="starts with a byte-order mark"):
        load_profile(str(bom))
    cores = tmp_path / "cores.toml"
    cores.write_text("[server]\ncpus = [99999]\n")
    steady = Path(__file__).resolve().parents[1] / "scenarios" / "steady.toml"
    run = loadtest("run", str(steady), "--profile", str(cores), "--out", str(tmp_path / "out"))
    one_line_exit_2(run, f"{cores}: server.cpus: core 99999 is not one this machine lets us use")


def test_markup_in_an_error_message_is_printed_as_written(tmp_path):
    path = scenario(tmp_path, 'shape = { kind = "constant", value = 5 }\nduration = "1s"', f'url = "{NOWHERE}"')
    result = loadtest("run", str(path), "--threshold", "p99{class=[/]} < [bold]fast")
    one_line_exit_2(result, "threshold 'p99{class=[/]} < [bold]fast'")


def test_a_day_long_shape_is_checked_without_sampling_it(tmp_path):
    path = scenario(tmp_path, 'shape = { kind = "constant", value = 1e9 }\nduration = "24h"', f'url = "{NOWHERE}"')
    started = time.perf_counter()
    one_line_exit_2(loadtest("run", str(path)), "a rate of 1e+09/s")
    assert time.perf_counter() - started < 1.0  # the ceiling is read from parameters, not sampled over 24 h
