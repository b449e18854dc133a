"""The optional real model (``outlast[local]``: SmolLM2-135M on llama-cpp-python), when installed.

Skipped when the extra is not installed (CI does not install it: llama-cpp-python builds from
source for minutes).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from examples.common.local_model import MODEL_ALIAS, LocalModel, available
from outlast.llm import LLM, OpenAIProvider

pytestmark = [
    pytest.mark.skipif(not available(), reason="outlast[local] is not installed (make local-model)"),
    pytest.mark.timeout(300),
]


@pytest.fixture(scope="module")
def model() -> Iterator[LocalModel]:
    with LocalModel() as served:
        yield served


async def test_the_local_model_streams_a_real_answer_through_outlast_llm(model: LocalModel) -> None:
    llm = LLM([OpenAIProvider("local", MODEL_ALIAS, base_url=model.base_url, api_key="local")])
    try:
        stream = llm.stream("Name three colours of the rainbow.", max_tokens=24)
        tokens = [token async for token in stream]
    finally:
        await llm.aclose()
    assert len(tokens) > 1  # streamed, not one block
    assert stream.completion is not None
    assert "".join(tokens) == stream.text
    assert stream.text.strip()
    assert stream.completion.tokens_out > 0


def test_the_install_is_found_without_importing_it() -> None:
    assert os.path.basename(str(LocalModel().start.__qualname__)) == "LocalModel.start"
    assert available()
