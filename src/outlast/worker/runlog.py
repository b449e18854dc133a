"""The worker's log lines about runs: one per takeover and one per run end (or suspension)."""

from __future__ import annotations

import logging

from outlast.core.runner import Outcome
from outlast.events import AttemptStatus
from outlast.sizes import cap_text
from outlast.store.leases import Claim

log = logging.getLogger("outlast.worker")


def log_takeover(worker_id: str, run_id: str, claim: Claim) -> None:
    if claim.detail:  # (found by a takeover scan, or its entry re-read after its worker died)
        log.info("worker %s: took over run %s (attempt %s) from lost worker %s", worker_id, run_id,
                 claim.attempt, claim.detail)  # fmt: skip


def log_end(worker_id: str, run_id: str, attempt: int, outcome: Outcome) -> None:
    """One line per run end (and suspension) in the worker's log."""
    if outcome.status == AttemptStatus.FAILED:
        error = outcome.error
        log.warning(
            "worker %s: run %s failed (attempt %s): %s: %s", worker_id, run_id, attempt,
            error["type"] if error else "?", cap_text(error["message"] if error else "", 500),
        )  # fmt: skip
    elif outcome.status == AttemptStatus.SUSPENDED:
        log.info("worker %s: run %s is waiting (attempt %s)", worker_id, run_id, attempt)
    else:
        log.info("worker %s: run %s %s (attempt %s)", worker_id, run_id, outcome.status, attempt)
