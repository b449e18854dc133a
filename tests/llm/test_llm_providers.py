"""Providers on the official SDKs against the simulator: completions, streams, error mapping, keys."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel, field_validator

from outlast.errors import ConfigError
from outlast.llm import (
    LLM,
    Completion,
    LLMRetry,
    OpenAIProvider,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    StreamStalled,
    StructuredOutputError,
)
from outlast.llm.sim_knobs import count_tokens
from outlast.llm.simulator import SimulatorServer

from .llm_support import KEY, MODEL, PRICE, openai_provider, provider, requests, statuses

KINDS = ["openai", "anthropic"]


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(seed=11) as server:
        yield server


@pytest.mark.parametrize("kind", KINDS)
async def test_complete_and_stream_agree_with_usage(kind: str, sim: SimulatorServer) -> None:
    p = provider(kind, sim, price=PRICE)
    try:
        done = await p.complete("Tell me about durable workflows.")
        assert (done.provider, done.model, done.finish_reason) == ("primary", MODEL, "stop")
        assert done.tokens_in == 5
        assert done.tokens_out == count_tokens(done.text) >= 16
        assert done.usage_reported
        assert done.cost == pytest.approx((5 * 2.0 + done.tokens_out * 8.0) / 1e6)
        items = [item async for item in p.stream("Tell me about durable workflows.")]
        *deltas, last = items
        assert all(isinstance(d, str) and d for d in deltas)
        assert len(deltas) == done.tokens_out
        assert isinstance(last, Completion)
        assert "".join(str(d) for d in deltas) == last.text == done.text
        assert (last.tokens_in, last.tokens_out, last.finish_reason) == (5, done.tokens_out, "stop")
        cut = await p.complete("Tell me about durable workflows.", max_tokens=4)
        assert (cut.finish_reason, cut.tokens_out) == ("length", 4)
    finally:
        await p.aclose()


async def test_anthropic_request_shape(sim: SimulatorServer) -> None:
    p = provider("anthropic", sim, max_tokens=300, extra={"temperature": 0.3})
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    try:
        done = await p.complete(messages, stop="END")
    finally:
        await p.aclose()
    assert done.tokens_in == 4  # the system prompt counts
    (sent,) = [r["body"] for r in sim.requests() if r["api"] == "anthropic"]
    assert sent["system"] == "Be brief."
    assert sent["messages"] == [{"role": "user", "content": "Hi there"}]
    assert (sent["max_tokens"], sent["stop_sequences"], sent["temperature"]) == (300, ["END"], 0.3)


@pytest.mark.parametrize("kind", KINDS)
async def test_client_errors_are_not_retryable_and_keep_the_message(kind: str, sim: SimulatorServer) -> None:
    wrong_model = provider(kind, sim, model="no-such-model")
    bad_key = provider(kind, sim, api_key="sk-wrong-key-000000")
    good = provider(kind, sim)
    sim.knobs.api_keys = [KEY]
    try:
        with pytest.raises(ProviderError) as missing:
            await wrong_model.complete("hello")
        assert (missing.value.status, missing.value.retryable) == (404, False)
        assert "`no-such-model` does not exist" in missing.value.message
        with pytest.raises(ProviderError) as denied:
            await bad_key.complete("hello")
        assert (denied.value.status, denied.value.retryable) == (401, False)
        assert "Incorrect API key" in str(denied.value)
        with pytest.raises(ProviderError) as bad:
            await good.complete("hello", max_tokens=0)
        assert (bad.value.status, bad.value.retryable) == (400, False)
        assert type(bad.value) is ProviderError
        assert isinstance(bad.value.__cause__, Exception)  # raised from the SDK's error
        assert (await good.complete("hello")).text
    finally:
        for p in (wrong_model, bad_key, good):
            await p.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_rate_limit_and_outage_errors_carry_retry_after(kind: str, sim: SimulatorServer) -> None:
    p = provider(kind, sim)
    sim.knobs.rpm_limit = 1
    try:
        await p.complete("one")
        with pytest.raises(RateLimited) as limited:
            await p.complete("two")
        assert limited.value.retryable
        assert limited.value.status == 429
        assert limited.value.retry_after is not None
        assert 50 < limited.value.retry_after <= 60
        sim.knobs.rpm_limit = 0
        sim.knobs.outages = [{"start": time.time() - 1, "end": time.time() + 30}]  # type: ignore[list-item]
        with pytest.raises(ProviderUnavailable) as down:
            await p.complete("three")
        assert (down.value.status, down.value.retryable) == (503, True)
        assert down.value.retry_after is not None
        assert down.value.retry_after >= 1
    finally:
        await p.aclose()


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stalled_stream_is_cut_by_the_idle_timeout(kind: str, sim: SimulatorServer) -> None:
    sim.knobs.stall_after_tokens = 3
    p = provider(kind, sim, idle_timeout=0.3)
    received: list[Any] = []

    async def consume() -> None:
        async for item in p.stream("stall please"):
            received.append(item)

    try:
        with pytest.raises(StreamStalled) as stalled:
            await consume()
    finally:
        await p.aclose()
    assert stalled.value.retryable
    assert len(received) == 3


def test_keys_from_env_and_never_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTLAST_TEST_LLM_KEY", "sk-from-env-123456789")
    p = OpenAIProvider("env", MODEL, api_key_env="OUTLAST_TEST_LLM_KEY")
    assert p.api_key() == "sk-from-env-123456789"
    assert "sk-" not in repr(p)
    monkeypatch.delenv("OUTLAST_TEST_LLM_KEY")
    with pytest.raises(ConfigError, match="OUTLAST_TEST_LLM_KEY"):
        p.api_key()
    with pytest.raises(ConfigError):
        LLM([p, OpenAIProvider("env", "other")])  # provider names must be unique


async def test_llm_fails_fast_on_a_client_error_without_fallback(sim: SimulatorServer) -> None:
    with SimulatorServer(seed=2) as spare:
        llm = LLM([openai_provider(sim, model="missing"), openai_provider(spare, "spare")])
        try:
            with pytest.raises(ProviderError) as info:
                await llm.complete("hello")
        finally:
            await llm.aclose()
        assert info.value.status == 404
        assert "`missing` does not exist" in str(info.value)
        assert requests(sim) == 1
        assert requests(spare) == 0


class Verdict(BaseModel):
    answer: str

    @field_validator("answer")
    @classmethod
    def _must_shout(cls, value: str) -> str:
        if not value.isupper():
            raise ValueError("answer must be in capital letters")
        return value


class Plain(BaseModel):
    answer: str
    words: int = 0


async def test_structured_output_validates_and_reasks(sim: SimulatorServer) -> None:
    llm = LLM([openai_provider(sim)], max_reasks=1, retry=LLMRetry(attempts=1))
    try:
        parsed = await llm.complete("Summarise durability.", response_model=Plain)
        assert isinstance(parsed, Plain)
        assert parsed.answer
        sent = sim.requests()[-1]["body"]
        assert sent["response_format"] == {"type": "json_object"}
        assert '"answer"' in sent["messages"][0]["content"]  # the JSON Schema is in the instructions
        before = requests(sim)
        with pytest.raises(StructuredOutputError) as info:
            await llm.complete("Summarise durability.", response_model=Verdict)
        assert info.value.asks == 2
        assert "capital letters" in info.value.last_error
        assert requests(sim) == before + 2  # one ask and one re-ask
        reask = sim.requests()[-1]["body"]["messages"]
        assert reask[-2]["role"] == "assistant"
        assert reask[-1]["role"] == "user"
        assert "answer must be in capital letters" in reask[-1]["content"]
    finally:
        await llm.aclose()


async def test_structured_output_recovers_on_reask(sim: SimulatorServer) -> None:
    seen: list[str] = []

    class Second(BaseModel):
        answer: str

        @field_validator("answer")
        @classmethod
        def _second_time_lucky(cls, value: str) -> str:
            seen.append(value)
            if len(seen) == 1:
                raise ValueError("try again")
            return value

    llm = LLM([openai_provider(sim, price=PRICE)], retry=LLMRetry(attempts=1))
    try:
        parsed = await llm.complete("Explain replays.", response_model=Second)
    finally:
        await llm.aclose()
    assert parsed.answer == seen[-1]
    assert len(seen) == 2
    assert statuses(sim) == {"200": 2}
