"""The docs site's generated reference (docs/reference/hooks.py) misses no setting and no public name."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

import ccr
from ccr import CCRSettings

REFERENCE = Path(__file__).parents[3] / "docs" / "reference"
INVALID = "not a valid value!"


@pytest.fixture(scope="module")
def hooks():
    spec = importlib.util.spec_from_file_location("ccr_docs_hooks", REFERENCE / "hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as mkdocs loads it: dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.upper().startswith("CCR_") or name.upper() == "REDIS_URL":
            monkeypatch.delenv(name)
    return monkeypatch


def test_every_field_has_one_row_in_order(hooks):
    """The table has one row per CCRSettings field, in the order the class defines them."""
    assert [row.field for row in hooks.settings_rows()] == list(CCRSettings.model_fields)


def test_every_row_is_rendered(hooks):
    """Each field appears in the page's Markdown with its environment variables and default."""
    rows = hooks.settings_rows()
    table = hooks.settings_table(rows)
    for row in rows:
        line = next(line for line in table.splitlines() if line.startswith(f"| **`{row.field}`**<br>"))
        assert all(f"`{name}`" in line for name in row.env)
        assert row.default in line


def test_every_setting_is_described(hooks):
    """A setting without a description fails here, not silently on the site."""
    missing = [row.field for row in hooks.settings_rows() if not row.description.strip()]
    assert not missing, (
        f"describe {missing}: Field(description=...) or a comment above the field in "
        "ccr/_settings.py, or DESCRIPTIONS in docs/reference/hooks.py"
    )


def test_descriptions_name_only_real_fields(hooks):
    """No description is left behind for a setting that was renamed or removed."""
    assert set(hooks.DESCRIPTIONS) <= set(CCRSettings.model_fields)


def test_prefixed_name_and_aliases(hooks):
    """Fields read CCR_<FIELD>; redis_url also reads REDIS_URL, the CCR_ name listed first."""
    env = {row.field: row.env for row in hooks.settings_rows()}
    assert env["url"] == ("CCR_URL",)
    assert env["quota_on_cancel"] == ("CCR_QUOTA_ON_CANCEL",)
    assert env["redis_url"] == ("CCR_REDIS_URL", "REDIS_URL")


def test_defaults_as_written_in_the_environment(hooks):
    """Defaults read as one would set them: unset, lower-case booleans, comma-separated lists."""
    default = {row.field: row.default for row in hooks.settings_rows()}
    assert default["url"] == "`http://127.0.0.1:3456`"
    assert default["redis_url"] == "unset"
    assert default["verify_tls"] == "`true`"
    assert default["quota_warning_thresholds"] == "`0.8,0.95`"
    assert default["deadline"] == "`180`"


@pytest.mark.parametrize("field", list(CCRSettings.model_fields))
def test_each_listed_variable_is_read(hooks, clean_env, field):
    """Every environment variable the table lists really sets its field."""
    row = next(row for row in hooks.settings_rows() if row.field == field)
    for name in row.env:
        clean_env.setenv(name, INVALID)
        settings, error = _settings_from_env()
        clean_env.delenv(name)
        if error is not None:  # refused, and the error names this field
            assert field in {str(e["loc"][0]) for e in error.errors()}, (name, error)
        else:  # accepted (a path, a secret): the field took the value
            assert getattr(settings, field) != CCRSettings.model_fields[field].default, name


def _settings_from_env() -> tuple[CCRSettings | None, ValidationError | None]:
    try:
        return CCRSettings(), None
    except ValidationError as exc:
        return None, exc


class _Extended(CCRSettings):
    # A setting nobody has documented on a page yet.
    brand_new_setting: int = 7


def test_a_new_field_gets_a_row_by_itself(hooks):
    """A field added to the model is listed without editing any page."""
    row = next(row for row in hooks.settings_rows(_Extended) if row.field == "brand_new_setting")
    assert row.env == ("CCR_BRAND_NEW_SETTING",)
    assert row.default == "`7`"
    assert row.description == "A setting nobody has documented on a page yet."


def test_reference_pages_render_every_public_name(hooks):
    """Every name of ccr.__all__ has its ``::: ccr.<name>`` block on a reference page."""
    pages = [path.read_text(encoding="utf-8") for path in sorted(REFERENCE.glob("*.md"))]
    assert hooks.undocumented(pages) == []
    assert {f"ccr.{name}" for name in ccr.__all__} <= hooks.documented(pages)


def test_the_settings_page_gets_the_table(hooks):
    """The hook replaces what stands between the settings page's markers with the table."""
    page = (REFERENCE / "settings.md").read_text(encoding="utf-8")
    built = hooks.on_page_markdown(page, page=None, config=None, files=None)
    assert hooks.MARKER not in built
    assert hooks.END_MARKER not in built
    assert "*The tables are generated from" not in built  # the text for the bare Markdown
    assert "| **`redis_url`**<br>`CCR_REDIS_URL`<br>`REDIS_URL` | unset |" in built
