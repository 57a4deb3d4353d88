"""A minimal OIP-shaped endpoint (raw ASGI on uvicorn), fast enough that the load generator is the bottleneck.

Run: python benchmarks/fast_endpoint.py PORT [CPU]. It answers every POST with a fixed small
``outputs`` body and a Server-Timing header, after reading the request body.
"""

import sys

import psutil
import uvicorn

BODY = (
    b'{"model_name":"fast","inputs":[{"name":"features","datatype":"FP32","shape":[-1,8]}],'
    b'"outputs":[{"name":"y","datatype":"FP32","shape":[1,2],"data":[0.25,0.75]}]}'
)
HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
    (b"server-timing", b"queue;dur=0.010, infer;dur=0.020, batch;desc=1"),
]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    if len(sys.argv) > 2:
        psutil.Process().cpu_affinity([int(sys.argv[2])])
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        http="httptools",
        loop="uvloop",
        lifespan="off",
    )
