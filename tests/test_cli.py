"""The command line: every command's help prints, usage errors exit 2, and the exit codes are one table."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.analysis.cost import ForecastError
from loadtest.cli import build_parser, main
from loadtest.errors import MEANINGS, ExitCode, LoadTestError, ServerStartError, outcome_code
from loadtest.gates.thresholds import GateError
from loadtest.units import parse_share

EXPECTED = {"run", "replay", "capacity", "compare", "cost", "report", "gate", "probe"}


def registered_commands() -> list[str]:
    """The subcommands the parser knows, read from the parser itself, so a new one is never missed."""
    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(subparsers.choices)


def help_text(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_every_command_named_in_the_issue_is_registered():
    assert set(registered_commands()) == EXPECTED


def test_top_level_help_lists_every_command_and_the_exit_codes(capsys):
    text = help_text(["--help"], capsys)
    assert text.startswith("usage: loadtest")
    for command in registered_commands():
        assert command in text
    for code, meaning in MEANINGS.items():
        assert f"{code.value:<4} {meaning}" in text


@pytest.mark.parametrize("command", registered_commands())
def test_every_command_prints_its_help(command, capsys):
    text = help_text([command, "--help"], capsys)
    assert text.startswith(f"usage: loadtest {command}")


@pytest.mark.parametrize("command", ["run", "replay"])
def test_processes_below_one_is_a_usage_error(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "anything.toml", "--processes", "0"])
    assert exited.value.code == ExitCode.USAGE
    assert "--processes: must be at least 1, got 0" in capsys.readouterr().err


def test_a_share_option_takes_a_percentage_or_a_fraction(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["run", "anything.toml", "--messy", "150%"])
    assert exited.value.code == ExitCode.USAGE
    assert "--messy: must be between 0 and 100%" in capsys.readouterr().err


def test_gate_and_forecast_errors_are_input_errors():
    for error in (GateError, ForecastError):
        assert issubclass(error, LoadTestError)
        assert error("bad").exit_code == ExitCode.USAGE


def test_an_input_error_is_one_line_and_exit_2(tmp_path, capsys):
    """A bad --slo reaches the CLI as a GateError: one line on stderr, no traceback."""
    scenario = tmp_path / "s.toml"
    scenario.write_text('name = "s"\n[target]\nurl = "http://127.0.0.1:9"\n[load]\nduration = "1s"\n')
    assert main(["capacity", str(scenario), "--slo", "fast please"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.startswith("loadtest: --slo") and err.count("\n") == 1


def test_a_finished_run_exits_by_interruption_then_gates():
    assert outcome_code(interrupted=True, gates_failed=True) == ExitCode.INTERRUPTED
    assert outcome_code(interrupted=False, gates_failed=True) == ExitCode.GATE_FAILED
    assert outcome_code(interrupted=False, gates_failed=False) == ExitCode.PASSED


@pytest.mark.parametrize(
    ("text", "below_one", "share"), [("5%", False, 0.05), ("0.05", False, 0.05), ("100%", False, 1.0), (0, True, 0.0)]
)
def test_parse_share_reads_percentages_and_fractions(text, below_one, share):
    assert parse_share(text, below_one=below_one) == pytest.approx(share)


@pytest.mark.parametrize(
    ("text", "below_one", "says"),
    [("five", False, "expected a share like 5% or 0.05"), ("101%", False, "between 0 and 100%"), ("1", True, "below")],
)
def test_parse_share_says_what_is_wrong(text, below_one, says):
    with pytest.raises(ValueError, match=says):
        parse_share(text, below_one=below_one)


def test_an_embedded_server_that_does_not_start_is_one_line_and_exit_3(monkeypatch):
    from loadtest.config.profile import load_profile
    from loadtest.engine import target
    from reference_server.errors import ReferenceServerError

    def fails(args):
        raise ReferenceServerError("reference server exited with 2:\nstarting\nreference-server: minilm is not built\n")

    monkeypatch.setattr(target, "start_server", fails)
    with pytest.raises(ServerStartError) as caught, target.embedded_server(load_profile("minilm-fp32")):
        pass
    assert str(caught.value) == (
        "profile minilm-fp32: the reference server did not start (exited with 2): reference-server: minilm is not built"
    )
    assert caught.value.exit_code == ExitCode.RUN_FAILED


def test_the_installed_command_and_python_m_loadtest_run_the_same_main(tmp_path):
    """The other tests call ``main`` in-process; here the interpreter a user starts, both ways."""
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[load]\nduration = "soon"\n')
    console_script = Path(sys.executable).with_name("loadtest")
    for command in ([sys.executable, "-m", "loadtest"], [str(console_script)]):
        shown = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0 and shown.stdout.startswith("usage: loadtest"), shown.stderr
        refused = subprocess.run([*command, "run", str(bad)], capture_output=True, text=True, timeout=60)
        assert refused.returncode == ExitCode.USAGE, refused.stderr
        assert "load.duration" in refused.stderr and "Traceback" not in refused.stderr
