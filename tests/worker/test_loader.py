"""Loading an app: a file, a module path, or a folder (a package, nested or not, or one holding app.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from outlast.errors import ConfigError
from outlast.worker.loader import load_app

FLOW = """
import outlast

@outlast.workflow(name="{name}")
async def flow() -> int:
    return 1
"""


@pytest.fixture(autouse=True)
def _restore_sys_path() -> object:
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def test_a_folder_inside_a_package_is_imported_by_its_dotted_name(tmp_path: Path) -> None:
    # shopapps/blog/__init__.py imports `shopapps.common...`, as the repo's examples/blog does (a name of
    # its own: the real `examples` package may already be imported by other tests).
    (tmp_path / "shopapps" / "blog").mkdir(parents=True)
    (tmp_path / "shopapps" / "common").mkdir()
    (tmp_path / "shopapps" / "__init__.py").write_text("")
    (tmp_path / "shopapps" / "common" / "__init__.py").write_text("NAME = 'blog-x'\n")
    (tmp_path / "shopapps" / "blog" / "__init__.py").write_text(
        "import outlast\nfrom shopapps.common import NAME\n\n"
        "@outlast.workflow(name=NAME)\nasync def flow() -> int:\n    return 1\n"
    )
    assert [wf.name for wf in load_app(str(tmp_path / "shopapps" / "blog"))] == ["blog-x"]


def test_a_plain_folder_with_an_app_file(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "workflows.py").write_text(FLOW.format(name="in-folder"))
    assert [wf.name for wf in load_app(str(tmp_path / "flows"))] == ["in-folder"]


def test_a_folder_without_an_app_says_what_it_looked_for(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"neither __init__\.py nor app\.py, workflows\.py, flows\.py, main\.py"
    ):
        load_app(str(tmp_path))
