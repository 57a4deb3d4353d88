"""Pass/fail gates on a run's summary: SLO thresholds and regression against a baseline run.

Pure logic over a run's ``Summary``, so CI gates can be checked again later, without a run.

Thresholds are k6-like strings, from the scenario's ``[slo] thresholds`` or ``--threshold``::

    p99 < 250ms                 response latency, all classes (p50 p90 p95 p99 p99.9 mean max)
    p95{class=long} < 400ms     one request class
    p99{metric=service} < 50ms  another latency: service, server_queue, server_compute, overhead
    error_rate < 1%             (errors + timeouts) / requests that finished
    drop_rate < 0.5%            dropped / scheduled
    throughput >= 50/s          successful responses per second
    dropped == 0                counts: ok, errors, timeouts, dropped, scheduled
    messy_defects == 0          messy traffic: messy_defects, messy_wrong, messy_correct
    p99{class=clean} < 100ms    with messy traffic, every clean class together
    ttft_p99 < 500ms            generative runs: ttft, itl, tpot, e2e (short for p99{metric=ttft})
    goodput >= 95%              the share of requests that met every [generation] goodput bound
    output_tokens_per_s >= 500  output tokens a second, all requests together

Regression limits (``--max-regression p99=+10%``) compare the same figure with a baseline run's:
latencies may grow by at most the given fraction, ``throughput=-5%`` may fall by at most 5%.
"""

from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from datetime import datetime

from loadtest.errors import ExitCode, LoadTestError
from loadtest.results.summary import ALL, CLEAN, FAIL, PASS, UNTRUSTED, GateResult, Summary

LATENCY_STATS = ("p50", "p90", "p95", "p99", "p99.9", "mean", "max", "min")
TOKEN_METRICS = ("ttft", "itl", "tpot", "e2e")
LATENCY_METRICS = ("response", "service", "server_queue", "server_compute", "overhead", "lateness", *TOKEN_METRICS)
GENERATION = ("goodput", "output_tokens_per_s")
RATES = ("error_rate", "drop_rate")
COUNTS = ("ok", "errors", "timeouts", "dropped", "scheduled")
MESSY_COUNTS = {"messy_defects": "defects", "messy_wrong": "wrong", "messy_correct": "correct"}
OPERATORS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq}
OPERATORS["!="] = operator.ne
_TIME_UNITS = {"us": 0.001, "µs": 0.001, "ms": 1.0, "s": 1000.0}
_THRESHOLD = re.compile(
    r"^\s*(?P<stat>[a-z_][a-z0-9_.]*)\s*(?:\{(?P<selector>[^}]*)\})?\s*(?P<op><=|>=|==|!=|<|>)\s*"
    r"(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[a-zµ/%]*)\s*$"
)
_REGRESSION = re.compile(r"^\s*(?P<stat>[a-z_][a-z0-9_.]*)\s*=\s*(?P<sign>[+-])(?P<number>[0-9]+(?:\.[0-9]+)?)%\s*$")


