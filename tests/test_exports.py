"""The public surface: ``outlast.__all__`` and ``outlast.llm.__all__`` import, name everything
public, and match the list in docs/api.md."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import outlast
import outlast.errors
import outlast.llm
import outlast.llm.errors

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [outlast, outlast.llm]


def documented(package: str) -> set[str]:
    """The names in backticks under ``## `<package>``` in docs/api.md (``LLM.stream`` and
    ``@workflow`` are not names)."""
    doc = (ROOT / "docs" / "api.md").read_text()
    section = doc.split(f"## `{package}`\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", section))


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_every_exported_name_imports(package: ModuleType) -> None:
    assert len(package.__all__) == len(set(package.__all__))
    for name in package.__all__:
        value = getattr(package, name)
        assert getattr(value, "__name__", name) == name or not callable(value), name


@pytest.mark.parametrize("package", ["outlast", "outlast.llm"])
def test_star_import_gives_exactly_the_public_names(package: str) -> None:
    # In a fresh interpreter, so the lazy names (the HTTP client, the LLM layer) load for real.
    code = f"from {package} import *; import {package} as p; print(sorted(set(p.__all__) - set(dir())))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_the_docs_list_every_public_name(package: ModuleType) -> None:
    assert documented(package.__name__) == set(package.__all__)


def test_nothing_public_in_outlast_is_left_out_of_all() -> None:
    public = {
        name for name, value in vars(outlast).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }  # fmt: skip
    assert public <= set(outlast.__all__)


ERROR_MODULES = [(outlast.errors, outlast), (outlast.llm.errors, outlast.llm)]


@pytest.mark.parametrize(("errors", "package"), ERROR_MODULES, ids=["outlast", "outlast.llm"])
def test_every_error_class_is_exported(errors: ModuleType, package: ModuleType) -> None:
    classes = {
        name for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, Exception) and value.__module__ == errors.__name__
    }  # fmt: skip
    assert classes <= set(package.__all__)


def test_the_lazy_llm_names_are_typed_and_exported_alike() -> None:
    # outlast.llm loads its names on first use from a table, and imports them for type checkers
    # under TYPE_CHECKING: the table, those imports and __all__ must name the same things.
    tree = ast.parse((ROOT / "src" / "outlast" / "llm" / "__init__.py").read_text())
    guarded = next(node for node in tree.body if isinstance(node, ast.If))
    typed = {
        (node.module, alias.name)
        for node in ast.walk(guarded)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    lazy = {(module, name) for name, module in outlast.llm._WHERE.items()}
    assert typed == lazy
    assert {name for _, name in lazy} == set(outlast.llm.__all__)
    for module, name in lazy:
        assert getattr(importlib.import_module(module), name) is getattr(outlast.llm, name)
