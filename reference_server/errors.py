"""One exception hierarchy for the server; each carries the HTTP status it is answered with."""

from __future__ import annotations


class ReferenceServerError(Exception):
    """Base of every error the server or its build raises on purpose."""


class BuildError(ReferenceServerError):
    """Building the models failed (download, checksum, export)."""


class ModelsMissing(ReferenceServerError):
    """The models directory lacks a built model; the message says how to build it."""


class RequestError(ReferenceServerError):
    """A request the server refuses; answered as ``{"error": message}`` with ``status``."""

    status = 400

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = headers or {}


class BadRequest(RequestError):
    status = 400


class NotFound(RequestError):
    status = 404


class PayloadTooLarge(RequestError):
    status = 413


class UnsupportedMediaType(RequestError):
    status = 415


class Overloaded(RequestError):
    """The batch queue is full, or too slow to wait for (the queue time limit): back off and retry."""

    status = 503


class ClientGone(RequestError):
    """The client disconnected before its answer was ready: nginx's 499, counted in metrics, sent to nobody."""

    status = 499
