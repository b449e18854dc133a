"""How the terminal shows a run: one plain line per event (pipes, logs, tests) or a live tree.

:func:`plain_line` is the non-terminal form. :class:`RunView` folds events into a tree of steps
(spinner while running, tick, cross, retries, fallback), the streamed text under its step,
progress bars, status lines, waits with the command that answers them, and the end.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from outlast import events as ev
from outlast.events import Event


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_text(error: dict[str, Any] | None) -> str:
    """``Type: message`` (and the step, when the error names one) of an event's error."""
    if not error:
        return "unknown error"
    text = f"{error.get('type', 'Error')}: {error.get('message', '')}"
    return f"{text} (at step {error['step']})" if error.get("step") else text


_EXAMPLES: dict[str, Any] = {
    "string": "…",
    "boolean": True,
    "integer": 0,
    "number": 0,
    "array": [],
    "null": None,
}


def example_of(schema: Any) -> Any:
    """A value shaped like ``schema`` (a JSON Schema), to show how to answer a wait."""
    if not isinstance(schema, dict):
        return True
    if schema.get("type") == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        names = schema.get("required") or list(props)
        return {name: example_of(props.get(name)) for name in names[:4]}
    if schema.get("enum"):
        return schema["enum"][0]
    return _EXAMPLES.get(str(schema.get("type")), True)


def input_command(run_id: str, key: str, schema: Any = None) -> str:
    """The command that answers a wait for input ``key`` (with a value shaped like its schema)."""
    example = json.dumps(example_of(schema), ensure_ascii=False)
    return f"outlast input {run_id} {shlex.quote(key)} --json {shlex.quote(example)}"


def describe(event: Event) -> str:
    """What an event says, in one line without its seq and type."""
    d = event.data
    kind = event.type
    if kind == ev.RUN_QUEUED:
        return f"workflow={d.get('workflow')} version={d.get('version')} input={_short(d.get('input'))}"
    if kind == ev.RUN_STARTED:
        return f"attempt={d.get('attempt')} checkpoints={d.get('checkpoints', 0)} worker={d.get('worker')}"
    if kind == ev.STEP_STARTED:
        return f"{d.get('name')}({_short(d.get('args', {}))})"
    if kind == ev.STEP_COMPLETED:
        extra = " fallback" if d.get("fallback") else ""
        return f"{d.get('name')} in {d.get('duration', 0):.2f}s, tries={d.get('tries', 1)}{extra}"
    if kind in (ev.STEP_RETRYING, ev.RUN_RETRYING):
        return f"try {d.get('try')} failed ({error_text(d.get('error'))}); again in {d.get('delay')}s"
    if kind == ev.STEP_FAILED:
        return error_text(d.get("error"))
    if kind == ev.OUTPUT:
        return json.dumps(d["text"], ensure_ascii=False) if "text" in d else _short(d.get("items"), 200)
    if kind == ev.PROGRESS:
        total = d.get("total")
        return f"{d.get('done')}/{total if total is not None else '?'} {d.get('label') or ''}".rstrip()
    if kind in (ev.STATUS, ev.LOG):
        return str(d.get("message", ""))
    if kind == ev.INPUT_REQUESTED:
        answer = input_command(event.run_id, d.get("key", ""), d.get("schema"))
        return f"{d.get('prompt') or 'input'}: {answer}"
    if kind == ev.RUN_WAITING:
        return ", ".join(str(w.get("key") or w.get("kind")) for w in d.get("waits", []))
    if kind == ev.RUN_COMPLETED:
        return _short(d.get("result"), 400)
    if kind == ev.RUN_FAILED:
        return error_text(d.get("error"))
    if kind == ev.RUN_CANCELLED:
        return str(d.get("reason", ""))
    if kind == ev.STREAM_GAP:
        return f"events {d.get('from')}..{d.get('to')} were trimmed away"
    return _short(d, 200)


def plain_line(event: Event) -> str:
    return f"{event.seq} {event.type} {event.step or '-'} {describe(event)}".rstrip()


@dataclass
class StepView:
    step_id: str
    name: str
    parent: str | None
    args: dict[str, Any] = field(default_factory=dict)
    status: str = "running"  # running | retrying | completed | failed | waiting
    tries: int = 1
    fallback: bool = False
    duration: float | None = None
    error: str | None = None
    text: str = ""
    progress: tuple[float, float | None, str] | None = None
    children: list[str] = field(default_factory=list)