class GateError(LoadTestError, ValueError):
    """A threshold or regression limit that cannot be understood; the message says why (an input error)."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class Threshold:
    text: str
    stat: str
    op: str
    limit: float  # in the figure's own unit: ms, a fraction, per second, or a count
    cls: str = "all"
    metric: str = "response"


@dataclass(frozen=True)
class RegressionLimit:
    text: str
    stat: str
    allowed: float  # fraction: +0.10 lets a latency grow 10%; -0.05 lets throughput fall 5%


def parse_threshold(text: str) -> Threshold:
    match = _THRESHOLD.match(text)
    if not match:
        raise GateError(f"threshold {text!r}: expected something like 'p99 < 250ms' or 'error_rate < 1%'")
    stat, op, number, unit = match["stat"], match["op"], float(match["number"]), match["unit"]
    selector = _selector(text, match["selector"] or "")
    metric_of_stat, _, short = stat.partition("_")
    if metric_of_stat in TOKEN_METRICS and short in LATENCY_STATS:  # ttft_p99: p99 of ttft
        if "metric" in selector:
            raise GateError(f"threshold {text!r}: {stat} names its metric; leave {{metric=...}} out")
        stat, selector["metric"] = short, metric_of_stat
    cls, metric = selector.get("class", "all"), selector.get("metric", "response")
    if stat in LATENCY_STATS:
        if metric not in LATENCY_METRICS:
            raise GateError(f"threshold {text!r}: unknown metric {metric!r}; one of {', '.join(LATENCY_METRICS)}")
        if unit not in _TIME_UNITS:
            raise GateError(f"threshold {text!r}: a latency needs a unit: us, ms or s")
        return Threshold(text, stat, op, number * _TIME_UNITS[unit], cls, metric)
    if "metric" in selector:
        raise GateError(f"threshold {text!r}: {{metric=...}} applies to latencies only")
    if stat in RATES:
        if unit != "%":
            raise GateError(f"threshold {text!r}: a rate is a percentage, like 'error_rate < 1%'")
        return Threshold(text, stat, op, number / 100, cls)
    if stat == "throughput" or stat == "output_tokens_per_s":
        if unit not in ("/s", ""):
            raise GateError(f"threshold {text!r}: {stat} is per second, like '{stat} >= 50/s'")
        return Threshold(text, stat, op, number, cls)
    if stat == "goodput":
        if unit != "%":
            raise GateError(f"threshold {text!r}: goodput is a percentage of requests, like 'goodput >= 95%'")
        return Threshold(text, stat, op, number / 100, cls)
    if stat in COUNTS or stat in MESSY_COUNTS:
        if unit:
            raise GateError(f"threshold {text!r}: a count takes no unit, like 'dropped == 0'")
        return Threshold(text, stat, op, number, cls)
    known = ", ".join((*LATENCY_STATS, *RATES, "throughput", *COUNTS, *MESSY_COUNTS, *GENERATION, "ttft_p99 ..."))
    raise GateError(f"threshold {text!r}: unknown figure {stat!r}; one of {known}")


def _selector(text: str, raw: str) -> dict[str, str]:
    selector = {}
    for part in filter(None, (p.strip() for p in raw.split(","))):
        key, _, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if key not in ("class", "metric") or not value:
            raise GateError(f"threshold {text!r}: selector {part!r}; expected class=NAME or metric=NAME")
        selector[key] = value
    return selector


def parse_regression(text: str) -> RegressionLimit:
    match = _REGRESSION.match(text)
    if not match:
        raise GateError(f"regression limit {text!r}: expected something like 'p99=+10%' or 'throughput=-5%'")
    stat, allowed = match["stat"], float(match["number"]) / 100 * (1 if match["sign"] == "+" else -1)
    if stat in LATENCY_STATS and allowed < 0 or stat == "throughput" and allowed > 0:
        raise GateError(f"regression limit {text!r}: latencies may grow (+), throughput may fall (-)")
    if stat not in LATENCY_STATS and stat != "throughput":
        raise GateError(
            f"regression limit {text!r}: unknown figure {stat!r}; one of {', '.join(LATENCY_STATS)}, throughput"
        )
    return RegressionLimit(text, stat, allowed)


def figure(summary: Summary, stat: str, cls: str = ALL, metric: str = "response") -> float | None:
    """One figure of a summary, in the unit thresholds use; None when the run has no such figure."""
    if cls == CLEAN and not summary.has_messy:
        cls = ALL  # without messy traffic, all of it is clean (the paired run of --messy-baseline)
    if stat in LATENCY_STATS:
        stats = summary.percentiles(metric, cls)
        value = None if stats is None else stats.get(stat)
        return None if value is None else float(value)
    if stat in MESSY_COUNTS:
        return None if summary.messy is None else float(summary.messy[MESSY_COUNTS[stat]])
    if stat in GENERATION:
        return generation_figure(summary, stat, cls)
    counts = summary.accounting.of(cls)
    if counts is None:
        return None
    if stat == "throughput":
        seconds = summary.duration_s
        return counts.ok / seconds if seconds else None
    if stat == "error_rate":
        finished = counts.ok + counts.errors + counts.timeouts
        return (counts.errors + counts.timeouts) / finished if finished else None
    if stat == "drop_rate":
        return counts.dropped / counts.scheduled if counts.scheduled else None
    return float(getattr(counts, stat))


def generation_figure(summary: Summary, stat: str, cls: str = ALL) -> float | None:
    """Goodput's share (of ``cls``, or all) or output tokens a second; None in a run that is not generative."""
    generation = summary.generation
    if generation is None:
        return None
    if stat == "output_tokens_per_s":
        if cls == ALL:
            return summary.throughput.output_tokens_per_s
        tokens = generation.get("by_class", {}).get(cls, {}).get("output_tokens")
        return tokens / summary.duration_s if tokens is not None and summary.duration_s else None
    goodput = generation.get("goodput")
    if goodput is None:
        return None
    share = goodput["share"] if cls == ALL else goodput.get("by_class", {}).get(cls, {}).get("share")
    return None if share is None else float(share)


