"""One exception hierarchy and one table of exit codes; the CLI turns each error into one line and its code."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What ``loadtest`` exits with; every command returns one of these, never a bare number."""

    PASSED = 0
    GATE_FAILED = 1
    USAGE = 2
    RUN_FAILED = 3
    UNTRUSTED = 4
    INTERRUPTED = 130


MEANINGS = {
    ExitCode.PASSED: "the run completed and every gate passed",
    ExitCode.GATE_FAILED: "a gate failed (threshold or baseline regression)",
    ExitCode.USAGE: "a usage or input error (scenario, profile, options, thresholds, baseline, unreachable target)",
    ExitCode.RUN_FAILED: "the run itself failed: the target stopped answering, over 10% of requests failed in transit, "
    "or a load-generator worker was lost (one line says which; the results are still written); "
    "or its results could not be written (no space left on device; what was written is whole)",
    ExitCode.UNTRUSTED: "--strict: the run is not trustworthy (its load generator was late, starved or lost)",
    ExitCode.INTERRUPTED: "interrupted by Ctrl-C, SIGTERM or SIGHUP "
    "(the results directory still holds what was measured; gates are not checked)",
}


def exit_code_table() -> str:
    """The table ``loadtest --help`` prints, one code a line."""
    return "exit codes:\n" + "\n".join(f"  {code.value:<4} {meaning}" for code, meaning in MEANINGS.items())


def outcome_code(
    interrupted: bool, gates_failed: bool, *, untrusted: bool = False, run_failed: bool = False
) -> ExitCode:
    """A finished run's code: an interruption wins (its gates were not checked), then a failed run (its
    gates are not what decides), then a failed gate, then (``untrusted``: the run is not trustworthy and
    ``--strict`` was given) an untrusted run."""
    if interrupted:
        return ExitCode.INTERRUPTED
    if run_failed:
        return ExitCode.RUN_FAILED
    if gates_failed:
        return ExitCode.GATE_FAILED
    return ExitCode.UNTRUSTED if untrusted else ExitCode.PASSED


class LoadTestError(Exception):
    """Base of every error the harness raises on purpose."""

    exit_code = ExitCode.RUN_FAILED


class ConfigError(LoadTestError):
    """A scenario, profile or option is wrong; the message names the file and the key."""

    exit_code = ExitCode.USAGE

    def __init__(self, source: str, key: str | None, message: str) -> None:
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + message)
        self.source, self.key = source, key


class PreflightError(LoadTestError):
    """The target is unreachable or does not speak the scenario's protocol."""

    exit_code = ExitCode.USAGE


class RunError(LoadTestError):
    """The run itself failed (the load generator crashed, the server died)."""

    exit_code = ExitCode.RUN_FAILED


class DiskFull(RunError):
    """A results file could not be written for want of space (or a file-size limit); those written before are whole."""


class ServerStartError(RunError):
    """The embedded reference server did not start; the message is one line, the server's log has the rest."""


class MetricsUnavailable(LoadTestError):
    """A target's Prometheus ``/metrics`` could not be read or parsed; readers fall back, never fail the run."""
