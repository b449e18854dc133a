"""The browser client's own suite: ``node --test`` in ``src/outlast/clients/js``.

It covers the reducer, JSON Patch, the TypeScript declarations, and (through
:mod:`.launcher`) the client and its React hook against a real API, worker and Valkey. Skips
when Node or the package's dev dependencies (``make js``) are missing, except under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parents[2] / "src" / "outlast" / "clients" / "js"


def node() -> str:
    path = shutil.which("node")
    missing = "Node is not installed" if path is None else None
    if path is not None and not (JS / "node_modules").is_dir():
        missing = f"the client's dev dependencies are not installed (make js, or npm ci in {JS})"
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{missing}: required under CI=true")
        pytest.skip(missing)
    assert path is not None
    return path


@pytest.mark.timeout(300)
def test_node_suite() -> None:
    cmd = [node(), "--test", "--test-concurrency=1", "--test-timeout=90000", "--test-reporter=spec", "test/"]
    env = {**os.environ, "OUTLAST_PYTHON": sys.executable}
    result = subprocess.run(cmd, cwd=JS, env=env, capture_output=True, text=True, timeout=280, check=False)
    assert result.returncode == 0, f"node --test failed:\n{result.stdout}\n{result.stderr}"
    assert "# fail 0" in result.stdout or "ℹ fail 0" in result.stdout, result.stdout
