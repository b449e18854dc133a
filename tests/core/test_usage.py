"""LLM usage: a step's tokens and cost are recorded with its step.completed, summed on the run
record in the same atomic append, shown per span by the trace. On MemoryStore and RedisStore."""

from __future__ import annotations

from typing import Any

import pytest

import outlast
from outlast.core.component import Component
from outlast.core.trace import build_attempts, build_trace
from outlast.llm.llm import completion_usage
from outlast.store.base import RunStore

pytestmark = pytest.mark.cluster


async def _fake_llm(prompt: str) -> dict[str, Any]:
    # The shape an LLM step records (a dumped Completion); the provider is not what is tested.
    return {"text": prompt.upper(), "tokens_in": len(prompt), "tokens_out": 7, "cost": 0.0015}


ask = Component(_fake_llm, name="ask", usage=completion_usage)


@outlast.component
async def plain(x: int) -> dict[str, int]:
    return {"tokens_in": 99, "tokens_out": 99}  # looks like usage, but the step reads none


@outlast.workflow(name="usage-wf")
async def usage_wf() -> str:
    a = await ask("hello")
    b = await ask("hi")
    await plain(1)
    return str(a["text"]) + str(b["text"])


async def test_usage_is_summed_on_the_run_with_each_step(any_store: RunStore) -> None:
    runner = outlast.Runner(any_store)
    run_id = await runner.start(usage_wf, {})
    await runner.execute(usage_wf, run_id)
    record = await any_store.get_run(run_id)
    assert record is not None
    assert record.status == "completed"
    assert record.tokens == (5 + 7) + (2 + 7)  # "plain" did not count
    assert round(record.cost, 8) == 0.003
    events = [e async for e in any_store.read_events(run_id, follow=False)]
    spans = {s.step_id: s for s in build_trace(events)}
    assert spans["ask#0"].usage == {"tokens_in": 5, "tokens_out": 7, "cost": 0.0015}
    assert spans["plain#2"].usage is None
    attempts = build_attempts(events)
    assert [(a.attempt, a.outcome) for a in attempts] == [(1, "completed")]
