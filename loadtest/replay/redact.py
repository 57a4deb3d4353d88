"""Secrets in captured traffic: which headers, query parameters and body fields hold them.

A capture holds what clients sent, credentials included. Everything the harness writes (results,
reports, logs, fitted scenarios) names requests by method, path and class only, never by header
or body, and paths go through ``redact_path`` first. What is sent to the target is stripped of
secrets unless the user opts in (``loadtest replay --send-secrets``): a replay against a staging
endpoint should not carry production credentials by default.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode

REDACTED = "REDACTED"
# Header and field names that carry credentials or sessions, matched case-insensitively anywhere in the name.
SECRET_NAME = re.compile(
    r"authorization|cookie|api[-_]?key|apikey|token|secret|password|passwd|session|credential|signature|x-amz-security",
    re.IGNORECASE,
)
# Hop-by-hop and framing headers: the client that replays sets its own.
NOT_REPLAYED = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "expect"}
)


def is_secret(name: str, extra: frozenset[str] = frozenset()) -> bool:
    return bool(SECRET_NAME.search(name)) or name.lower() in extra


def replay_headers(headers: tuple[tuple[str, str], ...], send_secrets: bool) -> dict[str, str]:
    """The captured headers to send: framing headers dropped, secrets dropped unless asked for."""
    kept = {}
    for name, value in headers:
        if name in NOT_REPLAYED or (not send_secrets and is_secret(name)):
            continue
        kept[name] = value
    return kept


def redact_path(path: str, extra: frozenset[str] = frozenset()) -> str:
    """The path with the values of secret-named query parameters replaced, for anything written."""
    base, sep, query = path.partition("?")
    if not sep:
        return path
    pairs = parse_qsl(query, keep_blank_values=True)
    return base + "?" + urlencode([(k, REDACTED if is_secret(k, extra) else v) for k, v in pairs])


def strip_path(path: str, extra: frozenset[str] = frozenset()) -> str:
    """The path to send: secret-named query parameters removed."""
    base, sep, query = path.partition("?")
    if not sep:
        return path
    pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if not is_secret(k, extra)]
    return base + ("?" + urlencode(pairs) if pairs else "")


def has_secret_fields(doc: object, extra: frozenset[str] = frozenset()) -> bool:
    if isinstance(doc, dict):
        return any((isinstance(k, str) and is_secret(k, extra)) or has_secret_fields(v, extra) for k, v in doc.items())
    if isinstance(doc, list):
        return any(has_secret_fields(v, extra) for v in doc)
    return False


def strip_fields(doc: object, extra: frozenset[str] = frozenset()) -> object:
    """A copy of a JSON body without its secret-named fields, at any depth."""
    if isinstance(doc, dict):
        return {k: strip_fields(v, extra) for k, v in doc.items() if not (isinstance(k, str) and is_secret(k, extra))}
    if isinstance(doc, list):
        return [strip_fields(v, extra) for v in doc]
    return doc
