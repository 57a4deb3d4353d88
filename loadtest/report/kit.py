"""The render kit every report shares: the page, the colours, tables in HTML and Markdown, and plots as SVG.

One look for every page (``report.html``, ``cost.html``, ``study.html``...): each report builds its
headline, plots and tables, and this module turns them into a self-contained page that works
offline. matplotlib is imported only when a plot is drawn, so importing the kit (and a report that
only writes Markdown) stays light.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Mapping

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")

# A report's tables by title: (header, rows), in the order they are shown.
Sections = Mapping[str, tuple[list[str], list[list[str]]]]

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }}
h1 {{ font-size: 1.4rem; }} h2 {{ font-size: 1.1rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
figure {{ margin: 0.5rem 0; }} figure svg {{ width: 100%; height: auto; }}
.warn {{ color: #b00; font-weight: bold; }}
</style>
<script>
window.addEventListener("error", function (e) {{
  document.body.dataset.errors = (document.body.dataset.errors || "") + e.message + ";";
}});
window.addEventListener("load", function () {{
  var figures = document.querySelectorAll("figure[data-plot]"), drawn = 0;
  figures.forEach(function (f) {{
    var svg = f.querySelector("svg");
    if (svg && svg.getBoundingClientRect().width > 100 && svg.querySelectorAll("path").length > 10) drawn++;
  }});
  document.body.dataset.rendered = drawn + "/" + figures.length;
}});
</script></head>
<body>
<h1>{title}</h1>
<ul>{headline}</ul>
{body}
</body></html>
"""


# -- tables --------------------------------------------------------------------------------------


def html_table(header: list[str], rows: list[list[str]]) -> str:
    """A table with every cell escaped: the numbers right-aligned by the page's style, the first column left."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table (a step summary, a PR comment); a ``|`` in a cell (a class's name) is
    escaped, so it stays in its cell."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def md_sections(sections: Sections) -> list[str]:
    """Each table under its own ``###`` title, as Markdown lines."""
    parts: list[str] = []
    for title, (header, rows) in sections.items():
        parts += ["", f"### {title}", "", md_table(header, rows)]
    return parts


def html_sections(sections: Sections) -> list[str]:
    """Each table under its own ``<h2>`` title, as HTML fragments."""
    return [f"<h2>{html.escape(title)}</h2>{html_table(header, rows)}" for title, (header, rows) in sections.items()]


def headline_html(lines: list[str]) -> str:
    """The headline lines as the page's ``<li>`` items, escaped."""
    return "".join(f"<li>{html.escape(line)}</li>" for line in lines)


# -- plots ---------------------------------------------------------------------------------------


def load_matplotlib():
    """matplotlib's pyplot, drawing off-screen (no display needed); imported on first use, as it takes a while."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure(width: float = 8.0, height: float = 3.2, rows: int = 1):
    """A matplotlib figure and its axes in the reports' look."""
    plt = load_matplotlib()
    plt.rcParams.update({"font.size": 9, "svg.fonttype": "path", "axes.grid": True, "grid.alpha": 0.3})
    return plt.subplots(rows, 1, figsize=(width, height), sharex=rows > 1)


def svg(fig) -> str:
    """The figure as inline SVG, closed; no date in it, so the same figures give the same page."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.tight_layout()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    plt.close(fig)
    text = buffer.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>", "", text[text.index("<svg") :], flags=re.S)
    return text


def no_data(message: str) -> str:
    """A short blank plot that says why there is nothing to draw, where the plot would be."""
    fig, ax = figure(8.0, 1.2)
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes)
    return svg(fig)
