"""``python -m examples.blog --topic TEXT``: write a blog post end to end, streamed to the terminal.

Starts the fixture library site, two LLM simulators (or uses real providers when keys are set), a
private Valkey and a worker in this process; starts a ``blog`` run and renders its stream: status
lines, each section's text as its tokens arrive, the review request (``--review``) and the post.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import jsonpatch
from rich.console import Console, Group
from rich.live import Live
from rich.markdown import Markdown
from rich.panel import Panel
from rich.text import Text

from examples.blog.site import library_pages
from examples.blog.workflow import blog
from examples.common.harness import VERSION, Stack, local_stack, run_main
from outlast import events as ev

console = Console()
STREAMING_KNOBS = {"ttft_ms": 300.0, "tokens_per_second": 25.0}  # slow enough to watch


class Screen:
    """The run as the terminal shows it, fed by its events."""

    def __init__(self) -> None:
        self.status = "queued"
        self.draft: Any = None
        self.heading_of: dict[str, str] = {}  # write_section step → its heading
        self.streamed: dict[str, str] = {}  # heading → text so far
        self.tries: dict[str, int] = {}

    def apply(self, event: ev.Event) -> None:
        if event.type == ev.STATUS:
            self.status = event.data["message"]
        elif event.type == ev.OBJECT and event.data["name"] == "draft":
            self.draft = jsonpatch.apply_patch(self.draft, event.data["patch"])
        elif event.type == ev.STEP_STARTED and event.data["name"] == "write_section":
            self.heading_of[event.step or ""] = event.data["args"]["section"]["heading"]
        elif event.type == ev.OUTPUT and event.step and "text" in event.data:
            heading = self.heading_of.get(event.step.split("/", 1)[0])
            if heading is not None:
                if event.data["try"] != self.tries.get(heading):  # a new try: drop the old one's text
                    self.tries[heading], self.streamed[heading] = event.data["try"], ""
                self.streamed[heading] += event.data["text"]

    def render(self) -> Group:
        parts: list[Any] = [Text(f"status: {self.status}", style="bold cyan")]
        if self.draft:
            parts.append(Text(self.draft["title"], style="bold"))
            for section in self.draft["sections"]:
                text = section["text"] or self.streamed.get(section["heading"], "") + "▌"
                style = "green" if section["text"] else "yellow"
                parts.append(Panel(text, title=section["heading"], border_style=style))
        return Group(*parts)


async def ask_review(note: str) -> dict[str, Any]:
    if not sys.stdin.isatty():
        console.print(f"[bold]review[/]: approved (not a terminal); note: {note!r}")
        return {"approved": True, "note": note}
    answer = await asyncio.to_thread(console.input, "[bold]Approve the draft?[/] [Y/n] ")
    typed = await asyncio.to_thread(console.input, "Note for the final edit (enter to skip): ")
    return {"approved": not answer.strip().lower().startswith("n"), "note": typed.strip() or note}


async def follow(stack: Stack, run_id: str, note: str) -> Any:
    screen = Screen()
    after = 0
    while True:
        with Live(screen.render(), console=console, refresh_per_second=12) as live:
            async for event in stack.dispatcher.store.read_events(run_id, after=after, block_ms=500):
                after = event.seq
                screen.apply(event)
                live.update(screen.render())
                if event.type == ev.INPUT_REQUESTED or event.type in ev.TERMINAL_TYPES:
                    break
        if event.type != ev.INPUT_REQUESTED:
            return await stack.dispatcher.result(run_id, timeout=5)
        console.print(f"[bold]{event.data['prompt']}[/]  (the run waits, holding no worker; "
                      f"outlast input {run_id} approve --json '{{...}}' would do too)")  # fmt: skip
        await stack.dispatcher.supply_input(run_id, "approve", await ask_review(note))


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.blog", description=__doc__.split("\n")[0])
    parser.add_argument("--topic", default="durable workflows for AI agents", help="what the post is about")
    parser.add_argument("--sections", type=int, default=3, help="how many sections (1-6, default 3)")
    parser.add_argument("--review", action="store_true", help="wait for an approval before the final edit")
    parser.add_argument("--note", default="", help="the reviewer's note when not asked on a terminal")
    parser.add_argument("--local", action="store_true", help="use SmolLM2, offline (outlast[local])")
    parser.add_argument("--data-dir", help="keep the store here (default: a temporary directory)")
    args = parser.parse_args(argv)
    if not args.topic.strip():
        parser.error("--topic must not be empty")
    if not 1 <= args.sections <= 6:
        parser.error("--sections must be between 1 and 6")
    knobs, data = STREAMING_KNOBS, args.data_dir
    async with local_stack(
        [blog], library_pages(), sim_knobs=knobs, data_dir=data, local_model=args.local
    ) as stack:
        console.print(f"[bold]library[/] {stack.site.url}/library/  [bold]LLM[/] {stack.provider_label}")
        run_input = {"topic": args.topic, "library": f"{stack.site.url}/library/", "review": args.review,
                     "sections": args.sections}  # fmt: skip
        started = await stack.dispatcher.start(blog, run_input, version=VERSION)
        console.print(f"[bold]run[/] {started.run_id}")
        post = await follow(stack, started.run_id, args.note)
        body = "\n\n".join(f"## {s['heading']}\n\n{s['text']}" for s in post["sections"])
        console.print()
        console.print(Markdown(f"# {post['title']}\n\n*{post['standfirst']}*\n\n{body}"))
        console.print("sources: " + ", ".join(post["sources"]))


if __name__ == "__main__":
    run_main(main)
