"""``loadtest probe``: every messy kind sent once, without load, each answer judged; a CI gate of its own.

The command line only; the probe itself is ``loadtest.commands.prober.probe``, imported when the
command runs, so ``loadtest --help`` does not load httpx, numpy or the messy kinds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from loadtest.commands.options import add_allow_remote, output_file, positive_duration, results_dir
from loadtest.errors import ConfigError

DESCRIPTION = """\
Send every messy kind once, one request at a time and without load: the malformed, edge-case and
hostile requests built for the scenario's protocol and payload, and its [messy] custom kinds. Each
answer gets a verdict: correct; wrong (a 200 for garbage, a 4xx for valid text); or defect (a 5xx,
a timeout, a broken connection). Writes probe.json and probe.md, never the bodies sent.

Exit codes: 0 every kind correct (or only wrong ones, with --allow-wrong); 1 a defect, or a wrong
verdict without --allow-wrong; 2 a usage or configuration error, an unreachable target, or a clean
request that fails."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "probe",
        help="send every messy kind once, without load, and judge each answer (a CI gate)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DESCRIPTION,
    )
    parser.add_argument(
        "target",
        nargs="?",
        help="endpoint base URL; omitted: the scenario's url, else the reference server started with the profile",
    )
    parser.add_argument(
        "--target", dest="target_option", metavar="URL", help="the same as TARGET, as in run and replay"
    )
    parser.add_argument(
        "--scenario", type=Path, help="scenario TOML: protocol, model, payload, [messy] (default: OIP v2, minilm, text)"
    )
    parser.add_argument("--profile", help="deployment profile for the embedded server (default: the scenario's)")
    parser.add_argument("--timeout", type=positive_duration, default=5.0, help="per request, e.g. 2s (default 5s)")
    parser.add_argument(
        "--kind", action="append", default=[], metavar="KIND", help="probe only this kind (repeatable; default: all)"
    )
    parser.add_argument("--allow-wrong", action="store_true", help="fail on defects only, not on wrong verdicts")
    add_allow_remote(parser)
    parser.add_argument("--junit", type=output_file, help="write one JUnit test case per kind to this file")
    parser.add_argument("--out", type=results_dir, help="results directory (default results/<time>-probe)")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace, console: Console) -> int:
    from loadtest.commands.prober import ProbeOptions, probe

    if args.target and args.target_option and args.target != args.target_option:
        raise ConfigError("--target", None, f"two targets given: {args.target} and {args.target_option}")
    options = ProbeOptions(
        target=args.target or args.target_option,
        scenario=args.scenario,
        profile=args.profile,
        timeout=args.timeout,
        kinds=tuple(args.kind),
        allow_wrong=args.allow_wrong,
        allow_remote=args.allow_remote,
        junit=args.junit,
        out=args.out,
    )
    return probe(options, console)
