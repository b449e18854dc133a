"""Layers import one way: what a module loads is checked in a fresh interpreter's ``sys.modules``.

(In this process other tests have imported everything already, so the check runs in a subprocess.)
"""

from __future__ import annotations

import json
import subprocess
import sys

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
