"""One report for a study: the capacity searches, the comparison and the cost projection in one directory.

``make demo`` writes its parts under ``results/demo/`` (``capacity-*/capacity.json``,
``compare/compare.json``, ``cost/cost.json``); ``loadtest report results/demo`` puts them on one
self-contained page, ``report.html``, with ``report.md`` beside it. Any part may be missing: the
page holds what the directory holds.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.errors import ConfigError
from loadtest.report.capacity import capacity_lines, capacity_markdown, capacity_section_html
from loadtest.report.compare import NAMES, compare_markdown, compare_section_html
from loadtest.report.cost import cost_markdown, cost_section_html
from loadtest.report.kit import PAGE, headline_html
from loadtest.results.files import write_atomic


@dataclass
class Study:
    directory: Path
    capacity: list[dict] = field(default_factory=list)
    compare: dict | None = None
    cost: dict | None = None

    @property
    def empty(self) -> bool:
        return not self.capacity and self.compare is None and self.cost is None


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(str(path), None, f"unreadable: {exc}") from None


def find_study(directory: Path) -> Study:
    """The parts in ``directory`` and its subdirectories (one level), in name order."""
    study = Study(directory)
    for path in sorted([*directory.glob("capacity.json"), *directory.glob("*/capacity.json")]):
        study.capacity.append(_read(path))
    for name in ("compare", "cost"):
        found = sorted([*directory.glob(f"{name}.json"), *directory.glob(f"*/{name}.json")])
        if found:
            setattr(study, name, _read(found[-1]))
    return study


def headline(study: Study) -> list[str]:
    """What a person needs first: capacities, the comparison's verdicts, the cheapest option."""
    lines = []
    for data in study.capacity:
        lines += capacity_lines(data)[:1]
        cls = data.get("most_expensive_class")
        if cls and cls in data.get("classes", {}):
            lines.append(f"  all traffic {cls!r}: {data['classes'][cls].get('capacity_rps') or 0:.1f} req/s")
    if study.compare:
        for entry in study.compare["comparisons"]:
            verdicts = ", ".join(
                f"{NAMES.get(row['metric'], row['metric'])} {row['relative']:+.0%} ({row['verdict']})"
                for row in entry["rows"]
                if row["metric"] in ("p50", "p99", "throughput_per_s", "cpu_ms_per_request")
                and row["relative"] is not None
            )
            lines.append(f"{entry['b']} against {entry['a']}: {verdicts}")
            agreement = entry.get("agreement")
            if agreement and agreement["metric"] == "embedding":
                own = agreement["b"]["batch_effect"]
                lines.append(
                    f"  answers: cosine mean {agreement['batch1']['cosine_mean']:.4f} "
                    f"(min {agreement['batch1']['cosine_min']:.4f}) at batch 1; {agreement['b']['profile']} "
                    f"against itself, batch 1 vs under load: mean {own['cosine_mean']:.4f}, "
                    f"min {own['cosine_min']:.4f}"
                )
    if study.cost:
        for cheapest in study.cost.get("cheapest", []):
            names = cheapest["options"]
            lines.append(
                f"cost at x{cheapest['growth']:g} traffic: cheapest {' and '.join(map(str, names))}, "
                f"${cheapest['per_million']:.3g} per 1M predictions"
            )
    return lines


def build_html(study: Study) -> str:
    body = []
    if study.capacity:
        body.append(capacity_section_html(study.capacity))
    if study.compare:
        body.append(compare_section_html(study.compare))
    if study.cost:
        body.append(cost_section_html(study.cost))
    items = headline_html(headline(study))
    return PAGE.format(title=f"Study: {html.escape(study.directory.name)}", headline=items, body="\n".join(body))


def build_markdown(study: Study) -> str:
    parts = [f"# Study: {study.directory.name}", "", *[f"- {line}" for line in headline(study)], ""]
    if study.capacity:
        parts.append(capacity_markdown(study.capacity))
    if study.compare:
        parts.append(compare_markdown(study.compare))
    if study.cost:
        parts.append(cost_markdown(study.cost))
    return "\n".join(parts)


def write_study_report(directory: Path) -> tuple[Path, Path]:
    study = find_study(directory)
    if study.empty:
        raise ConfigError(
            str(directory), None, "no summary.json, capacity.json, compare.json or cost.json here or one level down"
        )
    write_atomic(directory / "report.html", build_html(study))
    write_atomic(directory / "report.md", build_markdown(study))
    return directory / "report.html", directory / "report.md"
