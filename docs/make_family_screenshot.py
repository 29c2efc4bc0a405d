"""Make docs/family-page.png, the README's picture of a demo learner's readable page.

    .venv/bin/python docs/make_family_screenshot.py

Builds the demo database in a temporary directory, exports learner 3 (the demo parent's first
child) as the page `learner-export export 3 --format html` writes, and photographs it in headless
chromium offline (tests/browser.py: every request the page attempted is recorded; there must be
none). Nothing is read from or written to the user's own data directory.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser import render  # noqa: E402

LEARNER = 3
OUTPUT = ROOT / "docs" / "family-page.png"


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="family-screenshot-") as scratch:
        work = Path(scratch)
        url = f"sqlite:///{work / 'demo.sqlite3'}"
        env = {"PATH": "/usr/bin:/bin", "LEARNER_EXPORT_DATA_DIR": str(work / "data")}
        command = [sys.executable, "-m", "learner_export.cli"]
        for args in (
            ["demo-db", "--database-url", url],
            ["export", str(LEARNER), "--format", "html", "--out", str(work), "--database-url", url],
        ):
            subprocess.run([*command, *args], cwd=ROOT, env=env, check=True, capture_output=True)
        (page,) = work.glob(f"learner-data-{LEARNER}-*.html")
        seen = render(page, width=1100, height=1500)
        if seen.requests:
            print(f"the page attempted requests: {seen.requests}", file=sys.stderr)
            return 1
        OUTPUT.write_bytes(seen.png)
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
