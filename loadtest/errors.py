"""One exception hierarchy for the harness; the CLI turns each into one line and an exit code."""

from __future__ import annotations


class LoadTestError(Exception):
    """Base of every error the harness raises on purpose."""

    exit_code = 3


class ConfigError(LoadTestError):
    """A scenario, profile or option is wrong; the message names the file and the key."""

    exit_code = 2

    def __init__(self, source: str, key: str | None, message: str) -> None:
        where = f"{source}: {key}: " if key else f"{source}: "
        super().__init__(where + message)
        self.source, self.key = source, key


class PreflightError(LoadTestError):
    """The target is unreachable or does not speak the scenario's protocol."""

    exit_code = 2


class RunError(LoadTestError):
    """The run itself failed (the load generator crashed, the server died)."""

    exit_code = 3
