"""Loaded by the Prefect test server's subprocess (the flow tests put this folder on PYTHONPATH).

The locked Prefect (3.8.8) declares some server routes with `Body(min_items=...)` /
`Body(max_items=...)`, which the locked FastAPI (0.165) no longer accepts, so the server cannot
even import. Until the lock pairs versions that agree, the tests translate those two keywords to
their current names (`min_length` / `max_length`); nothing outside the test suite uses this.
"""

from __future__ import annotations

from typing import Any

import fastapi
import fastapi.param_functions

_body = fastapi.param_functions.Body


def _compatible_body(
    *args: Any, min_items: int | None = None, max_items: int | None = None, **kwargs: Any
) -> Any:
    if min_items is not None:
        kwargs.setdefault("min_length", min_items)
    if max_items is not None:
        kwargs.setdefault("max_length", max_items)
    return _body(*args, **kwargs)


if getattr(fastapi.Body, "__name__", "") != "_compatible_body":
    fastapi.Body = fastapi.param_functions.Body = _compatible_body  # type: ignore[assignment]
