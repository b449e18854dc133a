"""The simulator's ASGI app: what each request gets (:class:`SimState`) and the HTTP routes.

See :mod:`outlast.llm.simulator` for the behaviour, the knobs and how to run it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError

from outlast.llm import sim_anthropic
from outlast.llm.sim_knobs import (
    ChatRequest,
    Plan,
    RateLimiter,
    SimKnobs,
    SimStats,
    completion_words,
    count_prompt_tokens,
    error_body,
    render_completion,
    sse,
    token_pieces,
)
from outlast.llm.sim_text import find_schema, structured_reply

__all__ = ["SimState", "build", "create_app"]

OPENAI, ANTHROPIC = "openai", "anthropic"


def _error(
    status: int, message: str, type_: str, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(message, type_, code), status_code=status, headers=headers)


class SimState:
    """Everything one simulator app shares: live knobs, stats, limiter, stall release."""

    def __init__(self, knobs: SimKnobs) -> None:
        self.knobs = knobs
        self.stats = SimStats()
        self.limiter = RateLimiter()
        self.release = asyncio.Event()  # set only on shutdown: frees stalled responses
        self.loop: asyncio.AbstractEventLoop | None = None
        self._rng_seed = knobs.seed
        self._rng = random.Random(knobs.seed)
        self._stalled = 0  # requests stalled since the last reset (for ``stall_requests``)

    def reset(self) -> None:
        self.stats.reset()
        self.limiter.clear()
        self._stalled = 0
        self._rng_seed = self.knobs.seed
        self._rng = random.Random(self.knobs.seed)

    def dice(self) -> random.Random:
        if self._rng_seed != self.knobs.seed:
            self._rng_seed = self.knobs.seed
            self._rng = random.Random(self.knobs.seed)
        return self._rng

    def release_stalls(self) -> None:
        """Thread-safe: let every stalled response end (used when stopping the server)."""
        if self.loop is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self.loop.call_soon_threadsafe(self.release.set)

    async def stall(self, request: Request) -> None:
        """Hang until the client disconnects or the server stops; never blocks the loop."""

        async def disconnected() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass

        waiters = [asyncio.ensure_future(self.release.wait()), asyncio.ensure_future(disconnected())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def chat(self, request: Request) -> Response:
        """``POST /v1/chat/completions`` (OpenAI)."""
        return await self.serve(request, OPENAI)

    async def messages(self, request: Request) -> Response:
        """``POST /v1/messages`` (Anthropic)."""
        return await self.serve(request, ANTHROPIC)

    async def serve(self, request: Request, api: str) -> Response:
        self.stats.request()
        response = await self._serve(request, api)
        self.stats.status(response.status_code, getattr(request.state, "sim_entry", None))
        return response

    @staticmethod
    def _fail(
        api: str, status: int, message: str, type_: str, code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:  # fmt: skip
        if api == ANTHROPIC:
            return JSONResponse(
                sim_anthropic.error_body(status, message), status_code=status, headers=headers
            )
        return _error(status, message, type_, code, headers)

    def _authorised(self, request: Request) -> bool:
        if not self.knobs.api_keys:
            return True
        bearer = request.headers.get("authorization", "")
        key = bearer[7:] if bearer.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
        return key in self.knobs.api_keys

    async def _serve(self, request: Request, api: str) -> Response:
        if not self._authorised(request):
            msg = "Incorrect API key provided."
            return self._fail(api, 401, msg, "invalid_request_error", "invalid_api_key")
        limit: int | None
        try:
            body = json.loads(await request.body())
            request.state.sim_entry = self.stats.record_body(api, body, self.knobs.request_log)
            if api == ANTHROPIC:
                areq = sim_anthropic.MessagesRequest.model_validate(body)
                model, messages, stream = areq.model, areq.chat_messages(), areq.stream
                limit, json_mode, usage = areq.max_tokens, False, True
                response_format = None
            else:
                req = ChatRequest.model_validate(body)
                model, messages, stream = req.model, req.messages, req.stream
                limit = req.max_completion_tokens or req.max_tokens
                response_format = req.response_format
                json_mode = (response_format or {}).get("type") == "json_object"
                usage = bool((req.stream_options or {}).get("include_usage"))
        except (ValueError, ValidationError) as exc:
            msg = f"Invalid request body: {exc}"
            return self._fail(api, 400, msg, "invalid_request_error", "invalid_request")
        k = self.knobs
        if model not in k.models:
            msg = f"The model `{model}` does not exist. Served models: {', '.join(k.models)}."
            return self._fail(api, 404, msg, "invalid_request_error", "model_not_found")
        schema = find_schema(messages, response_format)
        if schema is not None:
            pieces, finish = token_pieces(structured_reply(k.seed, model, messages, schema)), "stop"
            if limit is not None and limit < len(pieces):
                pieces, finish = pieces[:limit], "length"
        else:
            words = completion_words(k.seed, model, messages)
            text, finish = render_completion(words, limit, json_mode)
            pieces = token_pieces(text)
        prompt_tokens = count_prompt_tokens(messages)
        arrival = time.monotonic()
        admission = self.limiter.admit(
            arrival, prompt_tokens + len(pieces), k.rpm_limit, k.tpm_limit, k.rate_window_s
        )
        headers = {"x-request-id": f"req_{uuid.uuid4().hex}", **admission.headers}
        if not admission.allowed:
            self.stats.refused("limit")
            return self._fail(api, 429, admission.message, admission.kind, "rate_limit_exceeded", headers)
        self.stats.accepted(arrival)
        now = time.time()
        outage = next((w for w in k.outages if w.active(now)), None)
        if outage is not None:
            headers["retry-after"] = str(max(1, math.ceil(outage.end - now)))
            msg = "Simulated outage: the service is unavailable, please try again later."
            return self._fail(api, 503, msg, "server_error", "service_unavailable", headers)
        throttle = next((w for w in k.throttles if w.active(now)), None)
        if throttle is not None:
            self.stats.refused("throttle")
            headers["retry-after"] = str(max(1, math.ceil(throttle.retry_after)))
            headers["retry-after-ms"] = str(max(1, math.ceil(throttle.retry_after * 1000)))
            msg = "Rate limit reached (simulated burst). Please try again later."
            return self._fail(api, 429, msg, "requests", "rate_limit_exceeded", headers)
        if k.error_rate > 0 and self.dice().random() < k.error_rate:
            if self.dice().random() < 0.5:
                msg = "The server had an error while processing your request. Sorry about that!"
                return self._fail(api, 500, msg, "server_error", "internal_error", headers)
            msg = "The engine is currently overloaded, please try again later."
            return self._fail(api, 503, msg, "server_error", "overloaded", headers)
        self.stats.tokens(prompt=prompt_tokens)
        stall_after = k.stall_after_tokens if 0 < k.stall_after_tokens < len(pieces) else 0
        if stall_after and k.stall_requests:
            if self._stalled >= k.stall_requests:
                stall_after = 0
            else:
                self._stalled += 1
        plan = Plan(
            id=f"msg_{uuid.uuid4().hex[:24]}" if api == ANTHROPIC else f"chatcmpl-{uuid.uuid4().hex[:24]}",
            model=model,
            pieces=pieces,
            finish=finish,
            prompt_tokens=prompt_tokens,
            ttft=k.ttft_ms / 1000.0,
            tps=k.tokens_per_second,
            stall_after=stall_after,
        )
        if stream:
            chunks = (
                self._stream(plan, usage, request) if api == OPENAI else self._stream_anthropic(plan, request)
            )
            return StreamingResponse(chunks, media_type="text/event-stream", headers=headers)
        await asyncio.sleep(plan.ttft + (len(pieces) / plan.tps if plan.tps else 0.0))
        if plan.stall_after:
            await self.stall(request)
            if self.release.is_set():  # the server is stopping under a still-waiting client
                return self._fail(
                    api, 503, "The simulator is shutting down.", "server_error", "shutting_down"
                )
            return Response(status_code=499)  # the client gave up; nothing is sent
        self.stats.tokens(completion=len(pieces))
        body = sim_anthropic.full_message(plan) if api == ANTHROPIC else plan.completion()
        return JSONResponse(body, headers=headers)

    async def _pieces(self, plan: Plan, request: Request) -> AsyncIterator[str | None]:
        """The plan's tokens on its schedule; None (then the end) when the response stalls."""
        if plan.ttft:
            await asyncio.sleep(plan.ttft)
        start = time.monotonic()
        for i, piece in enumerate(plan.pieces):
            if plan.stall_after and i == plan.stall_after:
                await self.stall(request)
                yield None  # released only when the server stops: end without the closing events
                return
            if plan.tps:
                await asyncio.sleep(max(0.0, start + i / plan.tps - time.monotonic()))
            self.stats.tokens(completion=1)
            yield piece

    async def _stream(self, plan: Plan, include_usage: bool, request: Request) -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return sse(plan.chunk(delta, finish, include_usage))

        first = True
        async for piece in self._pieces(plan, request):
            if first:  # the role chunk goes out after the time to first token
                yield chunk({"role": "assistant", "content": "", "refusal": None})
                first = False
            if piece is None:
                return
            yield chunk({"content": piece})
        if first:
            yield chunk({"role": "assistant", "content": "", "refusal": None})
        yield chunk({}, plan.finish)
        if include_usage:
            yield sse(plan.usage_chunk())
        yield sse("[DONE]")

    async def _stream_anthropic(self, plan: Plan, request: Request) -> AsyncIterator[bytes]:
        for item in sim_anthropic.start_events(plan):
            yield item
        async for piece in self._pieces(plan, request):
            if piece is None:
                return
            yield sim_anthropic.delta_event(piece)
        for item in sim_anthropic.end_events(plan):
            yield item