class RunView:
    """The state of one run as its events arrive; :meth:`render` draws it."""

    def __init__(self, run_id: str, workflow: str | None = None) -> None:
        self.run_id = run_id
        self.workflow = workflow
        self.steps: dict[str, StepView] = {}
        self.roots: list[str] = []
        self.status = "queued"
        self.attempt = 0
        self.message: str | None = None
        self.progress: tuple[float, float | None, str] | None = None
        self.waits: dict[str, str] = {}  # step id of the wait → what answers it
        self.end: Event | None = None
        self.last_seq = 0
        self.notes: list[str] = []

    def apply(self, event: Event) -> None:
        self.last_seq = max(self.last_seq, event.seq)
        d, step = event.data, event.step
        kind = event.type
        if kind == ev.RUN_QUEUED:
            self.workflow = self.workflow or d.get("workflow")
        elif kind == ev.RUN_STARTED:
            self.status, self.attempt = "running", event.attempt
            if event.attempt > 1:
                self.notes.append(f"attempt {event.attempt} took over (worker {d.get('worker')})")
        elif kind == ev.STEP_STARTED and step:
            if step not in self.steps:
                parent = d.get("parent")
                (self.steps[parent].children if parent in self.steps else self.roots).append(step)
                self.steps[step] = StepView(step, str(d.get("name", step)), parent, d.get("args", {}))
            else:  # started again by a later attempt: its earlier partial output is void
                s = self.steps[step]
                s.status, s.text, s.error, s.progress = "running", "", None, None
        elif kind in (ev.STEP_COMPLETED, ev.STEP_FAILED, ev.STEP_RETRYING) and step in self.steps:
            s = self.steps[step]
            if kind == ev.STEP_RETRYING:
                s.status, s.tries = "retrying", int(d.get("try", 1)) + 1
                s.error = error_text(d.get("error"))
            else:
                s.status = "completed" if kind == ev.STEP_COMPLETED else "failed"
                s.tries, s.fallback = int(d.get("tries", 1)), bool(d.get("fallback"))
                s.duration = d.get("duration")
                s.error = error_text(d.get("error")) if d.get("error") else None
        elif kind == ev.OUTPUT and "text" in d:
            if step in self.steps:
                self.steps[step].text += str(d["text"])
        elif kind == ev.PROGRESS:
            value = (float(d.get("done") or 0), d.get("total"), str(d.get("label") or ""))
            if step in self.steps:
                self.steps[step].progress = value
            else:
                self.progress = value
        elif kind == ev.STATUS:
            self.message = str(d.get("message", ""))
        elif kind == ev.INPUT_REQUESTED and step:
            prompt = d.get("prompt") or f"input {d.get('key')!r}"
            self.waits[step] = f"{prompt} → {input_command(self.run_id, d.get('key', ''), d.get('schema'))}"
        elif kind == ev.SLEEP_STARTED and step:
            self.waits[step] = f"sleeping {d.get('seconds')}s"
        elif kind == ev.CHILD_WAITING and step:
            self.waits[step] = f"waiting for child run {d.get('child_run_id')} ({d.get('workflow')})"
        elif kind in (ev.INPUT_RECEIVED, ev.INPUT_TIMEOUT, ev.SLEEP_ENDED, ev.CHILD_COMPLETED) and step:
            self.waits.pop(step, None)
        elif kind == ev.RUN_WAITING:
            self.status = "waiting"
        elif kind == ev.STREAM_GAP:
            self.notes.append(describe(event))
        elif event.terminal:
            self.end = event
            self.status = kind.removeprefix("run.")
            for s in self.steps.values():
                if s.status in ("running", "retrying"):
                    s.status = "failed" if kind != ev.RUN_COMPLETED else s.status

    # -- drawing ------------------------------------------------------------------------------

    def _label(self, s: StepView) -> RenderableType:
        args = ", ".join(f"{k}={_short(v, 24)}" for k, v in list(s.args.items())[:3])
        name = f"[bold]{escape(s.name)}[/bold]([dim]{escape(args)}[/dim])"
        extra = ""
        if s.tries > 1:
            extra += f" [yellow]try {s.tries}[/yellow]"
        if s.fallback:
            extra += " [magenta]fallback[/magenta]"
        if s.duration is not None:
            extra += f" [dim]{s.duration:.2f}s[/dim]"
        if s.status in ("running", "retrying"):
            problem = f" [yellow]{escape(s.error)}[/yellow]" if s.status == "retrying" and s.error else ""
            return Spinner("dots", Text.from_markup(name + extra + problem))
        icon = {"completed": "[green]✓[/green]", "failed": "[red]✗[/red]"}.get(s.status, "•")
        problem = f" [red]{escape(s.error)}[/red]" if s.status == "failed" and s.error else ""
        return Text.from_markup(f"{icon} {name}{extra}{problem}")

    def _branch(self, tree: Tree, s: StepView) -> None:
        node = tree.add(self._label(s))
        if s.progress is not None:
            node.add(_bar(*s.progress))
        if s.text:
            lines = s.text.rstrip().splitlines()[-3:]
            node.add(Text("\n".join(lines), style="cyan", overflow="ellipsis"))
        for child in s.children:
            if child in self.steps:
                self._branch(node, self.steps[child])

    def render(self) -> RenderableType:
        title = f"[bold]{escape(self.workflow or 'run')}[/bold] {self.run_id} [dim]{self.status}[/dim]"
        if self.attempt > 1:
            title += f" [yellow]attempt {self.attempt}[/yellow]"
        tree = Tree(Text.from_markup(title))
        for root in self.roots:
            self._branch(tree, self.steps[root])
        parts: list[RenderableType] = [tree]
        parts += [Text(f"  {n}", style="yellow") for n in self.notes[-3:]]
        if self.progress is not None:
            parts.append(_bar(*self.progress))
        if self.message:
            parts.append(Text(f"  {self.message}", style="dim"))
        parts += [Text(f"  ⏸ {w}", style="yellow") for w in self.waits.values()]
        if self.end is not None:
            parts.append(self._ending(self.end))
        return Group(*parts)

    def _ending(self, end: Event) -> RenderableType:
        if end.type == ev.RUN_COMPLETED:
            result = json.dumps(end.data.get("result"), ensure_ascii=False, indent=2, default=str)
            return Text.from_markup(f"[green]completed[/green]\n{escape(result)}")
        if end.type == ev.RUN_FAILED:
            return Text.from_markup(f"[red]failed:[/red] {escape(error_text(end.data.get('error')))}")
        return Text.from_markup(f"[yellow]cancelled[/yellow] {escape(str(end.data.get('reason', '')))}")


def _bar(done: float, total: float | None, label: str) -> RenderableType:
    grid = Table.grid(padding=(0, 1))
    if total:
        grid.add_row(ProgressBar(total=float(total), completed=done, width=30), f"{done:g}/{total:g} {label}")
    else:
        grid.add_row(f"{done:g} {label}")
    return grid
