"""Which files ``outlast dev`` watches and hashes into its version, for each way of naming the app."""

from __future__ import annotations

from pathlib import Path

import pytest

from outlast.cli.dev import watch_roots
from outlast.cli.devsup import code_version


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "apps" / "blog").mkdir(parents=True)
    (tmp_path / "apps" / "__init__.py").write_text("")
    (tmp_path / "apps" / "blog" / "__init__.py").write_text("")
    (tmp_path / "apps" / "blog" / "flows.py").write_text("X = 1\n")
    (tmp_path / "single.py").write_text("Y = 1\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("target", ["apps/blog", "apps.blog", "apps.blog.flows", "apps/blog/flows.py"])
def test_a_folder_a_module_path_and_a_file_all_watch_the_apps_folder(project: Path, target: str) -> None:
    assert watch_roots([target]) == [project / "apps" / "blog"]


def test_the_version_follows_the_code(project: Path) -> None:
    """A module path names real files (not the hash of nothing), so an edit changes the version."""
    before = code_version(watch_roots(["apps.blog"]))
    assert before == code_version(watch_roots(["apps.blog"]))
    (project / "apps" / "blog" / "flows.py").write_text("X = 2\n")
    assert code_version(watch_roots(["apps.blog"])) != before
