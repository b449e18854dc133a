"""The app the fleet test's worker processes run, configured through the environment.

``OUTLAST_LLM_PRIMARY`` / ``OUTLAST_LLM_FALLBACK``: the simulators' base URLs;
``OUTLAST_LLM_RPM``: the primary's fleet-wide requests/min; ``OUTLAST_LLM_REDIS``: the Redis URL.
"""

from __future__ import annotations

import os
from collections import Counter

import outlast
from outlast.llm import LLM, Limits, OpenAIProvider

KEY = "sk-fleet-0123456789"

llm = LLM(
    [
        OpenAIProvider(
            "primary", "outlast-sim", base_url=os.environ["OUTLAST_LLM_PRIMARY"], api_key=KEY,
            limits=Limits(rpm=int(os.environ["OUTLAST_LLM_RPM"]), tpm=None, max_concurrency=None),
        ),
        OpenAIProvider("fallback", "outlast-sim", base_url=os.environ["OUTLAST_LLM_FALLBACK"], api_key=KEY),
    ],
    redis=os.environ["OUTLAST_LLM_REDIS"],
    max_wait=0.5,
)  # fmt: skip


@outlast.workflow(name="llm_fleet")
async def llm_fleet(calls: int, tag: str) -> dict[str, int]:
    replies = await outlast.gather(
        *(llm.complete(f"{tag}: question {i}", max_tokens=16) for i in range(calls)), limit=50
    )
    return dict(Counter(reply.provider for reply in replies))
