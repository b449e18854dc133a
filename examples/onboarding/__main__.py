"""``python -m examples.onboarding --companies N``: enrich N fixture companies end to end.

Starts the fixture site, two LLM simulators (or uses real providers when keys are set), a private
Valkey and a worker in this process; starts an ``onboarding`` run for the companies and shows each
company's profile filling in from the run streams, then prints the profiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import jsonpatch
from rich.console import Console
from rich.live import Live
from rich.table import Table

from examples.common.harness import VERSION, Stack, local_stack, run_main
from examples.onboarding.site import companies, site_pages
from examples.onboarding.workflow import onboarding, onboarding_company
from outlast import events as ev

console = Console()


class Board:
    """What the terminal shows: one row per company, fed by the runs' events."""

    def __init__(self, urls: list[str]) -> None:
        self.rows: dict[str, dict[str, Any]] = {url: {"status": "queued"} for url in urls}
        self.batch = "queued"
        self.retries = 0

    def table(self) -> Table:
        table = Table(title=f"onboarding: {self.batch}", expand=False)
        for column in ("company", "pages", "products", "people", "plans", "stack", "status"):
            table.add_column(column)
        for url, row in self.rows.items():
            profile = row.get("profile") or {}
            table.add_row(
                profile.get("name") or url.rstrip("/").rsplit("/", 1)[-1],
                row.get("pages", ""),
                str(len(profile.get("products", []))),
                str(len(profile.get("people", []))),
                str(len(profile.get("pricing", []))),
                ", ".join(profile.get("tech_stack", [])[:4]),
                row["status"][:60],
            )
        return table

    def apply(self, url: str, event: ev.Event) -> None:
        row = self.rows[url]
        if event.type == ev.STATUS:
            row["status"] = event.data["message"]
        elif event.type == ev.PROGRESS:
            verb = str(event.data.get("label") or "").rsplit(" ", 1)[-1]  # "fetched", then "read"
            row["pages"] = f"{verb} {event.data['done']:g}/{event.data['total']:g}"
        elif event.type == ev.OBJECT and event.data["name"] == "profile":
            row["profile"] = jsonpatch.apply_patch(row.get("profile"), event.data["patch"])
        elif event.type == ev.STEP_RETRYING:
            self.retries += 1
        elif event.type in ev.TERMINAL_TYPES:
            row["status"] = event.type.removeprefix("run.")


async def follow(stack: Stack, run_id: str, board: Board, live: Live) -> Any:
    """Render the batch run and, as they start, each company's child run; return the result."""
    followers: list[asyncio.Task[None]] = []

    async def child(child_id: str) -> None:
        url = ""
        async for event in stack.dispatcher.store.read_events(child_id, block_ms=500):
            if event.type == ev.RUN_QUEUED:
                url = event.data["input"]["url"]
            if url in board.rows:
                board.apply(url, event)
                live.update(board.table())

    async for event in stack.dispatcher.store.read_events(run_id, block_ms=500):
        if event.type == ev.CHILD_STARTED:
            followers.append(asyncio.create_task(child(event.data["child_run_id"])))
        elif event.type == ev.STATUS:
            board.batch = event.data["message"]
        elif event.type in ev.TERMINAL_TYPES:
            board.batch = event.type.removeprefix("run.")
        live.update(board.table())
    await asyncio.gather(*followers)
    return await stack.dispatcher.result(run_id, timeout=5)


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.onboarding", description=__doc__.split("\n")[0])
    parser.add_argument("--companies", type=int, default=5, help="how many fixture companies (default 5)")
    parser.add_argument("--rpm", type=int, default=600, help="requests per minute per provider (default 600)")
    parser.add_argument("--local", action="store_true", help="use SmolLM2, offline (outlast[local])")
    parser.add_argument("--data-dir", help="keep the store here (default: a temporary directory)")
    parser.add_argument("--json", action="store_true", help="print the profiles as JSON")
    args = parser.parse_args(argv)
    if not 1 <= args.companies <= 200:
        parser.error("--companies must be between 1 and 200")
    fixture = companies(args.companies)
    async with local_stack([onboarding, onboarding_company], site_pages(fixture), rpm=args.rpm,
                           data_dir=args.data_dir, local_model=args.local) as stack:  # fmt: skip
        urls = [stack.site.url + c.root for c in fixture]
        console.print(f"[bold]fixture site[/] {stack.site.url}  [bold]LLM[/] {stack.provider_label}")
        started = await stack.dispatcher.start(onboarding, {"urls": urls}, version=VERSION)
        console.print(f"[bold]run[/] {started.run_id}  (outlast events {started.run_id} shows its stream)")
        board, t0 = Board(urls), time.perf_counter()
        with Live(board.table(), console=console, refresh_per_second=8) as live:
            profiles = await follow(stack, started.run_id, board, live)
        calls = sum(sim.stats()["accepted_requests"] for sim in stack.sims)
        took = time.perf_counter() - t0
        console.print()  # Live leaves the cursor at the end of the table
        console.print(
            f"{len(profiles)} profiles in {took:.1f}s" + (f", {calls} LLM calls" if stack.sims else "")
        )
        if args.json:
            console.print_json(json.dumps(profiles))


if __name__ == "__main__":
    run_main(main)
