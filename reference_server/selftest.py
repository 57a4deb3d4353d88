"""``reference-server selftest``: start the real server for each variant and send real requests.

What ``make demo`` runs until the load engine exists: it proves on a fresh machine that the models
build, load and answer over HTTP, and shows what the answers look like.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np

from .launch import running_server

SENTENCES = ["How do I reset my password?", "I forgot my login credentials.", "The weather is lovely today."]
TRANSACTION = [4.2, 3.0, 0.7, 3.1, 6.0, 2.0, 1.0, 2.5]


def _payload(model: str) -> dict:
    if model == "minilm":
        return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(SENTENCES)], "data": SENTENCES}]}
    return {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, len(TRANSACTION)], "data": TRANSACTION}]}


def selftest(models_dir: Path, model: str, variants: tuple[str, ...]) -> int:
    answers = {}
    for variant in variants:
        args = ["--models-dir", str(models_dir), "--model", model, "--variant", variant]
        started = time.perf_counter()
        with running_server(args) as server, httpx.Client(base_url=server.url, timeout=30) as client:
            up = time.perf_counter() - started
            meta = client.get(f"/v2/models/{model}").json()
            client.post(f"/v2/models/{model}/infer", json=_payload(model))  # warm-up
            sent = time.perf_counter()
            response = client.post(f"/v2/models/{model}/infer", json=_payload(model))
            took = (time.perf_counter() - sent) * 1000
            response.raise_for_status()
            output = response.json()["outputs"][0]
            values = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
            answers[variant] = values
            print(f"{model} {variant}: ready in {up:.1f}s at {server.url}; inputs {meta['inputs']}")
            print(
                f"  POST /v2/models/{model}/infer -> {response.status_code} in {took:.1f} ms, "
                f"{output['name']} {output['datatype']} {output['shape']}"
            )
            print(f"  Server-Timing: {response.headers['server-timing']}")
            if model == "minilm":
                similarity = values @ values.T
                print(
                    f"  cosine('{SENTENCES[0]}', '{SENTENCES[1]}') = {similarity[0, 1]:.3f}; "
                    f"vs '{SENTENCES[2]}' = {similarity[0, 2]:.3f}"
                )
            else:
                print(f"  P(fraud) = {values[0, 1]:.3f}")
    if model == "minilm" and {"fp32", "int8"} <= answers.keys():
        agreement = (answers["fp32"] * answers["int8"]).sum(axis=1)
        print(f"int8 vs fp32 cosine on these sentences: mean {agreement.mean():.4f}, min {agreement.min():.4f}")
    return 0
