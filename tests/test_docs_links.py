"""The README and docs/*.md: every relative link leads somewhere, and the README stays short.

Pure file reads: external http(s) links are not fetched. A link ``[text](path#anchor)`` must name a
file or folder that exists, and its anchor a heading of the target page, slugged as GitHub does.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 260

FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
EXTERNAL = ("http://", "https://", "mailto:")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a ``# comment`` in a TOML block is not a heading)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor on a page, repeated headings numbered as GitHub numbers them."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in prose_lines(page.read_text()):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(page: Path) -> list[str]:
    """The targets of the page's Markdown links, outside code blocks and code spans."""
    targets = []
    for line in prose_lines(page.read_text()):
        # A code span inside link text stays text; one that merely shows brackets is no link.
        line = CODE_SPAN.sub(lambda m: "x" if "](" in m.group(2) else m.group(2), line)
        targets.extend(match.group(2) for match in LINK.finditer(line))
    return targets


def broken_links(page: Path, root: Path = REPO) -> list[str]:
    """What is wrong with the page's relative links, one line each; targets must stay under ``root``."""
    problems = []
    for target in links(page):
        if target.startswith(EXTERNAL):
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page
        if not resolved.is_relative_to(root):
            problems.append(f"{target}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{target}: no heading #{anchor} in {resolved.relative_to(root)}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_the_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in links(README)}
    assert [p.name for p in PAGES[1:] if p.resolve() not in linked] == []


def test_the_checker_finds_broken_links_and_anchors_and_skips_code(tmp_path):
    other = tmp_path / "other.md"
    other.write_text("# Title\n\n## `loadtest cost`: cost per 1M, at scale\n\n## Twice\n\n## Twice\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#loadtest-cost-cost-per-1m-at-scale) [twice](other.md#twice-1) [web](https://x.invalid)\n"
        "[`code` text](#a-heading) [gone](missing.md) [bad anchor](other.md#nowhere) `[no link](missing.md)`\n"
        "```toml\n# not a heading\n[nor](a-link.md)\n```\n"
        "## A heading\n[up](../outside.md)\n"
    )
    assert broken_links(page, root=tmp_path) == [
        "missing.md: no such file",
        "other.md#nowhere: no heading #nowhere in other.md",
        "../outside.md: outside the repository",
    ]
    assert anchors(page) == {"a-heading"}
    assert slug("Capacity, comparison and cost") == "capacity-comparison-and-cost"
    assert slug("The capture's profile: `--profile-only`") == "the-captures-profile---profile-only"
    assert slug("reference_server/") == "reference_server"
