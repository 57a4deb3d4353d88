"""A user's own messy kinds, from a JSONL file: each line a body and the outcome a sound endpoint gives."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import orjson

from loadtest.errors import ConfigError
from loadtest.messy.kinds import EITHER, EXPECTS, KINDS, MessyRequest
from loadtest.traffic.lines import MAX_LINE_BYTES
from loadtest.traffic.payloads import json_objects


def read_custom(path: Path, max_line: int = MAX_LINE_BYTES) -> dict[str, list[MessyRequest]]:
    """A user's kinds: JSONL lines of ``{"kind", "expect", "body" | "body_base64", "content_type"}``.

    A line over ``max_line`` bytes (the scenario's ``payload.max_line_bytes``) is refused, not read whole.
    """
    kinds: dict[str, list[MessyRequest]] = {}
    for where, doc in json_objects(path, "messy kinds file", max_line):
        name, expect = doc.get("kind"), doc.get("expect", EITHER)
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(where, "kind", "must be a name of letters, digits, _ and -")
        if name in KINDS:
            raise ConfigError(where, "kind", f"{name!r} is a built-in kind; name yours differently")
        if expect not in EXPECTS:
            raise ConfigError(where, "expect", f"must be one of {', '.join(EXPECTS)}, got {expect!r}")
        if "body_base64" in doc:
            try:
                body = base64.b64decode(str(doc["body_base64"]), validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError(where, "body_base64", "is not valid base64") from None
        elif "body" in doc:
            body = orjson.dumps(doc["body"])
        else:
            raise ConfigError(where, None, "needs 'body' (JSON) or 'body_base64' (exact bytes)")
        content_type = doc.get("content_type", "application/json")
        if not isinstance(content_type, str):
            raise ConfigError(where, "content_type", "must be a string")
        kinds.setdefault(name, []).append(MessyRequest(name, expect, body, content_type))
    if not kinds:
        raise ConfigError(str(path), None, "holds no kinds")
    return kinds
