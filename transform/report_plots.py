"""The report's plots: one SVG per figure, drawn with matplotlib from the figure's rows alone.

Pure: rows in, SVG bytes out. matplotlib's object API (a `Figure`, no pyplot, no global backend)
writes SVG with its fonts drawn as paths (`svg.fonttype: path`), so a page opened anywhere shows
the same glyphs and fetches no font; the ids inside the SVG are salted with a constant and no
date is written, so the same rows give the same bytes.

A plot receives rows whose suppressed values are already None (`transform.report_figures`):
a suppressed cell is drawn as a grey mark saying "fewer than N learners", never with a length,
height or position that depends on its value.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

import matplotlib as mpl
from matplotlib.figure import Figure as Canvas

from transform.report_figures import Figure, Row

SVG_SETTINGS: dict[Any, Any] = {
    "svg.fonttype": "path",  # glyphs as paths: no font is needed, none is fetched
    "svg.hashsalt": "learner-export-report",  # ids from a constant: same rows, same bytes
    "font.family": "DejaVu Sans",  # ships with matplotlib, so every machine draws the same
    "font.size": 9,
    "date.epoch": "1970-01-01T00:00:00",
    "axes.spines.top": False,
    "axes.spines.right": False,
}
_EPOCH = date(1970, 1, 1).toordinal()
SUPPRESSED_COLOUR = "#9a9a9a"
WIDTH = 8.0
"""Inches at 100 dpi: 800 px, the page's column."""


def plot_svg(figure: Figure, min_cell: int) -> bytes | None:
    """The figure's plot as SVG bytes, or None when it has none (or no row to draw)."""
    if figure.plot is None or not figure.rows:
        return None
    draw = {
        "boxes": _boxes,
        "weeks": _weeks,
        "ranked_mean": _ranked,
        "ranked_share": _ranked,
    }[figure.plot]
    with _deterministic():
        canvas = draw(figure, min_cell)
        out = io.BytesIO()
        canvas.savefig(out, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return out.getvalue()


@contextmanager
def _deterministic() -> Iterator[None]:
    with mpl.rc_context(SVG_SETTINGS):
        yield


def _boxes(figure: Figure, min_cell: int) -> Canvas:
    rows = list(reversed(figure.rows))  # the first row at the top
    canvas = Canvas(figsize=(WIDTH, 0.9 + 0.32 * len(rows)))
    axes = canvas.add_subplot()
    for y, row in enumerate(rows):
        if row.suppressed:
            axes.text(1, y, f"fewer than {min_cell} learners", va="center", color=SUPPRESSED_COLOUR,
                      gid="suppressed")  # fmt: skip
            continue
        _, _, mean, p25, median, p75 = (float(v) for v in row.values)  # type: ignore[arg-type]
        axes.barh(y, p75 - p25, left=p25, height=0.6, color="#9ecae1", edgecolor="#3182bd",
                  gid="shown")  # fmt: skip
        axes.plot([median, median], [y - 0.3, y + 0.3], color="#08519c", linewidth=2)
        axes.plot([mean], [y], marker="o", color="#e6550d", markersize=4)
    axes.set_yticks(range(len(rows)), [row.key[0] for row in rows])
    axes.set_xlim(0, 100)
    axes.set_ylim(-0.6, len(rows) - 0.4)
    axes.set_xlabel("score")
    axes.grid(axis="x", color="#e5e5e5")
    axes.set_axisbelow(True)
    return canvas


def _weeks(figure: Figure, min_cell: int) -> Canvas:
    weeks = sorted({row.key[0] for row in figure.rows})
    series = sorted({row.key[1] for row in figure.rows})
    # matplotlib's dates are days since its epoch (1970-01-01, fixed in SVG_SETTINGS).
    x = {week: float(date.fromisoformat(week).toordinal() - _EPOCH) for week in weeks}
    shown = [r for r in figure.rows if not r.suppressed]
    top = max((int(r.values[1] or 0) for r in shown), default=1)
    canvas = Canvas(figsize=(WIDTH, 3.6))
    axes = canvas.add_subplot()
    colours = mpl.colormaps["tab10"]
    for number, name in enumerate(series):
        cells = {r.key[0]: r for r in figure.rows if r.key[1] == name}
        # NaN where a week has no shown cell: the line breaks there rather than bridging it.
        values = [
            float(cells[w].values[1]) if w in cells and not cells[w].suppressed else float("nan")  # type: ignore[arg-type]
            for w in weeks
        ]
        axes.plot([x[w] for w in weeks], values, marker="o", markersize=3, linewidth=1.2,
                  color=colours(number % 10), label=name, gid="shown")  # fmt: skip
    hidden = [x[r.key[0]] for r in figure.rows if r.suppressed]
    if hidden:
        axes.plot(hidden, [-0.06 * top] * len(hidden), linestyle="none", marker="x",
                  markersize=4, color=SUPPRESSED_COLOUR, gid="suppressed",
                  label=f"fewer than {min_cell} learners (not shown)")  # fmt: skip
    axes.xaxis_date()
    axes.set_ylim(-0.12 * top, top * 1.1)
    axes.set_ylabel(figure.measures[1].label)
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    axes.grid(axis="y", color="#e5e5e5")
    canvas.autofmt_xdate()
    return canvas


def _ranked(figure: Figure, min_cell: int) -> Canvas:
    rows = list(reversed(figure.rows))  # the first (hardest) at the top
    canvas = Canvas(figsize=(WIDTH, 0.9 + 0.32 * len(rows)))
    axes = canvas.add_subplot()
    names = [m.name for m in figure.measures]
    value_at = names.index("missed_share") if figure.plot == "ranked_share" else names.index("mean")
    count_at = (
        names.index("answers")
        if "answers" in names
        else names.index("lessons" if "lessons" in names else "learners")
    )
    unit = figure.measures[count_at].label
    for y, row in enumerate(rows):
        value = float(row.values[value_at])  # type: ignore[arg-type]
        axes.barh(y, value, height=0.6, color="#fdae6b", edgecolor="#e6550d", gid="shown")
        axes.text(value + 1, y, f"{value:.1f} ({int(row.values[count_at]):,} {unit})",  # type: ignore[arg-type]
                  va="center", fontsize=8)  # fmt: skip
    axes.set_yticks(range(len(rows)), [_label(row) for row in rows])
    axes.set_xlim(0, 115)
    axes.set_ylim(-0.6, len(rows) - 0.4)
    axes.set_xlabel(figure.measures[value_at].label)
    axes.grid(axis="x", color="#e5e5e5")
    axes.set_axisbelow(True)
    return canvas


def _label(row: Row, limit: int = 48) -> str:
    text = " / ".join(row.key)
    return text if len(text) <= limit else text[: limit - 1] + "…"
