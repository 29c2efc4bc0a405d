from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from flows.archive import archive_learners
from flows.options import ArchiveOptions, ArchiveSecrets


def test_a_destination_url_with_credentials_is_refused() -> None:
    with pytest.raises(ValidationError, match="must not hold credentials"):
        ArchiveOptions(dest="s3://key:hunter2@bucket/archive")
    assert ArchiveOptions(dest="s3://bucket/archive").dest == "s3://bucket/archive"


def test_prefect_stores_the_secrets_parameter_masked() -> None:
    secrets = ArchiveSecrets(
        source_url=SecretStr("postgresql://reader:hunter2@db/platform"),
        encryption_key=SecretStr("a-key"),
    )
    stored = archive_learners.serialize_parameters(
        {"options": ArchiveOptions(dest="/srv/archive"), "secrets": secrets}
    )
    assert "hunter2" not in str(stored) and "a-key" not in str(stored)
    assert stored["options"]["dest"] == "/srv/archive"


def test_a_short_pseudonym_key_is_refused_before_the_run() -> None:
    from flows.errors import OptionUnavailable
    from flows.options import check_options

    options = ArchiveOptions(dest="/tmp/x", parquet=True)
    with pytest.raises(OptionUnavailable, match="must be at least 16 bytes"):
        check_options(options, encryption_key=None, pseudonym_key="short")
    check_options(options, encryption_key=None, pseudonym_key="long-enough-pseudonym-key")
