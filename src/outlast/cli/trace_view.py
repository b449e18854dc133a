"""``outlast trace``: a run's span tree with durations, tries, errors, tokens and cost."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.text import Text
from rich.tree import Tree

from outlast.cli.render import error_text
from outlast.client import Run

_ICONS = {"completed": "[green]✓[/green]", "failed": "[red]✗[/red]", "cancelled": "[yellow]⊘[/yellow]"}


@dataclass
class Totals:
    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    priced: bool = False

    def add(self, usage: dict[str, Any]) -> None:
        self.calls += 1
        self.tokens_in += int(usage.get("tokens_in") or 0)
        self.tokens_out += int(usage.get("tokens_out") or 0)
        if usage.get("cost") is not None:
            self.cost += float(usage["cost"])
            self.priced = True


def llm_usage(span: dict[str, Any]) -> dict[str, Any] | None:
    """The recorded Completion of an LLM step (provider, model, tokens, cost), if this is one."""
    result = span.get("result")
    if isinstance(result, dict) and "tokens_in" in result and "provider" in result:
        return result
    return None


def _cost(value: float | None) -> str:
    return "cost unknown (no price)" if value is None else f"${value:.8f}".rstrip("0").rstrip(".")


def _args(args: Any) -> str:
    if not isinstance(args, dict):
        return ""
    parts = []
    for key, value in args.items():
        text = json.dumps(value, ensure_ascii=False, default=str)
        parts.append(f"{key}={text if len(text) <= 40 else text[:39] + '…'}")
    return ", ".join(parts)


def _label(span: dict[str, Any], totals: Totals) -> Text:
    status = str(span.get("status", ""))
    icon = _ICONS.get(status, "[cyan]…[/cyan]" if status in ("running", "waiting") else "•")
    kind = span.get("kind", "step")
    name = escape(str(span.get("name")))
    line = f"{icon} [bold]{name}[/bold]"
    if kind == "step":
        line += f"([dim]{escape(_args(span.get('args')))}[/dim])"
    else:
        line += f" [dim]({kind})[/dim]"
    started, ended = span.get("started_at"), span.get("ended_at")
    if started is not None and ended is not None:
        line += f" {ended - started:.3f}s"
    else:
        line += f" [dim]{status}[/dim]"
    if int(span.get("tries") or 1) > 1:
        line += f" [yellow]tries={span['tries']}[/yellow]"
    if span.get("fallback"):
        line += " [magenta]fallback[/magenta]"
    usage = llm_usage(span)
    if usage is not None:
        totals.add(usage)
        model = escape(f"{usage.get('provider')}/{usage.get('model')}")
        tokens = f"tokens {usage.get('tokens_in', 0)}→{usage.get('tokens_out', 0)}"
        line += f" [cyan]{model} {tokens} {_cost(usage.get('cost'))}[/cyan]"
    if span.get("error") and status != "completed":
        line += f" [red]{escape(error_text(span['error']))}[/red]"
    for retry in span.get("retries") or []:
        problem = escape(error_text(retry.get("error")))
        line += f"\n  [yellow]try {retry.get('try')} failed: {problem}[/yellow]"
    return Text.from_markup(line)


def _add(tree: Tree, span: dict[str, Any], totals: Totals) -> None:
    node = tree.add(_label(span, totals))
    for child in span.get("children") or []:
        _add(node, child, totals)


def render_trace(run: Run, spans: list[dict[str, Any]]) -> RenderableType:
    took = ""
    if run.finished_at and run.created_at:
        took = f" in {run.finished_at - run.created_at:.3f}s"
    title = f"[bold]{escape(run.workflow or 'run')}[/bold] {run.run_id} {run.status}{took}"
    if run.attempt > 1:
        title += f" [yellow](attempt {run.attempt})[/yellow]"
    tree = Tree(Text.from_markup(title))
    totals = Totals()
    for span in spans:
        _add(tree, span, totals)
    parts: list[RenderableType] = [tree]
    if run.error:
        parts.append(Text.from_markup(f"[red]error:[/red] {escape(error_text(run.error))}"))
    cost = _cost(totals.cost) if totals.priced else "cost unknown (no price)"
    parts.append(
        Text(
            f"total: {totals.calls} LLM calls, {totals.tokens_in} tokens in, "
            f"{totals.tokens_out} tokens out, {cost}"
        )
    )
    return Group(*parts)
