"""Secrets in captured traffic and in target URLs: which headers, query parameters and body fields hold them.

A capture holds what clients sent, credentials included. Everything the harness writes (results,
reports, logs, fitted scenarios) names requests by method, path and class only, never by header
or body, and paths go through ``redact_path`` first. What is sent to the target is stripped of
secrets unless the user opts in (``loadtest replay --send-secrets``): a replay against a staging
endpoint should not carry production credentials by default.

A target URL may carry credentials too (``http://alice:PW@host``): every file, line and command
line that shows a target shows ``redact_url``'s copy, and only the Locust users get the real one,
through the environment (``engine.runconfig.TARGET_URL_ENV``), never through argv that ``ps`` shows.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "REDACTED"
# Header and field names that carry credentials or sessions, matched case-insensitively anywhere in the name.
SECRET_NAME = re.compile(
    r"authorization|cookie|api[-_]?key|apikey|token|secret|password|passwd|session|credential|signature|x-amz-security",
    re.IGNORECASE,
)
# Counts of tokens are no credentials: a generative request's max_tokens, min_tokens, max_completion_tokens, a
# usage's prompt_tokens, must be replayed as captured (the request's output length is what it asks the server for).
TOKEN_COUNT = re.compile(
    r"^(max|min|num|prompt|completion|total|input|output|cached|reasoning|new)(_[a-z]+)*_tokens$", re.I
)
# A header whose name merely holds "auth" (x-custom-auth, x-auth-user) is a credential too; body fields and
# query parameters are not matched so widely ("author" is no secret).
SECRET_HEADER = re.compile(r"auth", re.IGNORECASE)
# Hop-by-hop and framing headers: the client that replays sets its own.
NOT_REPLAYED = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "expect"}
)


def is_secret(name: str, extra: frozenset[str] = frozenset()) -> bool:
    return bool(SECRET_NAME.search(name)) and not TOKEN_COUNT.match(name) or name.lower() in extra


def replay_headers(headers: tuple[tuple[str, str], ...], send_secrets: bool) -> dict[str, str]:
    """The captured headers to send: framing headers dropped, secrets dropped unless asked for."""
    kept = {}
    for name, value in headers:
        if name in NOT_REPLAYED or (not send_secrets and (is_secret(name) or SECRET_HEADER.search(name))):
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


def redact_url(url: str) -> str:
    """The URL as it may be shown or written: a password in it as ``***`` (``http://alice:***@host``).

    A user name without a password is often a token (``https://TOKEN@host``), so it goes whole; the
    values of secret-named query parameters go as in ``redact_path``. A URL without either is unchanged.
    """
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        userinfo = f"{user}:***" if colon else "***"
        parts = parts._replace(netloc=f"{userinfo}@{host}")
    url = urlunsplit(parts)
    return redact_path(url) if parts.query else url


def without_userinfo(url: str) -> str:
    """The URL with no user name or password in it: what may go on a command line another process reads."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<userinfo>[^/\s'\"]*)@", re.IGNORECASE)


def redact_urls_in(text: str) -> str:
    """``text`` (a scenario's TOML, a message) with the userinfo of every URL in it redacted as ``redact_url`` does."""

    def hide(match: re.Match) -> str:
        user, colon, _ = match["userinfo"].partition(":")
        return match["scheme"] + (f"{user}:***" if colon else "***") + "@"

    return _URL_USERINFO.sub(hide, text)
