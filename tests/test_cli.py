"""The command line: every command's help prints, options mean the same everywhere, bad values are one line
and exit 2, a run that never started leaves no directory, and the exit codes are one table."""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.analysis.cost import ForecastError
from loadtest.cli import build_parser, main
from loadtest.commands import options
from loadtest.errors import MEANINGS, ExitCode, LoadTestError, ServerStartError, outcome_code
from loadtest.gates.thresholds import GateError
from loadtest.units import parse_duration, parse_rate, parse_share
from reference_server import cli as reference_cli
from tests.captures import times_for, write_jsonl
from tests.helpers import REPO, loadtest, scenario

EXPECTED = {"run", "replay", "capacity", "compare", "cost", "report", "export", "gate", "probe"}
CAPACITY = REPO / "tests" / "fixtures" / "capacity"
NOWHERE = "http://127.0.0.1:9"  # nothing listens on the discard port


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands a parser knows, read from the parser itself, so a new one is never missed."""
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(subparsers.choices)


def registered_commands() -> list[str]:
    return list(subcommands(build_parser()))


def command_options() -> list[tuple[str, argparse.Action]]:
    """Every (command, option) of ``loadtest``, help and hidden aliases left out."""
    return [
        (name, action)
        for name, sub in subcommands(build_parser()).items()
        for action in sub._actions
        if action.option_strings and action.help != argparse.SUPPRESS and action.dest != "help"
    ]


def positionals(command: str) -> list[str]:
    """Placeholder values for the command's positional arguments: enough to reach its options."""
    sub = subcommands(build_parser())[command]
    return ["x" for a in sub._actions if not a.option_strings and a.nargs not in ("?", "*")]


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


def reference_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        reference_cli.main(argv)
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_reference_server_help_lists_every_subcommand(capsys):
    text = reference_help(["--help"], capsys)
    assert text.startswith("usage: reference-server")
    for command in subcommands(reference_cli.build_parser()):
        assert command in text


@pytest.mark.parametrize("command", list(subcommands(reference_cli.build_parser())))
def test_every_reference_server_subcommand_prints_its_help(command, capsys):
    assert reference_help([command, "--help"], capsys).startswith(f"usage: reference-server {command}")


