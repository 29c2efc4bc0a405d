"""What serve.py imports: the endpoint starts fast and stands apart from the command line.

`serve.py` is a module, which the import contracts of `python3 dev.py lint` (import-linter) cannot
take as a root, so its side is checked here: at run time in a fresh interpreter, and in its
source (function-level imports included).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import DemoSource

ROOT = Path(__file__).resolve().parents[2]
NEVER = ("prefect", "flows", "pandas")
"""Heavy or orchestration modules the endpoint must never load."""
NOT_FROM_SERVE = (*NEVER, "learner_export.cli", "learner_export.commands_serve")
"""What serve.py may not import at all: the command line imports serve.py, never the reverse."""


def _imported_names(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _is_within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_serve_py_source_imports_neither_the_flows_nor_the_command_line() -> None:
    names = _imported_names((ROOT / "serve.py").read_text())

    assert "learner_export.serving" in names  # the checker sees function-level imports too
    assert [n for n in names if any(_is_within(n, p) for p in NOT_FROM_SERVE)] == []


def test_the_checker_would_see_a_forbidden_import() -> None:
    names = _imported_names("def run():\n    from learner_export import commands_serve\n")
    assert any(_is_within(n, "learner_export.commands_serve") for n in names)


def test_building_the_app_loads_no_prefect_flows_or_pandas(
    sqlite_demo: DemoSource, tmp_path: Path
) -> None:
    code = (
        "import sys; import serve; serve.create_app_from_environment(); "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {NEVER!r}))"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": sqlite_demo.url,
        "JWT_SECRET": "a-test-secret-that-is-long-enough-for-hs256",
        "LEARNER_EXPORT_DATA_DIR": str(tmp_path),
    }
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=120, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
