"""A request's body, read within the size limit, and its content type, checked before it is read."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request

from .errors import BadRequest, ClientGone, PayloadTooLarge, UnsupportedMediaType
from .protocol import HEADER_LENGTH

_ACCEPTED_MEDIA = ("application/json", "application/octet-stream")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise BadRequest(f"Content-Length must be a number, got {declared[:40]!r}")
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body is {declared} bytes; this server accepts at most {limit}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds {limit} bytes, the most this server accepts")
            chunks.append(chunk)
    except ClientDisconnect:  # not a server error (no traceback in the log): a 499 that goes nowhere
        raise ClientGone(f"the client disconnected after {size} bytes of the body") from None
    return b"".join(chunks)


def check_content_type(request: Request) -> None:
    content_type = request.headers.get("content-type")
    if content_type is None:
        return  # tritonclient and many scripts send none
    media = content_type.split(";")[0].strip().lower()
    if media in _ACCEPTED_MEDIA or media.endswith("+json"):
        return
    raise UnsupportedMediaType(
        f"content-type '{media}' is not accepted; send application/json "
        f"(or application/octet-stream with {HEADER_LENGTH} for binary tensors)"
    )


__all__ = ["check_content_type", "read_body"]
