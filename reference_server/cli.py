"""``reference-server``: build the models, serve them, or check a build end to end."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .batcher import BatchingConfig
from .config import ServerConfig, default_models_dir
from .errors import ReferenceServerError
from .generation import GenerationConfig
from .manifest import VARIANTS
from .models import SessionSettings


def _cpus(text: str) -> tuple[int, ...]:
    try:
        cpus = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--cpus takes core numbers like 0 or 0,1, got {text!r}") from None
    return cpus


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a port number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 0 to 65535, got {value}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a fraction like 0.1, got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, got {text}")
    return value


def _milliseconds(text: str) -> float:
    """A duration such as 500ms, 2s or 1.5 (seconds), in milliseconds."""
    number, scale = text.strip(), 1000.0
    if number.endswith("ms"):
        number, scale = number[:-2], 1.0
    elif number.endswith("s"):
        number = number[:-1]
    try:
        value = float(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a duration like 500ms or 2s, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a duration of 0 or more, like 500ms or 2s, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reference-server", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help=f"where built models live (default: $REFERENCE_SERVER_MODELS or {default_models_dir()})",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_build_parser(sub, common)
    _add_serve_parser(sub, common)
    _add_selftest_parser(sub, common)
    return parser


def _add_build_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    build = sub.add_parser(
        "build-models", parents=[common], help="download MiniLM's weights, export and quantise every model"
    )
    build.add_argument("--force", action="store_true", help="rebuild even if the build is current")


def _add_serve_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    serve = sub.add_parser("serve", parents=[common], help="serve models over the Open Inference Protocol (KServe V2)")
    serve.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="NAME",
        help="model to serve: minilm (default), fraud, or smollm2 (text generation); repeat for several",
    )
    serve.add_argument("--variant", choices=VARIANTS, default="fp32")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: loopback only)")
    serve.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
    serve.add_argument(
        "--grpc-port",
        type=_port,
        default=None,
        metavar="PORT",
        help="serve OIP v2 over gRPC too, on this port of the same host (0: any free port; default: REST only)",
    )
    serve.add_argument("--threads", type=_positive, default=1, help="ONNX Runtime intra-op threads (default 1)")
    serve.add_argument("--spin", action="store_true", help="let ORT threads spin while idle (lower latency, more CPU)")
    _add_batching_options(serve)
    _add_limit_options(serve)
    _add_generation_options(serve)
    serve.add_argument("--cpus", type=_cpus, default=None, help="pin the server to these cores, e.g. 0 or 0,1")
    _add_capture_options(serve)
    serve.add_argument(
        "--ready-file", type=Path, default=None, help="write {url, pid} (and grpc, with --grpc-port) here once serving"
    )
    serve.add_argument("--log-level", default="warning")
    serve.add_argument("--access-log", action="store_true")


def _add_batching_options(serve: argparse.ArgumentParser) -> None:
    """How requests are batched: ``BatchingConfig``."""
    serve.add_argument("--max-batch-size", type=_positive, default=32, help="rows per batch (default 32)")
    serve.add_argument(
        "--max-queue-delay-ms",
        type=float,
        default=0.0,
        help="longest a request waits for its batch to fill (default 0: under load batches fill while the "
        "previous one runs, so waiting only adds latency at low load)",
    )
    serve.add_argument("--no-batching", action="store_true", help="run every request alone (batch-1 serving)")
    serve.add_argument("--no-length-grouping", action="store_true", help="batch in arrival order only")
    serve.add_argument(
        "--max-padding-tokens",
        type=int,
        default=4,
        help="padding one request may add to a batch, in tokens (default 4: the best measured on the demo's "
        "traffic, see docs/reference-server.md; -1: no limit, fill batches whatever the padding)",
    )


def _add_limit_options(serve: argparse.ArgumentParser) -> None:
    """What the server refuses or changes: queue, body and row bounds, long text, and an injected delay."""
    serve.add_argument(
        "--max-queue-rows", type=_positive, default=512, help="queue bound; beyond it: 503 (default 512)"
    )
    serve.add_argument(
        "--max-queue-time",
        type=_milliseconds,
        default=1000.0,
        metavar="DURATION",
        help="longest a request may wait for its batch, e.g. 500ms or 2s (default 1s; 0: no limit): a request "
        "expected to wait longer is refused with 503 on arrival, one that waited longer is answered 503 "
        "without being computed",
    )
    serve.add_argument(
        "--max-body-bytes", type=_positive, default=8 * 1024 * 1024, help="beyond it: 413 (default 8 MiB)"
    )
    serve.add_argument("--max-rows", type=_positive, default=128, help="rows per request; beyond it: 400 (default 128)")
    serve.add_argument(
        "--header-timeout",
        type=_milliseconds,
        default=5000.0,
        metavar="DURATION",
        help="longest a request's line and headers may take to arrive, e.g. 2s (default 5s); then 408 and the "
        "connection is closed",
    )
    serve.add_argument(
        "--inject-delay-ms",
        type=float,
        default=0.0,
        help="sleep this long before every inference: a deliberately slowed server, to test regression gates",
    )
    serve.add_argument(
        "--long-text",
        choices=("truncate", "reject"),
        default="truncate",
        help="text over 256 tokens: truncate as the model was trained (default) or reject with 400",
    )


def _add_generation_options(serve: argparse.ArgumentParser) -> None:
    """How a text-generation model is scheduled: ``GenerationConfig``."""
    defaults = GenerationConfig()
    serve.add_argument(
        "--max-streams",
        type=_positive,
        default=defaults.max_streams,
        help=f"sequences generated together, each with its KV cache slot (default {defaults.max_streams})",
    )
    serve.add_argument(
        "--max-context",
        type=_positive,
        default=defaults.max_context,
        help="tokens a sequence may hold, prompt and completion together; a request asking for more is refused "
        f"with 400 (default {defaults.max_context})",
    )
    serve.add_argument(
        "--max-waiting",
        type=_positive,
        default=defaults.max_waiting,
        help=f"requests queued for a stream slot; beyond it: 503 (default {defaults.max_waiting})",
    )
    serve.add_argument(
        "--max-prefill-tokens",
        type=_positive,
        default=defaults.max_prefill_tokens,
        help="prompt tokens (padded) prefilled per scheduler iteration, so running streams wait for at most one "
        f"such prefill; longer prompts are prefilled in chunks (default {defaults.max_prefill_tokens})",
    )


def _add_capture_options(serve: argparse.ArgumentParser) -> None:
    """Recording the traffic for ``loadtest replay``."""
    serve.add_argument(
        "--capture",
        type=Path,
        default=None,
        metavar="FILE",
        help="append every request (but health checks and /metrics) to FILE as JSONL, for `loadtest replay`; "
        "the file holds headers as sent, credentials included",
    )
    serve.add_argument(
        "--capture-sample",
        type=_fraction,
        default=1.0,
        metavar="F",
        help="record this fraction of requests, 0 < F <= 1 (default 1: all); the choice is deterministic: "
        "the same sequence of requests gives the same sample every run",
    )


def _add_selftest_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    check = sub.add_parser(
        "selftest",
        parents=[common],
        help="start the server per variant, send real requests, print the answers",
    )
    check.add_argument("--model", default="minilm")
    check.add_argument("--variant", action="append", dest="variants", choices=VARIANTS)


def _server_config(args: argparse.Namespace, models_dir: Path) -> ServerConfig:
    return ServerConfig(
        models_dir=models_dir,
        models=tuple(args.models or ["minilm"]),
        variant=args.variant,
        host=args.host,
        port=args.port,
        grpc_port=args.grpc_port,
        session=SessionSettings(intra_op_threads=args.threads, spin=args.spin),
        batching=BatchingConfig(
            enabled=not args.no_batching,
            max_batch_size=args.max_batch_size,
            max_queue_delay_ms=args.max_queue_delay_ms,
            max_queue_rows=args.max_queue_rows,
            group_by_length=not args.no_length_grouping,
            max_padding_tokens=args.max_padding_tokens,
            max_queue_time_ms=args.max_queue_time,
        ),
        max_body_bytes=args.max_body_bytes,
        max_rows=args.max_rows,
        header_timeout_s=args.header_timeout / 1000,
        long_text=args.long_text,
        cpus=args.cpus,
        inject_delay_ms=args.inject_delay_ms,
        capture=args.capture,
        capture_sample=args.capture_sample,
        generation=GenerationConfig(
            max_streams=args.max_streams,
            max_context=args.max_context,
            max_waiting=args.max_waiting,
            max_prefill_tokens=args.max_prefill_tokens,
        ),
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve" and args.capture_sample != 1.0 and args.capture is None:
        parser.error("--capture-sample needs --capture FILE")
    if args.command == "serve" and args.header_timeout <= 0:
        parser.error("--header-timeout must be above 0, e.g. 5s")
    models_dir = args.models_dir or default_models_dir()
    try:
        config = _server_config(args, models_dir) if args.command == "serve" else None
    except ValueError as exc:  # settings that contradict each other
        parser.error(f"--max-queue-time: {exc}")
    try:
        if args.command == "build-models":
            from .build import build_models

            build_models(models_dir, force=args.force, progress=lambda msg: print(msg, flush=True))
        elif args.command == "serve":
            from .serve import serve

            serve(config, args.ready_file, args.log_level, args.access_log)
        else:
            from .selftest import selftest

            return selftest(models_dir, args.model, tuple(args.variants or ["fp32", "int8"]))
    except ReferenceServerError as exc:
        print(f"reference-server: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
