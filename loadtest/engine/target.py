"""The embedded target: the reference server started for a deployment profile, and stopped after.

Every command that measures a profile without a target URL (run, replay, capacity, compare,
probe, output agreement) starts it the same way, so a server that does not start fails each of
them with the same one line and exit code (``ServerStartError``, exit 3) instead of a traceback or
a page of server log. The log stays in the server's work directory; the message names its reason.

A scenario over gRPC (``oip-v2-grpc``) gets the same server serving gRPC beside REST (``--grpc-port``,
on a free port), and targets ``grpc_url``; its REST URL still gives ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

from loadtest.config.profile import Profile
from loadtest.errors import ServerStartError
from reference_server.errors import ReferenceServerError
from reference_server.launch import RunningServer, start_server, wants_grpc


def grpc_url(server: RunningServer) -> str:
    """The embedded server's gRPC endpoint as a target URL: ``grpc://127.0.0.1:PORT``."""
    if server.grpc_target is None:
        raise ServerStartError(  # run, capacity and compare start it with gRPC for such a scenario
            "the reference server serves no gRPC for this oip-v2-grpc scenario: it was started without --grpc-port"
        )
    return f"grpc://{server.grpc_target}"


@contextmanager
def embedded_server(profile: Profile, console: Console | None = None, grpc: bool = False) -> Iterator[RunningServer]:
    """The profile's reference server, running until the block ends; says so on ``console`` when one is given.

    ``grpc``: it serves OIP v2 over gRPC too, on a free port (``RunningServer.grpc_target``).
    """
    if console is not None:
        console.print(
            f"starting the reference server: profile {profile.name} "
            f"({profile.model} {profile.variant}, {profile.server.threads} thread(s))",
            markup=False,  # a profile's name is the user's text
        )
    try:
        args = profile.server_args()
        if grpc and not wants_grpc(args):  # a profile may ask for it already (``[server] grpc_port``)
            args += ["--grpc-port", "0"]  # start_server gives it a free port
        server = start_server(args)
    except ReferenceServerError as exc:
        raise ServerStartError(start_failure(profile.name, exc)) from None
    try:
        yield server
    finally:
        server.stop()


def start_failure(profile_name: str, exc: ReferenceServerError) -> str:
    """One line: what happened ("exited with 2") and the last thing the server said (its reason)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    what = lines[0].rstrip(":").removeprefix("reference server ") if lines else type(exc).__name__
    reason = f": {lines[-1]}" if len(lines) > 1 else ""
    return f"profile {profile_name}: the reference server did not start ({what}){reason}"
