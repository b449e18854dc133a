"""LLM retries and fallbacks without Redis: Retry-After honoured on 429 and 503, caps, spill on 429s."""

from __future__ import annotations

import time

import pytest

from outlast.llm import LLM, AllProvidersFailed, BreakerSettings, LLMRetry
from outlast.llm.simulator import SimulatorServer

from .llm_support import PRICE, openai_provider, provider, requests, statuses

KINDS = ["openai", "anthropic"]


@pytest.mark.parametrize("kind", KINDS)
async def test_429_is_retried_after_retry_after(kind: str, primary: SimulatorServer) -> None:
    primary.knobs.rpm_limit = 1
    primary.knobs.rate_window_s = 0.8  # the simulator's window frees a slot 0.8 s after the first call
    llm = LLM([provider(kind, primary, price=PRICE)], retry=LLMRetry(backoff_base=0.01))
    try:
        first = await llm.complete("first")
        second = await llm.complete("second")
    finally:
        await llm.aclose()
    assert (first.attempts, first.errors) == (1, [])
    assert second.attempts == 2
    assert second.provider == "primary"
    (error,) = second.errors
    assert (error["status"], error["type"]) == (429, "RateLimited")
    assert 0 < error["retry_after"] <= 0.8
    assert second.latency >= error["retry_after"]  # it waited at least as long as it was told
    assert second.cost == pytest.approx(PRICE.cost(second.tokens_in, second.tokens_out))
    assert statuses(primary) == {"200": 2, "429": 1}


async def test_503_outage_is_retried_after_retry_after(primary: SimulatorServer) -> None:
    llm = LLM([openai_provider(primary)], retry=LLMRetry(backoff_base=0.01))
    now = time.time()
    primary.knobs.outages = [{"start": now - 1, "end": now + 0.5}]  # type: ignore[list-item]
    try:
        done = await llm.complete("during the outage")
    finally:
        await llm.aclose()
    assert done.attempts == 2
    assert [(e["status"], e["retry_after"]) for e in done.errors] == [(503, 1.0)]
    assert time.time() >= now + 0.5
    assert statuses(primary) == {"200": 1, "503": 1}


async def test_server_errors_exhaust_retries_then_fall_back(
    primary: SimulatorServer, fallback: SimulatorServer
) -> None:
    primary.knobs.error_rate = 1.0
    llm = LLM(
        [openai_provider(primary), provider("anthropic", fallback, "fallback")],
        retry=LLMRetry(attempts=3, backoff_base=0.01),
        breaker=None,
    )
    try:
        done = await llm.complete("hello")
    finally:
        await llm.aclose()
    assert (done.provider, done.attempts) == ("fallback", 4)
    assert [e["provider"] for e in done.errors] == ["primary"] * 3
    assert {e["status"] for e in done.errors} <= {500, 503}
    assert [(f["provider"], f["reason"]) for f in done.fallbacks] == [("primary", "errors")]
    assert requests(primary) == 3
    assert statuses(fallback) == {"200": 1}


async def test_retry_after_is_capped_and_failure_lists_every_error(primary: SimulatorServer) -> None:
    primary.knobs.rpm_limit = 1  # 60 s window: every later call is told to wait ~60 s
    llm = LLM([openai_provider(primary)], retry=LLMRetry(attempts=3, max_retry_after=0.05, backoff_base=0.01))
    try:
        await llm.complete("one")
        started = time.monotonic()
        with pytest.raises(AllProvidersFailed) as info:
            await llm.complete("two")
        assert time.monotonic() - started < 30  # the 60 s Retry-After was capped
    finally:
        await llm.aclose()
    assert [e["status"] for e in info.value.errors] == [429, 429, 429]
    assert info.value.skipped == [{"provider": "primary", "reason": "errors", "error": info.value.errors[-1]}]
    assert statuses(primary) == {"200": 1, "429": 3}


async def test_a_long_retry_after_spills_to_the_fallback(
    primary: SimulatorServer, fallback: SimulatorServer
) -> None:
    primary.knobs.rpm_limit = 2
    llm = LLM([openai_provider(primary), openai_provider(fallback, "fallback")], max_wait=1.0)
    try:
        served = [(await llm.complete(f"call {i}")).provider for i in range(5)]
    finally:
        await llm.aclose()
    # Without Redis there is no fleet-wide limiter: the primary's own 429 (Retry-After ~60 s >
    # max_wait) sends each later call to the fallback at once, one 429 per call.
    assert served == ["primary", "primary", "fallback", "fallback", "fallback"]
    assert statuses(primary) == {"200": 2, "429": 3}


async def test_in_process_breaker_opens_and_skips_the_provider(
    primary: SimulatorServer, fallback: SimulatorServer
) -> None:
    primary.knobs.error_rate = 1.0
    llm = LLM(
        [openai_provider(primary), openai_provider(fallback, "fallback")],
        retry=LLMRetry(attempts=1),
        breaker=BreakerSettings(failure_threshold=2, cooldown_s=60),
    )
    try:
        results = [await llm.complete(f"call {i}") for i in range(5)]
    finally:
        await llm.aclose()
    assert {r.provider for r in results} == {"fallback"}
    assert requests(primary) == 2  # the breaker opened after two failures
    assert [f["reason"] for f in results[-1].fallbacks] == ["breaker_open"]
    assert results[-1].attempts == 1


@pytest.mark.parametrize("kind", KINDS)
async def test_stream_without_workflow_retries_a_stall(kind: str, primary: SimulatorServer) -> None:
    primary.knobs.stall_after_tokens = 4
    primary.knobs.stall_requests = 1
    llm = LLM([provider(kind, primary, idle_timeout=0.3)], retry=LLMRetry(stream_backoff=0.01))
    try:
        stream = llm.stream("tell me a story")
        tokens = [token async for token in stream]
    finally:
        await llm.aclose()
    assert [t.try_ for t in tokens[:4]] == [1, 1, 1, 1]
    assert {t.try_ for t in tokens[4:]} == {2}
    assert "".join(t for t in tokens if t.try_ == 2) == stream.text
    assert stream.completion is not None
    assert stream.completion.attempts == 2
    assert stream.completion.errors[0]["type"] == "StreamStalled"
    assert statuses(primary) == {"200": 2}
