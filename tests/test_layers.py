"""Layers import one way: what a module loads is checked in a fresh interpreter's ``sys.modules``.

(In this process other tests have imported everything already, so the check runs in a subprocess.)
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest


def modules_loaded_by(module: str) -> list[str]:
    """The ``outlast`` modules a fresh interpreter has loaded after ``import <module>``."""
    code = (
        f"import json, sys, {module}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'outlast' or m.startswith('outlast.'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded: list[str] = json.loads(done.stdout)
    assert module in loaded  # the probe itself worked
    return loaded


def test_the_api_app_does_not_import_the_worker() -> None:
    loaded = modules_loaded_by("outlast.api.app")
    assert "outlast.control.dispatch" in loaded  # the API starts runs through the control plane
    assert "outlast.worker.worker" not in loaded
    assert [m for m in loaded if m == "outlast.worker" or m.startswith("outlast.worker.")] == []


@pytest.mark.parametrize("module", ["outlast.control", "outlast.cli.api"])
def test_the_control_plane_and_api_command_do_not_import_the_worker(module: str) -> None:
    loaded = modules_loaded_by(module)
    assert [m for m in loaded if m == "outlast.worker" or m.startswith("outlast.worker.")] == []


SRC = Path(__file__).resolve().parents[1] / "src" / "outlast"
#: What each layer may not import (a layer imports only the ones below it).
FORBIDDEN = {
    "store": {"core", "control", "worker", "api", "cli", "client", "llm"},
    "core": {"control", "worker", "api", "cli", "client"},
    "control": {"worker", "api", "cli", "client"},
    "api": {"worker", "cli", "client"},
}
#: The bottom modules: every layer imports them, they import no layer.
BOTTOM = ("errors", "events", "serde", "ids", "masking")


def outlast_imports(path: Path) -> set[str]:
    """The ``outlast.*`` modules a source file imports (at any depth, TYPE_CHECKING included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "outlast":
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "outlast")
    return found


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_only_downward(layer: str) -> None:
    files = sorted((SRC / layer).rglob("*.py"))
    assert files
    wrong = {
        f"{path.relative_to(SRC)} imports {module}"
        for path in files
        for module in outlast_imports(path)
        if layer_of(module) in FORBIDDEN[layer]
    }
    assert sorted(wrong) == []


@pytest.mark.parametrize("name", BOTTOM)
def test_bottom_modules_import_no_layer(name: str) -> None:
    imported = {layer_of(module) for module in outlast_imports(SRC / f"{name}.py")}
    assert imported <= set(BOTTOM)


def test_the_worker_is_built_from_collaborators_not_mixins() -> None:
    from outlast.worker.bookkeeping import Bookkeeping
    from outlast.worker.launching import Launching
    from outlast.worker.upkeep import Upkeep
    from outlast.worker.worker import Worker

    assert Worker.__mro__ == (Worker, object)
    for part in (Bookkeeping, Upkeep, Launching):
        assert part.__mro__ == (part, object)
    stubs = [p.name for p in (SRC / "worker").glob("*.py") if "NotImplementedError" in p.read_text()]
    assert stubs == []


def private_from_elsewhere(path: Path, module: str) -> bool:
    """``module`` names something private (``_x``) of a package other than the importer's own (a
    package may use its private modules, e.g. ``outlast.client`` re-exporting ``_async``)."""
    parts = module.split(".")
    importer = ["outlast", *path.relative_to(SRC).with_suffix("").parts]
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__") and parts[:i] != importer[:i]:
            return True
    return False


def test_no_module_imports_another_modules_private_names() -> None:
    private = {
        f"{path.relative_to(SRC)} imports {module}"
        for path in SRC.rglob("*.py")
        for module in outlast_imports(path)
        if private_from_elsewhere(path, module)
    }
    assert sorted(private) == []