def build(knobs: SimKnobs | None) -> tuple[FastAPI, SimState]:
    """A fresh app and the state its routes share."""
    state = SimState(knobs if knobs is not None else SimKnobs())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state.loop = asyncio.get_running_loop()
        yield
        state.release.set()

    app = FastAPI(title="Outlast LLM simulator", lifespan=lifespan)
    app.state.sim = state

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await state.chat(request)

    @app.post("/v1/messages")
    async def anthropic_messages(request: Request) -> Response:
        return await state.messages(request)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        data = [
            {"id": m, "object": "model", "created": 0, "owned_by": "outlast-sim"} for m in state.knobs.models
        ]
        return {"object": "list", "data": data}

    @app.get("/admin/knobs")
    async def get_knobs() -> dict[str, Any]:
        return state.knobs.model_dump(mode="json")

    @app.patch("/admin/knobs")
    async def patch_knobs(request: Request) -> Response:
        try:
            patch = json.loads(await request.body())
        except ValueError as exc:
            return _error(422, f"Invalid JSON body: {exc}", "invalid_request_error", "invalid_knob")
        if not isinstance(patch, dict):
            return _error(422, "Expected a JSON object of knobs.", "invalid_request_error", "invalid_knob")
        try:
            state.knobs.apply(patch)
        except ValidationError as exc:
            details = json.loads(exc.json(include_url=False, include_context=False))
            reasons = "; ".join(f"{'.'.join(map(str, d['loc'])) or 'body'}: {d['msg']}" for d in details)
            param = ".".join(map(str, details[0]["loc"])) if details else None
            body = error_body(
                f"Invalid knob value(s): {reasons}", "invalid_request_error", "invalid_knob", param
            )
            body["detail"] = details
            return JSONResponse(body, status_code=422)
        return JSONResponse(state.knobs.model_dump(mode="json"))

    @app.get("/admin/stats")
    async def get_stats(window: float | None = None) -> dict[str, Any]:
        """Counters; with ``?window=S`` also the most requests accepted within any S seconds."""
        snapshot = state.stats.snapshot()
        if window is not None and window > 0:
            snapshot["max_requests_in_window"] = state.stats.max_in_window(window)
        return snapshot

    @app.get("/admin/requests")
    async def recent_requests() -> list[dict[str, Any]]:
        return state.stats.recent()

    @app.post("/admin/reset")
    async def reset() -> dict[str, Any]:
        state.reset()
        return state.stats.snapshot()

    return app, state


def create_app(knobs: SimKnobs | None = None) -> FastAPI:
    """A fresh simulator app; ``knobs`` (kept live, not copied) defaults to ``SimKnobs()``."""
    return build(knobs)[0]
