from __future__ import annotations

import orjson

from flows.options import ArchiveOptions
from flows.schedule import build_deployment


def test_the_deployment_runs_nightly_with_public_options_only() -> None:
    options = ArchiveOptions(dest="s3://bucket/archive", compress="zstd", keep=30)
    deployment = build_deployment(options, cron="0 2 * * *", name="nightly")
    assert deployment.name == "nightly"
    assert [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules] == [
        ("0 2 * * *", "UTC")
    ]  # type: ignore[union-attr]
    assert deployment.parameters == {"options": options.model_dump(mode="json")}
    # The source and the keys are read by each scheduled run from its settings, never stored.
    stored = orjson.dumps(deployment.parameters)
    assert b"secrets" not in stored and b"postgresql" not in stored