def _shown(stat: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if stat in LATENCY_STATS:
        return f"{value:.3f}ms"
    if stat in RATES or stat == "goodput":
        return f"{value:.3%}"
    if stat in ("throughput", "output_tokens_per_s"):
        return f"{value:.2f}/s"
    return f"{value:g}"


def check_thresholds(summary: Summary, thresholds: list[Threshold]) -> list[GateResult]:
    results = []
    for t in thresholds:
        actual = figure(summary, t.stat, t.cls, t.metric)
        limit = f"{t.op} {_shown(t.stat, t.limit)}"
        if actual is None or math.isnan(actual):
            what = t.stat if t.metric == "response" else f"{t.metric} {t.stat}"
            message = f"the run has no {what} for class {t.cls!r}"
            results.append(GateResult(t.text, False, None, limit, message, FAIL))
            continue
        passed = OPERATORS[t.op](actual, t.limit)
        results.append(
            GateResult(
                t.text,
                passed,
                actual,
                limit,
                f"{_shown(t.stat, actual)} {limit}: " + ("pass" if passed else "FAIL"),
                PASS if passed else FAIL,
            )
        )
    return results


def check_regressions(summary: Summary, baseline: Summary, limits: list[RegressionLimit]) -> list[GateResult]:
    results = []
    for limit in limits:
        now, before = figure(summary, limit.stat), figure(baseline, limit.stat)
        name = f"{limit.stat} against baseline ({limit.text.split('=', 1)[1].strip()})"
        allowed = f"{limit.allowed:+.0%}"
        if now is None or before is None or before == 0:
            results.append(
                GateResult(
                    name,
                    False,
                    now,
                    allowed,
                    f"cannot compare {limit.stat}: "
                    f"{_shown(limit.stat, before)} in the baseline, {_shown(limit.stat, now)} now",
                    FAIL,
                )
            )
            continue
        change = now / before - 1
        passed = change <= limit.allowed if limit.allowed >= 0 else change >= limit.allowed
        message = f"{_shown(limit.stat, before)} -> {_shown(limit.stat, now)} ({change:+.1%}, allowed {allowed}): " + (
            "pass" if passed else "FAIL"
        )
        results.append(GateResult(name, passed, now, allowed, message, PASS if passed else FAIL))
    return results


def junit_xml(
    results: list[GateResult],
    suite: str,
    strict: bool = False,
    *,
    started_epoch: float | None = None,
    seconds: float | None = None,
) -> str:
    """One JUnit test case per gate, so CI systems show each gate as a test that passed or failed.

    A gate not judged because the run is not trustworthy is a skipped case, or with ``strict`` a
    failure of its own type (``Untrusted``), never a pass. ``started_epoch`` and ``seconds`` are the
    run's start and length: the suite's ``timestamp`` (ISO 8601, local time with its offset, as pytest
    writes it) and ``time``. A case's ``time`` is 0: every gate is judged at once on the same run, and
    CI systems that add the cases' times up would otherwise count the run once per gate.
    """
    from xml.etree import ElementTree as ET

    def failed(r: GateResult) -> bool:
        return r.verdict == FAIL or (strict and r.verdict == UNTRUSTED)

    failures = str(sum(map(failed, results)))
    skipped = str(sum(r.verdict == UNTRUSTED and not strict for r in results))
    timing = {} if seconds is None else {"time": f"{seconds:.3f}"}
    root = ET.Element("testsuites", name="loadtest", tests=str(len(results)), failures=failures, **timing)
    node = ET.SubElement(root, "testsuite", name=suite, tests=str(len(results)), failures=failures, skipped=skipped)
    node.attrib.update(timing)
    if started_epoch is not None:
        node.set("timestamp", datetime.fromtimestamp(started_epoch).astimezone().isoformat(timespec="seconds"))
    for result in results:
        case = ET.SubElement(node, "testcase", classname=f"loadtest.{suite}", name=result.name)
        if seconds is not None:
            case.set("time", "0")
        if failed(result):
            kind = "Untrusted" if result.verdict == UNTRUSTED else "GateFailed"
            ET.SubElement(case, "failure", message=failure_line(result), type=kind).text = result.message
        elif result.verdict == UNTRUSTED:
            ET.SubElement(case, "skipped", message=result.message)
        else:
            ET.SubElement(case, "system-out").text = result.message
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def failure_line(result: GateResult) -> str:
    """A failed gate as a CI system shows a failure: the measured figure first, then the limit.

    "p99 615.4 ms, limit < 250 ms" for a threshold; a gate of another kind (a regression, a figure
    the run does not have, an untrusted gate under ``--strict``, a probe) keeps its own message,
    which already reads that way, without the table's trailing verdict.
    """
    try:
        threshold = parse_threshold(result.name)
    except GateError:
        threshold = None
    if threshold is None or result.actual is None or result.verdict == UNTRUSTED or math.isnan(result.actual):
        return result.message.removesuffix(": FAIL")
    selector = [f"class={threshold.cls}"] if threshold.cls != ALL else []
    selector += [f"metric={threshold.metric}"] if threshold.metric != "response" else []
    label = threshold.stat + (f"{{{', '.join(selector)}}}" if selector else "")
    measured, limit = _in_words(threshold.stat, result.actual), _in_words(threshold.stat, threshold.limit)
    return f"{label} {measured}, limit {threshold.op} {limit}"


def _in_words(stat: str, value: float) -> str:
    """A figure as a person reads it: "615.4 ms", "250 ms", "0.8%", "48.5/s", "3"."""
    if stat in LATENCY_STATS:
        return f"{_short(value)} ms"
    if stat in RATES or stat == "goodput":
        return f"{_short(value * 100)}%"
    if stat in ("throughput", "output_tokens_per_s"):
        return f"{_short(value)}/s"
    return f"{value:g}"


def _short(value: float) -> str:
    """One decimal from 1 up (615.4, 250), three significant digits below (0.456, 0.001)."""
    return f"{value:.1f}".removesuffix(".0") if abs(value) >= 1 else f"{value:.3g}"
