"""Fail fast, with one clear line, when the target cannot take the run.

Before any load: is the target on loopback (or explicitly allowed elsewhere), does it answer,
does it speak the scenario's protocol, and does one real request of the scenario succeed? Over gRPC
(``oip-v2-grpc``) the questions are gRPC's: ServerReady, ModelReady, then one ModelInfer.

Redirects are not followed, here as in the run (``engine.users``): the loopback guard judges the
URL given, and a redirect elsewhere is reported, never taken. Messages show the URL with its password
redacted (``replay.redact.redact_url``).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import httpx

from loadtest.errors import PreflightError
from loadtest.replay.redact import redact_url
from loadtest.traffic.payloads import PayloadPool
from loadtest.traffic.protocols import GRPC, Protocol


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except OSError:
            return False


def check_loopback(url: str, allow_remote: bool) -> None:
    if not allow_remote and not is_loopback(url):
        raise PreflightError(
            f"{redact_url(url)} is not a loopback address; pass --allow-remote to load-test another host"
        )


def reachable(url: str, allow_remote: bool = False, timeout: float = 10.0) -> None:
    """Replay's preflight: the target answers HTTP at all (a captured request is not sent twice)."""
    check_loopback(url, allow_remote)
    try:
        with httpx.Client(base_url=url, timeout=timeout) as client:
            client.get("/")
    except httpx.HTTPError as exc:
        raise PreflightError(f"cannot reach {redact_url(url)}: {exc}") from None


def preflight(
    url: str, protocol: Protocol, model: str, payloads: PayloadPool, allow_remote: bool = False, timeout: float = 10.0
) -> None:
    check_loopback(url, allow_remote)
    if protocol.name == GRPC:
        grpc_preflight(url, protocol, model, payloads, timeout)
        return
    shown = redact_url(url)
    with httpx.Client(base_url=url, timeout=timeout) as client:  # follows no redirect (httpx's default)
        try:
            if protocol.name == "oip-v2":
                ready = client.get("/v2/health/ready")
                if ready.status_code != 200:
                    raise PreflightError(f"{shown} is not ready: GET /v2/health/ready answered {_status(ready)}")
                meta = client.get(f"/v2/models/{model}")
                if meta.status_code != 200 or "inputs" not in _json(meta):
                    raise PreflightError(
                        f"{shown} does not serve model '{model}' over the Open Inference Protocol: "
                        f"GET /v2/models/{model} answered {_status(meta)}"
                    )
            payload = payloads.pick(0)
            answer = client.post(protocol.path, content=payload.body, headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            raise PreflightError(f"cannot reach {shown}: {exc}") from None
    if not 200 <= answer.status_code < 300:
        raise PreflightError(
            f"a {protocol.name} request to {shown}{protocol.path} answered {_status(answer)}: {answer.text[:200]}"
        )
    if not protocol.valid(answer.content):
        raise PreflightError(
            f"{shown}{protocol.path} answered 200 but not with a {protocol.name} body: {answer.text[:200]}"
        )


def grpc_preflight(url: str, protocol: Protocol, model: str, payloads: PayloadPool, timeout: float = 10.0) -> None:
    """ServerReady, ModelReady, then one ModelInfer of the scenario's that must succeed, over gRPC."""
    import grpc

    from loadtest.engine import grpc_client
    from reference_server.oip_grpc import oip_v2_pb2 as pb

    shown = redact_url(url)
    with grpc_client.open_channel(url) as channel:

        def ask(method: str, request, response_type):
            ask_one = channel.unary_unary(
                f"/inference.GRPCInferenceService/{method}",
                request_serializer=type(request).SerializeToString,
                response_deserializer=response_type.FromString,
            )
            try:
                return ask_one(request, timeout=timeout)
            except grpc.RpcError as exc:
                if grpc_client.status_kind(exc.code(), exc.details()) == grpc_client.CONNECTION:
                    raise PreflightError(f"cannot reach {shown}: {exc.details()}") from None
                raise PreflightError(f"{shown}: {method} answered {exc.code().name}: {exc.details()}") from None

        if not ask("ServerReady", pb.ServerReadyRequest(), pb.ServerReadyResponse).ready:
            raise PreflightError(f"{shown} is not ready: ServerReady answered ready = false")
        if not ask("ModelReady", pb.ModelReadyRequest(name=model), pb.ModelReadyResponse).ready:
            raise PreflightError(f"{shown} does not have model '{model}' ready: ModelReady answered ready = false")
        answer = grpc_client.call(grpc_client.infer_call(channel, protocol.path), payloads.pick(0).body, timeout)
    kind, _, _ = grpc_client.outcome(answer, protocol.valid)
    if kind == grpc_client.OK:
        return
    if kind == "invalid_body":
        raise PreflightError(f"{shown} answered ModelInfer OK but not with a ModelInferResponse that has outputs")
    details = answer.details() if isinstance(answer, grpc.RpcError) else ""
    raise PreflightError(f"a {protocol.name} request to {shown} got {grpc_client.status_name(answer)}: {details}")


def _status(response: httpx.Response) -> str:
    """The status, and for a redirect where it leads: redirects are not followed, so the user points elsewhere."""
    location = response.headers.get("location") if response.is_redirect else None
    if location is None:
        return str(response.status_code)
    return f"{response.status_code}, a redirect to {redact_url(location)} (redirects are not followed: target that URL)"


def _json(response: httpx.Response) -> dict:
    try:
        doc = response.json()
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
