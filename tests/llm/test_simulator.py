"""The LLM simulator, driven only through the official ``openai`` SDK (httpx for /admin)."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest

from outlast.llm.sim_knobs import RateLimiter, SimKnobs, SimStats, count_tokens
from outlast.llm.simulator import SimulatorServer

MODEL = "outlast-sim"
PROMPT = [{"role": "user", "content": "Tell me about durable workflows."}]


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(seed=7) as server:
        yield server


@pytest.fixture
async def client(sim: SimulatorServer) -> AsyncIterator[openai.AsyncOpenAI]:
    llm = openai.AsyncOpenAI(base_url=sim.base_url, api_key="sk-test", max_retries=0)
    yield llm
    await llm.close()


@pytest.fixture
async def admin(sim: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.url) as http:
        yield http


async def ask(client: openai.AsyncOpenAI, content: str = "hello", **kwargs: Any) -> Any:
    messages: Any = [{"role": "user", "content": content}]
    return await client.chat.completions.create(model=MODEL, messages=messages, **kwargs)


async def test_non_streaming_completion_has_usage(client: openai.AsyncOpenAI) -> None:
    resp = await client.chat.completions.create(model=MODEL, messages=PROMPT)  # type: ignore[arg-type]
    assert resp.object == "chat.completion"
    assert resp.model == MODEL
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    text = choice.message.content or ""
    assert resp.usage is not None
    assert resp.usage.completion_tokens == count_tokens(text)
    assert 16 <= resp.usage.completion_tokens <= 64
    assert resp.usage.prompt_tokens == count_tokens(PROMPT[0]["content"])
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


async def test_streaming_matches_and_ends_with_usage_then_done(client: openai.AsyncOpenAI) -> None:
    plain = await ask(client, "stream me")
    stream = await ask(client, "stream me", stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"}) == (
        plain.usage.model_dump(include={"prompt_tokens", "completion_tokens", "total_tokens"})
    )
    # The raw wire format ends with the [DONE] sentinel.
    messages: Any = [{"role": "user", "content": "stream me"}]
    async with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=messages, stream=True
    ) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in raw.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)


async def test_text_is_deterministic_per_seed_and_prompt(
    client: openai.AsyncOpenAI, admin: httpx.AsyncClient
) -> None:
    first = (await ask(client, "same prompt")).choices[0].message.content
    again = (await ask(client, "same prompt")).choices[0].message.content
    other_prompt = (await ask(client, "another prompt")).choices[0].message.content
    assert first == again
    assert other_prompt != first
    assert (await admin.patch("/admin/knobs", json={"seed": 8})).status_code == 200
    reseeded = (await ask(client, "same prompt")).choices[0].message.content
    assert reseeded != first


async def test_max_tokens_and_json_mode(client: openai.AsyncOpenAI) -> None:
    cut = await ask(client, max_tokens=5)
    assert cut.usage.completion_tokens == 5
    assert count_tokens(cut.choices[0].message.content) == 5
    assert cut.choices[0].finish_reason == "length"
    newer = await ask(client, max_completion_tokens=3)
    assert newer.usage.completion_tokens == 3
    for limit in (None, 4):
        resp = await ask(client, response_format={"type": "json_object"}, max_tokens=limit)
        assert isinstance(json.loads(resp.choices[0].message.content), dict)
        if limit:
            assert resp.usage.completion_tokens == limit


async def test_models_and_unknown_model(sim: SimulatorServer, client: openai.AsyncOpenAI) -> None:
    sim.knobs.models = ["outlast-sim", "gpt-sim-mini"]
    models = await client.models.list()
    assert [m.id for m in models.data] == ["outlast-sim", "gpt-sim-mini"]
    with pytest.raises(openai.NotFoundError) as info:
        await client.chat.completions.create(model="nope", messages=PROMPT)  # type: ignore[arg-type]
    assert info.value.code == "model_not_found"


async def test_rpm_limit_gives_429_with_retry_after(sim: SimulatorServer, client: openai.AsyncOpenAI) -> None:
    sim.knobs.rpm_limit = 4
    results = await asyncio.gather(*(ask(client, f"q{i}") for i in range(10)), return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    limited = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(ok) == 4
    assert len(limited) == 6
    err = limited[0]
    assert err.status_code == 429
    assert err.code == "rate_limit_exceeded"
    assert err.type == "requests"
    retry_after = int(err.response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert err.response.headers["x-ratelimit-limit-requests"] == "4"
    assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
    stats = sim.stats()
    assert stats["requests_by_status"] == {"200": 4, "429": 6}
    assert stats["max_requests_in_any_60s_window"] == 4
    assert stats["accepted_requests"] == 4


async def test_tpm_limit(sim: SimulatorServer, client: openai.AsyncOpenAI) -> None:
    sim.knobs.tpm_limit = 30
    first = await ask(client, "one two three", max_tokens=20)  # 3 + 20 = 23 tokens
    assert first.usage.total_tokens == 23
    with pytest.raises(openai.RateLimitError) as info:
        await ask(client, "four five six", max_tokens=20)
    assert info.value.type == "tokens"
    assert int(info.value.response.headers["retry-after"]) >= 1
    assert info.value.response.headers["x-ratelimit-remaining-tokens"] == "7"
    small = await ask(client, "ok", max_tokens=5)  # 1 + 5 = 6 still fits
    assert small.usage.total_tokens == 6


async def test_error_rate_one_gives_server_errors(sim: SimulatorServer, client: openai.AsyncOpenAI) -> None:
    sim.knobs.error_rate = 1.0
    statuses = set()
    for i in range(8):
        with pytest.raises(openai.InternalServerError) as info:
            await ask(client, f"q{i}")
        assert info.value.type == "server_error"
        statuses.add(info.value.status_code)
    assert statuses <= {500, 503}
    assert sim.stats()["accepted_requests"] == 8
    sim.knobs.error_rate = 0.0
    assert (await ask(client)).choices[0].message.content


async def test_outage_window(
    sim: SimulatorServer, client: openai.AsyncOpenAI, admin: httpx.AsyncClient
) -> None:
    now = time.time()
    past = {"start": now - 120, "end": now - 60}
    resp = await admin.patch("/admin/knobs", json={"outages": [past]})
    assert resp.status_code == 200
    assert (await ask(client)).choices  # the window already ended
    await admin.patch("/admin/knobs", json={"outages": [past, {"start": now - 1, "end": now + 600}]})
    with pytest.raises(openai.InternalServerError) as info:
        await ask(client)
    assert info.value.status_code == 503
    assert int(info.value.response.headers["retry-after"]) >= 1
    await admin.patch("/admin/knobs", json={"outages": [past]})  # the outage is over
    assert (await ask(client)).choices
    assert sim.stats()["requests_by_status"] == {"200": 2, "503": 1}


async def test_stalled_stream_times_out(sim: SimulatorServer, client: openai.AsyncOpenAI) -> None:
    sim.knobs.stall_after_tokens = 3
    received: list[str] = []
    started = time.monotonic()

    async def consume() -> None:
        async for chunk in await ask(client, stream=True, timeout=0.5):
            received.append(chunk.choices[0].delta.content or "")

    with pytest.raises((openai.APITimeoutError, httpx.TimeoutException)):
        await consume()
    assert time.monotonic() - started < 10
    assert len([piece for piece in received if piece]) == 3
    with pytest.raises(openai.APITimeoutError):
        await ask(client, timeout=0.5)  # a non-streaming request never answers either
    sim.knobs.stall_after_tokens = 0
    assert (await ask(client)).choices


async def test_ttft_and_tokens_per_second_slow_the_stream(
    sim: SimulatorServer, client: openai.AsyncOpenAI
) -> None:
    sim.knobs.ttft_ms = 150
    sim.knobs.tokens_per_second = 100
    started = time.monotonic()
    stream = await ask(client, stream=True, max_tokens=10)
    first_token_at = None
    async for chunk in stream:
        if first_token_at is None and chunk.choices and chunk.choices[0].delta.content:
            first_token_at = time.monotonic()
    done = time.monotonic()
    assert first_token_at is not None
    assert first_token_at - started >= 0.14
    assert done - started >= 0.14 + 0.09  # 10 tokens at 100 tok/s


async def test_admin_knobs_validation_and_stats_reset(
    sim: SimulatorServer, client: openai.AsyncOpenAI, admin: httpx.AsyncClient
) -> None:
    bad = await admin.patch("/admin/knobs", json={"error_rate": 2, "rpm_limit": 5})
    assert bad.status_code == 422
    assert "error_rate" in bad.json()["error"]["message"]
    assert bad.json()["error"]["param"] == "error_rate"
    assert (await admin.patch("/admin/knobs", json={"no_such_knob": 1})).status_code == 422
    assert (await admin.patch("/admin/knobs", json={"outages": [{"start": 5, "end": 1}]})).status_code == 422
    assert (await admin.patch("/admin/knobs", json=[1])).status_code == 422
    assert sim.knobs.rpm_limit == 0  # nothing applied from the rejected patch
    good = await admin.patch("/admin/knobs", json={"ttft_ms": 1, "models": "a,b"})
    assert good.status_code == 200
    knobs = (await admin.get("/admin/knobs")).json()
    assert knobs["ttft_ms"] == 1
    assert knobs["models"] == ["a", "b"]
    assert knobs["seed"] == 7
    await admin.patch("/admin/knobs", json={"models": [MODEL]})
    await ask(client)
    stats = (await admin.get("/admin/stats")).json()
    assert stats["total_requests"] == 1
    assert stats["requests_by_status"] == {"200": 1}
    assert stats["tokens_served"] > 0
    reset = await admin.post("/admin/reset")
    assert reset.json()["total_requests"] == 0
    assert sim.stats()["max_requests_in_any_60s_window"] == 0


def test_max_requests_in_any_window_is_exact() -> None:
    stats = SimStats()
    for t in [0.0, 10.0, 59.9, 60.0, 65.0, 119.0, 200.0]:
        stats.accepted(t)
    # [0, 60) holds 3; [10, 70) holds 4 (10, 59.9, 60, 65); [60, 120) holds 3.
    assert stats.snapshot()["max_requests_in_any_60s_window"] == 4


def test_rate_limiter_retry_after_tracks_window() -> None:
    limiter = RateLimiter()
    assert limiter.admit(100.0, 10, rpm=2, tpm=0).allowed
    assert limiter.admit(130.0, 10, rpm=2, tpm=0).allowed
    refused = limiter.admit(145.0, 10, rpm=2, tpm=0)
    assert not refused.allowed
    assert refused.headers["retry-after"] == "15"  # the entry at t=100 leaves at 160
    assert limiter.admit(160.0, 10, rpm=2, tpm=0).allowed
    tokens = RateLimiter()
    assert tokens.admit(0.0, 50, rpm=0, tpm=100).allowed
    assert tokens.admit(20.0, 40, rpm=0, tpm=100).allowed
    refused = tokens.admit(30.0, 30, rpm=0, tpm=100)
    assert refused.kind == "tokens"
    assert refused.headers["retry-after"] == "30"  # 50 tokens free up at t=60
    assert refused.headers["x-ratelimit-remaining-tokens"] == "10"


def test_knobs_validate_assignment() -> None:
    knobs = SimKnobs()
    with pytest.raises(ValueError, match="less than or equal to 1"):
        knobs.error_rate = 1.5
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        knobs.apply({"rpm_limit": -1})
    assert knobs.rpm_limit == 0


async def test_module_entry_point_serves() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "outlast.llm.simulator",
        "--port",
        str(port),
        "--rpm-limit",
        "60",
        "--model",
        "cli-model",
        "--log-level",
        "warning",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        llm = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test", max_retries=0)
        try:
            deadline = time.monotonic() + 20
            while True:  # readiness: the only signal from another process is a successful call
                try:
                    models = await llm.models.list()
                    break
                except openai.APIConnectionError:
                    assert proc.returncode is None
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
            assert [m.id for m in models.data] == ["cli-model"]
            resp = await llm.chat.completions.with_raw_response.create(
                model="cli-model",
                messages=PROMPT,  # type: ignore[arg-type]
            )
            assert resp.headers["x-ratelimit-limit-requests"] == "60"
        finally:
            await llm.close()
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
