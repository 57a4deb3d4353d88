"""Refuse an inference request before its body is read when its model is already past its queue time limit.

At ten times a server's capacity, nine requests in ten are refused. Refused after the body is read,
parsed and tokenised and the route found, each refusal costs the event loop about as much as
admitting it, on the core that also runs the model: the loop falls behind, requests wait in socket
buffers where no queue time limit can see them, and admitted ones took 5 to 9 s with a 1 s limit
(``benchmarks/overload.py``, short texts). The expected wait does not depend on the body, so it is
checked here, as the request arrives, for the OIP infer route; the handler checks again with the
request's real row count (``Batcher.submit``).
"""

from __future__ import annotations

import time

from starlette.responses import JSONResponse

from .errors import Overloaded


class EarlyRefusal:
    """Pure ASGI, in front of Starlette's routing: a 503 with Retry-After, counted like the handler's own."""

    def __init__(self, app, state) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send) -> None:
        name = _infer_model(scope)
        batcher = self.state.batchers.get(name) if name else None
        if batcher is not None:
            started = time.perf_counter()
            try:
                batcher.admit(1)
            except Overloaded as exc:  # counted here; one let through is counted once, by its handler
                self.state.metrics.count(name, "infer", exc.status, time.perf_counter() - started)
                refusal = JSONResponse({"error": str(exc)}, status_code=exc.status, headers=exc.headers)
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _infer_model(scope) -> str | None:
    """The model of ``POST /v2/models/{name}[/versions/{v}]/infer``; None for any other request."""
    if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith("/infer"):
        return None
    parts = scope["path"].split("/")  # "", "v2", "models", name, ["versions", v,] "infer"
    if parts[1:3] != ["v2", "models"] or len(parts) not in (5, 7) or (len(parts) == 7 and parts[4] != "versions"):
        return None
    return parts[3]
