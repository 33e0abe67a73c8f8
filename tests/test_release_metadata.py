"""The version is defined once, the changelog keeps up with it, the provider info lists every module."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from airflow_provider_batches import __version__
from airflow_provider_batches.get_provider_info import get_provider_info

REPO = Path(__file__).resolve().parents[1]


def test_the_version_comes_from_the_package_only() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"] and "version" not in project["project"]
    assert project["tool"]["hatch"]["version"]["path"] == "airflow_provider_batches/__init__.py"
    assert get_provider_info()["versions"] == [__version__]


def test_changelog_has_an_unreleased_section_and_the_current_version() -> None:
    headings = re.findall(r"^## (.+)$", (REPO / "CHANGELOG.md").read_text(), flags=re.MULTILINE)
    assert headings[0] == "[Unreleased]"
    versions = [h for h in headings[1:] if re.fullmatch(r"\[\d+\.\d+\.\d+[^\]]*\] - \d{4}-\d{2}-\d{2}", h)]
    assert versions == headings[1:], "each released section is '## [x.y.z] - YYYY-MM-DD'"
    assert versions[0].startswith(f"[{__version__}] "), "the newest section is the package's version"


@pytest.mark.parametrize("kind", ["hooks", "operators", "sensors", "triggers"])
def test_provider_info_lists_every_module_of_each_kind(kind: str) -> None:
    """What `airflow providers` lists comes from here: no module left out."""
    folder = REPO / "airflow_provider_batches" / kind
    modules = {
        f"airflow_provider_batches.{kind}.{p.stem}" for p in folder.glob("*.py") if p.stem != "__init__"
    }
    listed = {m for entry in get_provider_info()[kind] for m in entry["python-modules"]}
    assert listed == modules
