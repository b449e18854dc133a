"""What the client returns: runs and pages of runs, as the API describes them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from outlast.events import TERMINAL_STATUSES, RunStatus


class Run(BaseModel):
    """A run as the API last described it. After ``start`` only the id, status and URLs are known;
    ``get`` fills in the rest (input with secrets masked, result or error, objects, progress)."""

    model_config = ConfigDict(extra="ignore")

    run_id: str
    status: RunStatus | Literal["cancelling"]  # cancelling: what cancel() answers for a running run
    workflow: str | None = None
    version: str | None = None
    attempt: int = 0
    input: dict[str, Any] | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    created_at: float | None = None
    started_at: float | None = None
    updated_at: float | None = None
    finished_at: float | None = None
    last_seq: int = 0
    progress: dict[str, Any] | None = None
    status_message: str | None = None
    cancel_requested: bool = False
    objects: dict[str, Any] = {}
    waiting_for: list[dict[str, Any]] = []  # pending input requests, sleeps and child runs
    created: bool | None = None
    url: str | None = None
    events_url: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class RunPage(BaseModel):
    """One page of ``list_runs``; pass ``next_cursor`` back for the next (None at the end)."""

    runs: list[Run]
    next_cursor: str | None = None
