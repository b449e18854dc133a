"""``outlast llm-sim``: the OpenAI/Anthropic-compatible LLM simulator, for demos, tests and benches."""

from __future__ import annotations

from typing import Annotated

import typer

from outlast.cli.main import app


@app.command("llm-sim")
def llm_sim(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to bind.")] = 8900,
    ttft_ms: Annotated[float, typer.Option(min=0, help="Time to first token, ms.")] = 0,
    tokens_per_second: Annotated[float, typer.Option(min=0, help="Streaming speed (0 = unthrottled).")] = 0,
    rpm_limit: Annotated[int, typer.Option(min=0, help="Requests per minute before 429 (0 = none).")] = 0,
    tpm_limit: Annotated[int, typer.Option(min=0, help="Tokens per minute before 429 (0 = none).")] = 0,
    error_rate: Annotated[float, typer.Option(min=0, max=1, help="Share of requests answered 500/503.")] = 0,
    stall_after_tokens: Annotated[int, typer.Option(min=0, help="Stall after N tokens (0 = never).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the deterministic answers and error dice.")] = 0,
) -> None:
    """Serve a simulated LLM provider; change its knobs live with PATCH /admin/knobs."""
    from outlast.llm.simulator import serve

    serve(
        host=host, port=port, ttft_ms=ttft_ms, tokens_per_second=tokens_per_second, rpm_limit=rpm_limit,
        tpm_limit=tpm_limit, error_rate=error_rate, stall_after_tokens=stall_after_tokens, seed=seed,
    )  # fmt: skip
