"""Whether an answer to a messy request was sound, and the verdicts of a run by kind.

Every answer gets one verdict: ``correct`` (as expected), ``wrong`` (a 200 for garbage, a 4xx for
valid text) or ``defect`` (a 5xx, a reset connection, a timeout: never sound).
"""

from __future__ import annotations

from collections.abc import Mapping

from loadtest.messy.kinds import ACCEPT, CLASS_PREFIX, CORRECT, DEFECT, KINDS, REJECT, VERDICTS, WRONG


def verdict(expect: str, outcome: str) -> str:
    """``outcome`` as the recorder names it: "" (a 2xx with a valid body), "http_404", "timeout", ...

    A 5xx, a timeout or a broken connection is a defect whatever was expected; a 2xx whose body is
    not a valid answer is wrong whatever was expected (a garbage 200 is never sound).
    """
    if outcome == "":
        return WRONG if expect == REJECT else CORRECT
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
