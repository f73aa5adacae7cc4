"""docs/configuration.md is generated from the config models and every field says what it does."""

from semflow.caching import REPO_ROOT
from semflow.config.doc import render, undocumented


def test_every_config_field_has_a_description():
    assert undocumented() == []


def test_the_configuration_page_is_current():
    page = (REPO_ROOT / "docs" / "configuration.md").read_text()
    assert page == render(), "docs/configuration.md is stale: python -m semflow.config.doc > docs/configuration.md"
