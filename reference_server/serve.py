"""Run the app under uvicorn: pin the process first, then load models, bind, and serve until SIGTERM.

uvicorn's own shutdown lets in-flight requests finish on SIGTERM; the app's lifespan then drains
the batch queues. gRPC (``--grpc-port``) stops taking calls at the moment HTTP stops taking
connections, and its calls in flight finish too, before the queues drain. A request's headers
must arrive within the header timeout (``--header-timeout``, 5 s) and 64 KiB
(``header_limits.py``), and an idle keep-alive connection is closed after uvicorn's
``timeout_keep_alive`` (5 s).
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import uvicorn

from .app import GRACEFUL_SHUTDOWN_S, create_app
from .capture import loose_mode
from .config import ServerConfig
from .header_limits import header_limits_protocol

if TYPE_CHECKING:  # grpc is imported only by a server that serves it
    from .grpc_server import GrpcEndpoint


def pin_to_cpus(cpus: tuple[int, ...]) -> None:
    """Pin this process before ORT creates its threads: threads inherit the mask they are born with."""
    psutil.Process().cpu_affinity(list(cpus))


class _Server(uvicorn.Server):
    """uvicorn's server, which begins gRPC's graceful stop when it begins its own (the lifespan waits for both)."""

    def __init__(self, config: uvicorn.Config, grpc: GrpcEndpoint | None) -> None:
        super().__init__(config)
        self.grpc = grpc

    async def shutdown(self, sockets=None) -> None:
        stopping = asyncio.ensure_future(self.grpc.stop(GRACEFUL_SHUTDOWN_S)) if self.grpc else None
        try:
            await super().shutdown(sockets)
        finally:
            if stopping:
                await stopping


async def _serve(config: ServerConfig, ready_file: Path | None, log_level: str, access_log: bool) -> None:
    protocol = header_limits_protocol(config.header_timeout_s)
    app = create_app(config)
    grpc: GrpcEndpoint | None = app.state.grpc
    server = _Server(
        uvicorn.Config(
            app,
            host=config.host,
            port=config.port,
            http=protocol,
            log_level=log_level,
            access_log=access_log,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            lifespan="on",
            proxy_headers=False,  # nothing reads the client's address: one ASGI layer fewer a request
        ),
        grpc,
    )
    # uvicorn re-raises the signal it caught once shutdown is done; a no-op handler underneath turns
    # a graceful SIGTERM into exit status 0 rather than death by signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving  # surfaces a bind error
            return
        await asyncio.sleep(0.01)
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    batching = config.batching
    batch = (
        f"batch<={batching.max_batch_size}, delay {batching.max_queue_delay_ms}ms"
        if batching.enabled
        else "no batching"
    )
    over_grpc = f", OIP v2 over gRPC on {grpc.target}" if grpc else ""
    print(
        f"serving {', '.join(config.models)} ({config.variant}) on {url}: OIP v2 under /v2, "
        f"OpenAI under /v1, metrics at /metrics{over_grpc}; {config.session.intra_op_threads} intra-op thread(s), "
        f"{batch}",
        flush=True,
    )
    for name, model in app.state.server.generative.items():
        g, cache = config.generation, model.generator.scheduler.cache
        print(
            f"generating with {name}: /v1/chat/completions and /v1/completions; {g.max_streams} streams of up to "
            f"{g.max_context} tokens (KV cache {cache.nbytes / 2**20:.0f} MiB), "
            f"{g.max_waiting} waiting at most, prefill {g.max_prefill_tokens} tokens an iteration",
            flush=True,
        )
    if config.capture:
        share = "all requests" if config.capture_sample >= 1.0 else f"a deterministic {config.capture_sample:g} sample"
        print(f"capturing {share} to {config.capture} (JSONL; health checks and /metrics are not recorded)", flush=True)
        if mode := loose_mode(config.capture):
            print(
                f"warning: {config.capture} has mode {mode:o}, open to others than its owner; "
                "it records headers as sent, credentials included",
                flush=True,
            )
    if ready_file:
        tmp = ready_file.with_suffix(".tmp")
        ready = {"url": url, "pid": psutil.Process().pid, **({"grpc": grpc.target} if grpc else {})}
        tmp.write_text(json.dumps(ready))
        tmp.rename(ready_file)  # atomic: a reader never sees half a file
    await serving


def serve(
    config: ServerConfig, ready_file: Path | None = None, log_level: str = "warning", access_log: bool = False
) -> None:
    if config.cpus:
        pin_to_cpus(config.cpus)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve(config, ready_file, log_level, access_log))


def _loop_factory():
    try:
        import uvloop
    except ImportError:  # uvloop is optional: the stdlib loop works, a little slower
        return None
    return uvloop.new_event_loop
