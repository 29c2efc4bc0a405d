"""The analyst report as one self-contained HTML page: figures in, bytes out.

Pure. The page holds everything it shows: its style inline, every plot an SVG inside a `data:`
URL (its ids cannot clash with another plot's), no script and no link, so it opens offline and
prints as it shows. The same figures give the same bytes (no clock: the page says when the
snapshot was exported, not when the page was made).

Every number the page prints sits in a table cell that says what it is, so a test (or an
analyst) can find it: `data-figure`, `data-key` (the row's key as a JSON list), `data-measure`
and `data-value` (the exact value; the text shows it rounded), or `data-suppressed` where the
cell is suppressed and says "fewer than N learners" instead.
"""

from __future__ import annotations

import base64
import html
import json

from transform.report_figures import (
    DEFAULT_MIN_CELL,
    Figure,
    Kind,
    ReportFrames,
    Row,
    SnapshotFacts,
    build_figures,
    compare_figure,
    row_kind,
)
from transform.report_plots import plot_svg

STYLE = """
body { font-family: "DejaVu Sans", Arial, sans-serif; color: #222; margin: 2em auto;
       max-width: 60em; padding: 0 1em; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
p.caption { color: #444; margin: 0.3em 0 0.8em; }
p.absent, p.empty { color: #8a4b00; }
img.plot { max-width: 100%; display: block; margin: 0.5em 0; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: left; vertical-align: top; }
td[data-value], td[data-suppressed] { text-align: right; white-space: nowrap; }
td[data-suppressed] { color: #888; font-style: italic; }
details summary { cursor: pointer; color: #3182bd; }
@media print { details { display: block; } details > summary { display: none; } }
"""

LONG_TABLE = 20
"""A figure's table with more rows than this is folded (`<details>`) under its plot."""


def render_report(
    figures: list[Figure], facts: SnapshotFacts, min_cell: int, *, compared: str | None = None
) -> bytes:
    """The page for `figures` of the snapshot `facts` describes (`compared`: the other
    snapshot's run id when a comparison is among the figures)."""
    title = f"Learner report: snapshot {facts.run_id}"
    head = (
        "<!doctype html>\n<html lang=en>\n<head>\n<meta charset=utf-8>\n"
        "<meta name=viewport content='width=device-width, initial-scale=1'>\n"
        f"<title>{_text(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
    )
    intro = (
        f"<h1>{_text(title)}</h1>\n<p class=caption>Snapshot "
        f"<span data-figure=snapshot data-measure=run_id data-value='{_attr(facts.run_id)}'>"
        f"{_text(facts.run_id)}</span>, exported at "
        f"<span data-figure=snapshot data-measure=exported_at "
        f"data-value='{_attr(facts.exported_at)}'>{_text(facts.exported_at)}</span> (UTC)"
        + (f", compared with snapshot {_text(compared)}" if compared else "")
        + f". Every figure counts learners by pseudonym; any figure behind fewer than {min_cell} "
        f"learners is shown as \u201cfewer than {min_cell} learners\u201d, never as a value, "
        "in tables and plots alike. No learner is named, by name, id or pseudonym.</p>\n"
    )
    body = "".join(_section(figure, min_cell) for figure in figures)
    return (head + intro + body + "</body>\n</html>\n").encode()


def _section(figure: Figure, min_cell: int) -> str:
    parts = [f"<section id='{_attr(figure.name)}'>\n<h2>{_text(figure.title)}</h2>\n"]
    parts.append(f"<p class=caption>{_text(figure.caption)}</p>\n")
    if figure.absent is not None:
        parts.append(f"<p class=absent>{_text(figure.absent)}</p>\n</section>\n")
        return "".join(parts)
    if not figure.rows:
        parts.append(
            f"<p class=empty>No row to show: no cell of this figure has {min_cell} or more "
            "learners.</p>\n</section>\n"
        )
        return "".join(parts)
    svg = plot_svg(figure, min_cell)
    if svg is not None:
        data = base64.b64encode(svg).decode()
        parts.append(
            f"<img class=plot alt='{_attr(figure.title)}' src='data:image/svg+xml;base64,{data}'>\n"
        )
    table = _table(figure, min_cell)
    if len(figure.rows) > LONG_TABLE:
        table = (
            f"<details><summary>the figure's {len(figure.rows)} rows</summary>\n{table}</details>\n"
        )
    parts.append(table)
    parts.append("</section>\n")
    return "".join(parts)


def _table(figure: Figure, min_cell: int) -> str:
    heads = [*figure.key_names, *(m.label for m in figure.measures)]
    if figure.name == "snapshot":
        heads = ["", "value"]
    lines = ["<table>\n<tr>" + "".join(f"<th>{_text(h)}</th>" for h in heads) + "</tr>\n"]
    for row in figure.rows:
        cells = "".join(f"<td>{_text(k)}</td>" for k in row.key)
        cells += "".join(_cell(figure, row, index, min_cell) for index in range(len(row.values)))
        lines.append(f"<tr>{cells}</tr>\n")
    lines.append("</table>\n")
    return "".join(lines)


def _cell(figure: Figure, row: Row, index: int, min_cell: int) -> str:
    measure = figure.measures[index]
    where = (
        f"data-figure='{_attr(figure.name)}' data-key='{_attr(json.dumps(list(row.key)))}' "
        f"data-measure='{_attr(measure.name)}'"
    )
    value = row.values[index]
    if row.suppressed or value is None:
        return f"<td {where} data-suppressed>fewer than {min_cell} learners</td>"
    kind = row_kind(figure, row, measure)
    shown = formatted(value, kind, signed=measure.name == "change")
    return f"<td {where} data-value='{_attr(str(value))}'>{_text(shown)}</td>"


def printed_rows(figure: Figure, min_cell: int) -> list[tuple[str, str]]:
    """A one-value figure's rows as the page prints them, (label, value or "fewer than N
    learners"): the headline figures of the archive's Prefect artifact."""
    lines = []
    for row in figure.rows:
        value = row.values[0]
        if row.suppressed or value is None:
            lines.append((" / ".join(row.key), f"fewer than {min_cell} learners"))
        else:
            kind = row_kind(figure, row, figure.measures[0])
            lines.append((" / ".join(row.key), formatted(value, kind)))
    return lines


def formatted(value: float | int | str, kind: Kind, *, signed: bool = False) -> str:
    """How the page prints a value: counts with thousands separators, scores and shares with
    one decimal (Python's rounding of the exact value in `data-value`)."""
    if isinstance(value, str) or kind in ("date", "text"):
        return str(value)
    sign = "+" if signed else ""
    if kind == "count":
        return f"{int(value):{sign},}"
    text = f"{float(value):{sign}.1f}"
    return f"{text} %" if kind == "percent" else text


def _text(value: str) -> str:
    return html.escape(value, quote=False)


def _attr(value: str) -> str:
    return html.escape(value, quote=True)


def report_page(
    data: ReportFrames, min_cell: int = DEFAULT_MIN_CELL, *, before: ReportFrames | None = None
) -> tuple[bytes, list[tuple[str, str]]]:
    """The whole report of one snapshot, and its headline figures as printed (`printed_rows`);
    with `before`, the headline figures compared with that earlier snapshot's."""
    figures = build_figures(data, min_cell)
    if before is not None:
        figures.insert(1, compare_figure(before, data, min_cell))
    compared = None if before is None else before.facts.run_id
    page = render_report(figures, data.facts, min_cell, compared=compared)
    return page, printed_rows(figures[0], min_cell)
