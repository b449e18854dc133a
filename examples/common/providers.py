"""Which LLM the examples call: the simulator, or real providers when keys are set.

Read from the environment of the process that runs the workflows (a worker):

* ``OUTLAST_EXAMPLE_SIM=PRIMARY_URL,FALLBACK_URL`` — two LLM simulators (``outlast llm-sim``):
  the primary spoken to through the ``openai`` SDK, the fallback through the ``anthropic`` SDK.
  ``python -m examples.<name>`` starts two and sets this for you.
* otherwise ``OPENAI_API_KEY`` (with ``OPENAI_BASE_URL`` for any compatible endpoint — Gemini's
  is ``https://generativelanguage.googleapis.com/v1beta/openai/`` — and ``OPENAI_MODEL``) and/or
  ``ANTHROPIC_API_KEY`` (``ANTHROPIC_MODEL``): the first set is the primary, the other the fallback.
* ``OUTLAST_EXAMPLE_RPM`` / ``OUTLAST_EXAMPLE_TPM`` (per provider, over
  ``OUTLAST_EXAMPLE_WINDOW`` seconds, default 60) and ``OUTLAST_EXAMPLE_MAX_WAIT`` (seconds a
  call waits for capacity before spilling over to the fallback, default 30),
  ``OUTLAST_EXAMPLE_WINDOW_MARGIN`` (seconds added to the window when reserving, to absorb
  delivery jitter; default 0.5).
* ``OUTLAST_REDIS_URL`` makes those limits fleet-wide: every worker process reserves capacity in
  the same Redis (without it, each process limits only itself).
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Mapping

# The SDKs take seconds to import on a busy machine: import them with the app (before a worker
# takes runs), not in the first call, where the import would stall every run of the event loop.
import anthropic  # noqa: F401
import openai  # noqa: F401

from outlast.errors import ConfigError
from outlast.llm import LLM, AnthropicProvider, Limits, LLMRetry, OpenAIProvider, Provider

SIM_ENV = "OUTLAST_EXAMPLE_SIM"
SIM_MODEL = "outlast-sim"
REAL_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY")

_llms: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, LLM]] = weakref.WeakKeyDictionary()


def uses_real_provider(env: Mapping[str, str] = os.environ) -> bool:
    return not env.get(SIM_ENV) and any(env.get(key) for key in REAL_KEYS)


def _limits(env: Mapping[str, str]) -> Limits | None:
    rpm, tpm = int(env.get("OUTLAST_EXAMPLE_RPM") or 0), int(env.get("OUTLAST_EXAMPLE_TPM") or 0)
    if not rpm and not tpm:
        return None
    return Limits(
        rpm=rpm or None,
        tpm=tpm or None,
        max_concurrency=None,
        window_s=float(env.get("OUTLAST_EXAMPLE_WINDOW") or 60),
    )


def providers(env: Mapping[str, str] = os.environ) -> list[Provider]:
    """The providers, primary first, as the environment describes them."""
    limits = _limits(env)
    sims = [url.strip().rstrip("/") for url in env.get(SIM_ENV, "").split(",") if url.strip()]
    if sims:
        primary = OpenAIProvider(
            "sim-openai", SIM_MODEL, base_url=f"{sims[0]}/v1", api_key="sim", limits=limits, idle_timeout=10
        )
        if len(sims) < 2:
            return [primary]
        fallback = AnthropicProvider(
            "sim-anthropic", SIM_MODEL, base_url=sims[1], api_key="sim", limits=limits, idle_timeout=10
        )
        return [primary, fallback]
    found: list[Provider] = []
    if env.get("OPENAI_API_KEY"):
        model = env.get("OPENAI_MODEL") or "gpt-4o-mini"
        found.append(
            OpenAIProvider("openai", model, base_url=env.get("OPENAI_BASE_URL") or None, limits=limits)
        )
    if env.get("ANTHROPIC_API_KEY"):
        model = env.get("ANTHROPIC_MODEL") or "claude-haiku-4-5"
        found.append(AnthropicProvider("anthropic", model, limits=limits))
    if not found:
        raise ConfigError(
            f"no LLM provider: set OPENAI_API_KEY and/or ANTHROPIC_API_KEY, or {SIM_ENV}=URL[,URL] of "
            "`outlast llm-sim` servers (python -m examples.<name> starts simulators itself)"
        )
    return found


def llm(name: str = "llm") -> LLM:
    """This event loop's :class:`LLM` for the examples (made on first use, from the environment)."""
    loop = asyncio.get_running_loop()
    per_loop = _llms.setdefault(loop, {})
    if name not in per_loop:
        env = os.environ
        per_loop[name] = LLM(
            providers(env),
            redis=env.get("OUTLAST_REDIS_URL") or None,
            name=name,
            max_wait=float(env.get("OUTLAST_EXAMPLE_MAX_WAIT") or 30),
            retry=LLMRetry(attempts=3, backoff_base=0.25, max_delay=4.0),
            window_margin=float(env.get("OUTLAST_EXAMPLE_WINDOW_MARGIN") or 0.5),
        )
    return per_loop[name]