def test_the_installed_reference_server_prints_its_help():
    shown = subprocess.run(
        [str(Path(sys.executable).with_name("reference-server")), "--help"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0 and shown.stdout.startswith("usage: reference-server"), shown.stderr


# -- options mean the same everywhere ------------------------------------------------------------


def test_a_required_scenario_is_positional_in_every_command():
    """run, capacity and compare take ``SCENARIO`` first; where a scenario is optional (replay, probe) it is
    ``--scenario``."""
    positional = set()
    for name, sub in subcommands(build_parser()).items():
        for action in sub._actions:
            if action.dest == "scenario" and action.option_strings:
                assert not action.required, f"{name}: a required scenario is an option"
            elif action.dest == "scenario":
                positional.add(name)
                assert sub._actions[1] is action, f"{name}: the scenario is not the first argument"
    assert positional == {"run", "capacity", "compare"}


def test_compare_takes_the_scenario_first_and_every_profile_after_it():
    args = build_parser().parse_args(["compare", "scenarios/queries.toml", "minilm-fp32", "minilm-int8"])
    assert args.scenario == Path("scenarios/queries.toml") and args.profiles == ["minilm-fp32", "minilm-int8"]


def test_compare_still_reads_the_old_scenario_option_with_a_warning():
    scenario = str(REPO / "scenarios" / "queries.toml")
    result = loadtest("compare", "minilm-int8", "no-such-profile", "--scenario", scenario)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "deprecated" in result.stderr and "no-such-profile" in result.stderr  # read as the second profile


def test_an_option_has_one_meaning_in_every_command():
    """The same option name takes the same kind of value everywhere: --resolution is never a fraction in one
    command and a duration in another, --rate is a rate wherever it appears."""
    kinds: dict[str, dict] = {}
    for name, action in command_options():
        for flag in action.option_strings:
            kinds.setdefault(flag, {})[name] = action.type
    differing = {flag: by for flag, by in kinds.items() if len(set(by.values())) > 1}
    assert differing == {}
    assert {kinds["--resolution"][c] for c in kinds["--resolution"]} == {options.fraction}
    assert set(kinds["--rate"].values()) == {options.rate}


def test_profile_is_a_deployment_profile_in_every_command():
    helps = {name: action.help for name, action in command_options() if "--profile" in action.option_strings}
    assert {"run", "replay", "capacity", "probe", "cost"} <= set(helps)
    for name, text in helps.items():
        assert "deployment profile" in text, name


def test_cost_prices_managed_endpoints_with_managed_and_refuses_them_as_profile(tmp_path):
    managed, forecast = str(CAPACITY / "managed.toml"), "mean=10/s peak=2x"
    priced = loadtest("cost", str(CAPACITY / "hand-100"), "--managed", managed, "--forecast", forecast,
                      "--out", str(tmp_path / "cost"))  # fmt: skip
    assert priced.returncode == 0, priced.stderr
    assert (tmp_path / "cost" / "cost.json").exists()
    refused = loadtest("cost", str(CAPACITY / "hand-100"), "--profile", managed, "--forecast", forecast,
                       "--out", str(tmp_path / "other"))  # fmt: skip
    assert refused.returncode == ExitCode.USAGE
    assert "--profile: no capacity result measures 'managed'" in refused.stderr and "--managed" in refused.stderr


# -- rates, and values out of range --------------------------------------------------------------


@pytest.mark.parametrize(("text", "per_second"), [("20", 20.0), ("20/s", 20.0), ("1200/m", 20.0), ("72000/h", 20.0)])
def test_rate_takes_a_number_or_a_rate_per_second_minute_or_hour(text, per_second):
    for name, action in command_options():
        if "--rate" in action.option_strings:
            args = build_parser().parse_args([name, *positionals(name), "--rate", text])
            assert args.rate == pytest.approx(per_second), name


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (-5, "a rate cannot be negative"),
        ("-5/s", "a rate cannot be negative"),
        (math.nan, "a rate must be a finite number"),
        ("20/d", "expected a rate like 20, 20/s or 1200/m"),
        ("", "expected a rate"),
    ],
)
def test_parse_rate_says_what_is_wrong(value, says):
    with pytest.raises(ValueError, match=says):
        parse_rate(value)


@pytest.mark.parametrize(
    ("value", "says"),
    [(-1, "cannot be negative"), ("-2s", "cannot be negative"), (math.nan, "finite"), ("", "expected a duration")],
)
def test_parse_duration_refuses_negative_nan_and_empty(value, says):
    with pytest.raises(ValueError, match=says):
        parse_duration(value)


NUMERIC = {
    options.duration: True,  # zero allowed: a window, a wait that may be none
    options.non_negative_number: True,  # --sample-hz 0 turns the sampler off
    options.count_or_zero: True,  # --agreement 0 skips it
    options.share: True,
    options.fraction: True,
    options.positive_duration: False,
    options.positive_number: False,
    options.rate: False,
    options.count: False,
}


def numeric_options() -> list[tuple[str, str, bool]]:
    found = [(name, a.option_strings[-1], NUMERIC[a.type]) for name, a in command_options() if a.type in NUMERIC]
    assert {"--rate", "--duration", "--users", "--processes", "--speed", "--timeout"} <= {flag for _, flag, _ in found}
    return found


@pytest.mark.parametrize(("command", "flag", "zero_allowed"), numeric_options())
def test_a_negative_nan_or_empty_number_is_one_line_and_exit_2(command, flag, zero_allowed, capsys):
    # In-process: argparse refuses the value before the command does anything (one subprocess below
    # shows the installed command prints the same).
    values = ["-1", "nan", "inf", ""] + ([] if zero_allowed else ["0"])
    for value in values:
        with pytest.raises(SystemExit) as exited:
            main([command, *positionals(command), f"{flag}={value}"])
        err = capsys.readouterr().err
        assert exited.value.code == ExitCode.USAGE, (flag, value, err)
        assert err.count("\n") == 1 and f"argument {flag}" in err, err
        assert err.startswith(f"loadtest {command}: ") and "Traceback" not in err


