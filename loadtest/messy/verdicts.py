"""Whether an answer to a messy request was sound, and the verdicts of a run by kind.

Every answer gets one verdict: ``correct`` (as expected), ``wrong`` (a 200 for garbage, a 4xx for
valid text) or ``defect`` (a 5xx, a reset connection, a timeout: never sound).

A gRPC status (``grpc_invalid_argument``...) is judged as the HTTP status gRPC's own mapping gives it
(``google/rpc/code.proto``): INVALID_ARGUMENT, FAILED_PRECONDITION and OUT_OF_RANGE are 400s, NOT_FOUND a
404, RESOURCE_EXHAUSTED a 429 (refusals, with the other 4xx ones); INTERNAL, UNKNOWN, UNAVAILABLE,
UNIMPLEMENTED and DATA_LOSS are 5xx (defects).
"""

from __future__ import annotations

from collections.abc import Mapping

from loadtest.messy.kinds import ACCEPT, CLASS_PREFIX, CORRECT, DEFECT, KINDS, REJECT, VERDICTS, WRONG

# gRPC status (the recorder's kind without its ``grpc_`` prefix) -> the HTTP status google/rpc/code.proto maps it to.
GRPC_AS_HTTP = {
    "cancelled": 499,
    "unknown": 500,
    "invalid_argument": 400,
    "deadline_exceeded": 504,
    "not_found": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "resource_exhausted": 429,
    "failed_precondition": 400,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "data_loss": 500,
    "unauthenticated": 401,
}


def verdict(expect: str, outcome: str) -> str:
    """``outcome`` as the recorder names it: "" (a 2xx with a valid body), "http_404", "timeout", ...

    A 5xx, a timeout or a broken connection is a defect whatever was expected; a 2xx whose body is
    not a valid answer is wrong whatever was expected (a garbage 200 is never sound).
    """
    if outcome == "":
        return WRONG if expect == REJECT else CORRECT
    if outcome.startswith("grpc_"):
        outcome = f"http_{GRPC_AS_HTTP.get(outcome.removeprefix('grpc_'), 500)}"
    if outcome.startswith("http_"):
        status = int(outcome.removeprefix("http_"))
        if status >= 500:
            return DEFECT
        if 400 <= status < 500:
            return WRONG if expect == ACCEPT else CORRECT
        return WRONG  # 1xx, 3xx
    if outcome == "invalid_body":
        return WRONG
    return DEFECT  # timeout, connection, and any exception the client raised


def summarise(verdicts: Mapping[str, Mapping[str, int]], scheduled: Mapping[str, int]) -> dict:
    """Verdicts by kind from the recorder's counts: messy class -> ``<verdict>:<expect>:<answer>`` -> count.

    ``scheduled`` is each messy class's scheduled arrivals (a duplicate counts twice), so a kind
    whose requests were dropped or never answered still shows how many were meant.
    """
    kinds: dict[str, dict] = {}
    for cls, labels in verdicts.items():
        for label, count in labels.items():
            found, expect, answer = label.split(":", 2)
            entry = _entry(kinds, cls, expect)
            entry[found] += count
            entry["answers"][answer] = entry["answers"].get(answer, 0) + count
    for cls, n in scheduled.items():
        if cls.startswith(CLASS_PREFIX):
            _entry(kinds, cls, None)["scheduled"] = n
    totals = {v: sum(k[v] for k in kinds.values()) for v in VERDICTS}
    return {
        "kinds": dict(sorted(kinds.items())),
        "requests": sum(k["scheduled"] for k in kinds.values()),
        "correct": totals[CORRECT],
        "wrong": totals[WRONG],
        "defects": totals[DEFECT],
    }


def _entry(kinds: dict[str, dict], cls: str, expect: str | None) -> dict:
    kind = cls.removeprefix(CLASS_PREFIX)
    entry = kinds.setdefault(
        kind,
        {"expect": expect, "category": KINDS[kind].category if kind in KINDS else "custom", "scheduled": 0}
        | {v: 0 for v in VERDICTS}
        | {"answers": {}},
    )
    if expect is not None:
        entry["expect"] = expect
    return entry
