"""The operator's notice file: TOML or JSON, checked key by key; absent keys stay unsaid."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from learner_export.arguments import UserError
from learner_export.notice_config import incomplete_warning, load_operator_notice
from learner_export.settings import Settings


def test_toml_and_json_give_the_same_notice(tmp_path: Path) -> None:
    toml = tmp_path / "notice.toml"
    toml.write_text('controller = "Learning Co"\npurposes = ["teaching"]\narchive_keep = 7\n')
    json = tmp_path / "notice.json"
    json.write_text('{"controller": "Learning Co", "purposes": ["teaching"], "archive_keep": 7}')
    assert load_operator_notice(toml) == load_operator_notice(json)
    notice = load_operator_notice(toml)
    assert (notice.controller, notice.purposes, notice.archive_keep) == (
        "Learning Co",
        ("teaching",),
        7,
    )
    assert notice.contact is None and notice.recipients == ()


@pytest.mark.parametrize(
    "text",
    [
        'controler = "typo"\n',
        "purposes = 'one'\n",
        "archive_keep = 0\n",
        "contact = 3\n",
        "x = [\n",
    ],
)
def test_a_bad_file_is_a_one_line_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "notice.toml"
    path.write_text(text)
    with pytest.raises(UserError, match="notice configuration"):
        load_operator_notice(path)
    with pytest.raises(UserError, match="cannot read"):
        load_operator_notice(tmp_path / "missing.toml")


def test_serve_warns_of_what_is_not_configured(tmp_path: Path) -> None:
    path = tmp_path / "notice.toml"
    path.write_text('controller = "Learning Co"\ncontact = "dpo@example.org"\n')
    settings = Settings(notice_config=path)
    warning = incomplete_warning(load_operator_notice(path), settings)
    assert warning is not None and "purposes, recipients, retention" in warning
    assert "LEARNER_EXPORT_NOTICE_CONFIG" in (
        incomplete_warning(load_operator_notice(None), Settings()) or ""
    )


def test_the_readmes_example_is_a_complete_configuration(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```toml\n(.*?)```", readme, flags=re.S)
    path = tmp_path / "notice.toml"
    path.write_text(block)
    notice = load_operator_notice(path)
    assert notice.missing() == [] and notice.archive_keep == 14
