"""Regenerate the README's screenshot of the analyst report from the demo's snapshot.

    python3 dev.py demo                                   # the demo snapshot, with report.html
    .venv/bin/python docs/make_screenshots.py             # -> docs/report.png

Renders `snapshots/<newest>/report.html` (or the page given) in headless chromium with the
test suite's offline browser (`tests/browser.py`: no network, every request recorded), refuses a
page that attempted any request, and writes the top of the page as docs/report.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WIDTH, HEIGHT = 1000, 1900
"""The page's first screen and a half: the snapshot in numbers and the score plots."""
LIMIT = 300_000
"""The README's image stays small: bytes, checked here."""


def newest_report() -> Path:
    reports = sorted((ROOT / "snapshots").glob("*/report.html"))
    if not reports:
        raise SystemExit("no snapshots/*/report.html: run `python3 dev.py demo` first")
    return reports[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("page", nargs="?", type=Path, help="a report.html (default: the newest)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "report.png")
    args = parser.parse_args()
    from tests.browser import render

    page = args.page or newest_report()
    seen = render(page, width=WIDTH, height=HEIGHT)
    if seen.requests:
        raise SystemExit(f"{page} attempted network requests: {list(seen.requests)}")
    if len(seen.png) > LIMIT:
        raise SystemExit(f"the screenshot is {len(seen.png)} bytes, over {LIMIT}")
    args.out.write_bytes(seen.png)
    print(f"{args.out} ({len(seen.png) // 1000} KB) from {page}")


if __name__ == "__main__":
    main()
