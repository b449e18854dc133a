"""`make demo` (`outlast demo`): the dev stack, a run, its worker SIGKILLed, the takeover, the counts."""

from __future__ import annotations

import re

import pytest

from tests.cli.support import cli


@pytest.mark.timeout(240)
def test_demo_survives_the_kill_and_shows_it() -> None:
    shown = cli("demo", timeout=200)
    out = shown.stdout
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert re.search(r"SIGKILLed worker (\S+) \(pid \d+\) mid-step", out)
    killed = re.search(r"SIGKILLed worker (\S+)", out)
    took = re.search(r"attempt 2 on worker (\S+) resumed from (\d+) checkpoints", out)
    assert killed is not None
    assert took is not None
    assert took.group(1) != killed.group(1)
    assert int(took.group(2)) >= 2
    # Per-step body counts: what completed before the kill ran once, what it interrupted ran again.
    assert re.search(r"\S+#\d+\s+1x\s+completed before the kill: replayed, not re-run", out)
    assert re.search(r"\S+#\d+\s+2x\s+interrupted by the kill: ran again", out)
    assert re.search(r"console: http://127\.0\.0\.1:\d+/#/runs/\w+", out)
    assert "run.completed" in out
    assert "worker w1 (pid" in shown.stderr or "worker w2 (pid" in shown.stderr  # dev replaced it
    assert "Traceback" not in shown.stderr
