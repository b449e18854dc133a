"""The third-party JavaScript clients, for real: ``node --test`` suites in ``tests/js`` (the ``ai``
package's DefaultChatTransport / readUIMessageStream / AbstractChat, and ``@ag-ui/client``'s
HttpAgent with its verifier) against this package's API, worker and Valkey.

``make test`` installs them (``npm ci`` in tests/js). Without Node or the packages these tests
skip, except under ``CI=true``, where they fail instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from ..conftest import Servers
from ..support import ROOT

JS = ROOT / "tests" / "js"


def _missing() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed"
    for package in ("ai", "@ag-ui/client", "rxjs"):
        if not (JS / "node_modules" / package / "package.json").exists():
            return f"tests/js has no node_modules/{package}: run `make test` (it runs npm ci there)"
    return None


@pytest.fixture(scope="module")
def node() -> str:
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: the JS client tests must run, but {reason}")
        pytest.skip(reason)
    return shutil.which("node") or "node"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("suite", ["ai-sdk.test.mjs", "ag-ui.test.mjs"])
def test_node_suite(suite: str, node: str, servers: Servers) -> None:
    env = {**os.environ, "OUTLAST_API_URL": servers.api.base_url, "OUTLAST_REDIS_URL": servers.redis_url}
    done = subprocess.run(
        [node, "--test", "--test-reporter=spec", suite],
        cwd=JS, env=env, capture_output=True, text=True, timeout=280, check=False,
    )  # fmt: skip
    report = done.stdout + done.stderr
    assert done.returncode == 0, report
    counts = dict(re.findall(r"\b(pass|fail) (\d+)", report))
    assert int(counts.get("pass", "0")) > 0, report  # the suite really ran tests
    assert counts.get("fail") == "0", report