def test_the_installed_command_refuses_a_bad_number_in_one_line():
    result = loadtest("run", "x", "--rate=-5")
    assert result.returncode == ExitCode.USAGE and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("loadtest run: argument --rate") and "Traceback" not in result.stderr


def test_a_negative_duration_is_read_as_a_value_not_an_unknown_option():
    result = loadtest("run", "x.toml", "--duration", "-5s")
    assert result.returncode == ExitCode.USAGE
    assert "argument --duration: a duration cannot be negative, got '-5s'" in result.stderr


@pytest.mark.parametrize(
    ("flag", "key", "toml", "says"),
    [
        ("--duration", "load.duration", 'duration = "-5s"', "a duration cannot be negative, got '-5s'"),
        ("--duration", "load.duration", 'duration = "0s"', "must be above 0, got 0"),
        ("--duration", "load.duration", "duration = nan", "a duration must be a finite number of seconds, got nan"),
    ],
)
def test_a_bad_value_gets_the_same_message_from_the_command_line_and_from_toml(tmp_path, flag, key, toml, says):
    value = toml.split(" = ")[1].strip('"')
    from_cli = loadtest("run", "x.toml", f"{flag}={value}")
    path = tmp_path / "s.toml"
    path.write_text(f'name = "s"\n[target]\nurl = "{NOWHERE}"\n[load]\n{toml}\n')
    from_toml = loadtest("run", str(path), "--out", str(tmp_path / "out"))
    assert from_cli.returncode == from_toml.returncode == ExitCode.USAGE
    assert f"argument {flag}: {says}" in from_cli.stderr
    assert f"{path}: {key}: {says}" in from_toml.stderr and from_toml.stderr.count("\n") == 1


def test_a_nan_rate_in_a_scenario_is_refused(tmp_path):
    path = scenario(tmp_path, 'shape = { kind = "constant", value = nan }\nduration = "1s"', f'url = "{NOWHERE}"')
    result = loadtest("run", str(path))
    assert result.returncode == ExitCode.USAGE
    assert "load.shape.value: must be a finite number, got nan" in result.stderr


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


# -- a run that never started leaves no directory ------------------------------------------------


def unreachable(tmp_path: Path, command: str) -> list[str]:
    """The arguments of ``command`` against a target nothing listens on."""
    path = scenario(tmp_path, 'shape = { kind = "constant", value = 5 }\nduration = "1s"', f'url = "{NOWHERE}"')
    if command == "replay":
        capture = write_jsonl(tmp_path / "capture.jsonl", times_for([3, 3]))
        return ["replay", str(capture), "--target", NOWHERE]
    return [command, str(path)]


@pytest.mark.parametrize("command", ["run", "replay", "capacity"])
def test_an_unreachable_target_leaves_no_results_directory(tmp_path, command):
    out = tmp_path / "results" / "out"
    result = loadtest(*unreachable(tmp_path, command), "--out", str(out))
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert "127.0.0.1:9" in result.stderr
    assert not out.exists()


def test_an_out_directory_that_was_there_is_kept_when_the_run_cannot_start(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = loadtest(*unreachable(tmp_path, "replay"), "--out", str(out))
    assert result.returncode == ExitCode.USAGE
    assert (out / "notes.txt").read_text() == "mine"


# -- exit codes ----------------------------------------------------------------------------------


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
        for code in ExitCode:  # the exit-code table, as a user's `loadtest --help` prints it
            assert f"  {code.value:<4} {MEANINGS[code]}" in shown.stdout
        refused = subprocess.run([*command, "run", str(bad)], capture_output=True, text=True, timeout=60)
        assert refused.returncode == ExitCode.USAGE, refused.stderr
        assert "load.duration" in refused.stderr and "Traceback" not in refused.stderr
