"""Components called directly, outside any workflow run: plain calls, no store at all."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import outlast
from outlast import Retry, component, emit, log, progress, publish, status
from outlast.core.context import current_frame

FAST = Retry(attempts=3, jitter=False, backoff_base=0.001)


class Flaky:
    """Fails ``failures`` times with ``exc``, then returns ``value``; counts calls."""

    def __init__(self, failures: int, exc: BaseException, value: Any = "ok") -> None:
        self.failures = failures
        self.exc = exc
        self.value = value
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return self.value


# -- kinds of bodies ----------------------------------------------------------------------------


async def test_async_component_returns_its_value() -> None:
    @component
    async def double(x: int) -> int:
        return x * 2

    assert isinstance(double, outlast.Component)
    assert double.name == "double"
    call = double(21)
    assert isinstance(call, outlast.StepCall)
    assert await call == 42


async def test_sync_component_runs_in_a_worker_thread() -> None:
    seen: list[int] = []

    @component
    def where(x: int) -> int:
        seen.append(threading.get_ident())
        return x + 1

    assert await where(1) == 2
    assert len(seen) == 1
    assert seen[0] != threading.get_ident()  # the test body runs on the loop's thread


async def test_async_generator_streams_into_a_joined_string() -> None:
    @component
    async def words(text: str) -> AsyncIterator[str]:
        for word in text.split():
            yield word + " "

    assert await words("a b c") == "a b c "


async def test_async_generator_with_non_str_chunks_returns_a_list() -> None:
    @component
    async def items(n: int) -> AsyncIterator[Any]:
        for i in range(n):
            yield {"i": i}
        yield "tail"

    assert await items(3) == [{"i": 0}, {"i": 1}, {"i": 2}, "tail"]


async def test_sync_generator_streams_into_a_joined_string() -> None:
    threads: set[int] = set()

    @component
    def letters(text: str) -> Iterator[str]:
        for ch in text:
            threads.add(threading.get_ident())
            yield ch.upper()

    joined: Any = await letters("abc")  # a streaming component's result is the joined text
    assert joined == "ABC"
    assert threading.get_ident() not in threads


async def test_components_calling_components_outside_a_run() -> None:
    @component
    async def leaf(x: int) -> int:
        return x + 1

    @component
    async def branch(x: int) -> list[int]:
        return [await leaf(x), await leaf(x * 10)]

    @component
    async def root(x: int) -> list[int]:
        return [*(await branch(x)), await leaf(100)]

    assert await root(1) == [2, 11, 101]


# -- retry --------------------------------------------------------------------------------------


async def test_retry_until_success() -> None:
    body = Flaky(2, ConnectionError("down"), value="up")

    @component(retry=FAST)
    async def fetch() -> str:
        return str(body())

    assert await fetch() == "up"
    assert body.calls == 3


async def test_retry_exhausted_reraises_the_original_error() -> None:
    body = Flaky(99, KeyError("gone"))

    @component(retry=FAST)
    async def fetch() -> str:
        return str(body())

    with pytest.raises(KeyError, match="gone"):
        await fetch()
    assert body.calls == 3


async def test_without_retry_policy_there_is_a_single_try() -> None:
    body = Flaky(1, ValueError("once"))

    @component
    async def fetch() -> str:
        return str(body())

    with pytest.raises(ValueError, match="once"):
        await fetch()
    assert body.calls == 1


async def test_retry_on_types_does_not_retry_other_errors() -> None:
    body = Flaky(5, ValueError("not transient"))

    @component(retry=Retry(attempts=3, jitter=False, backoff_base=0.001, retry_on=(TimeoutError,)))
    async def fetch() -> str:
        return str(body())

    with pytest.raises(ValueError, match="not transient"):
        await fetch()
    assert body.calls == 1


async def test_retry_on_predicate() -> None:
    seen: list[str] = []

    def transient(exc: BaseException) -> bool:
        seen.append(str(exc))
        return "retry me" in str(exc)

    policy = Retry(attempts=5, jitter=False, backoff_base=0.001, retry_on=transient)
    retried = Flaky(2, RuntimeError("retry me"))
    fatal = Flaky(2, RuntimeError("fatal"))

    @component(retry=policy)
    async def a() -> str:
        return str(retried())

    @component(retry=policy)
    async def b() -> str:
        return str(fatal())

    assert await a() == "ok"
    assert retried.calls == 3
    with pytest.raises(RuntimeError, match="fatal"):
        await b()
    assert fatal.calls == 1
    assert seen == ["retry me", "retry me", "fatal"]


@pytest.mark.parametrize(
    "options",
    [{"attempts": 0}, {"backoff": 0.5}, {"max_delay": -1.0}, {"backoff_base": -0.1}],
)
def test_retry_validation(options: dict[str, Any]) -> None:
    with pytest.raises(outlast.ConfigError):
        Retry(**options)


def test_retry_delay_grows_exponentially_and_is_capped() -> None:
    policy = Retry(backoff_base=0.5, backoff=2.0, max_delay=3.0, jitter=False)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.delay(50) == 3.0


def test_retry_delay_with_jitter_stays_within_the_cap() -> None:
    policy = Retry(backoff_base=0.5, backoff=2.0, max_delay=3.0, jitter=True, _rng=random.Random(7))
    for failed in range(1, 8):
        cap = min(3.0, 0.5 * 2.0 ** (failed - 1))
        samples = [policy.delay(failed) for _ in range(50)]
        assert all(0 <= d <= cap for d in samples)
        assert len(set(samples)) > 1  # really randomised, not the fixed cap


# -- timeout ------------------------------------------------------------------------------------


async def test_timeout_raises_timeout_error() -> None:
    never = asyncio.Event()

    @component(timeout=0.05)
    async def hang() -> None:
        await never.wait()

    with pytest.raises(TimeoutError):
        await hang()


async def test_timeout_is_per_try_and_retried() -> None:
    never = asyncio.Event()
    tries = 0

    @component(
        timeout=0.05, retry=Retry(attempts=3, jitter=False, backoff_base=0.001, retry_on=(TimeoutError,))
    )
    async def hang() -> None:
        nonlocal tries
        tries += 1
        await never.wait()

    with pytest.raises(TimeoutError):
        await hang()
    assert tries == 3


async def test_timeout_does_not_affect_a_fast_component() -> None:
    @component(timeout=5)
    async def quick() -> str:
        return "done"

    assert await quick() == "done"


# -- fallback -----------------------------------------------------------------------------------


async def test_fallback_value() -> None:
    @component(fallback="default")
    async def broken(x: int) -> str:
        raise RuntimeError("nope")

    assert await broken(1) == "default"


async def test_fallback_sync_callable_receives_the_arguments() -> None:
    got: list[tuple[Any, ...]] = []

    def recover(x: int, suffix: str = "!") -> str:
        got.append((x, suffix))
        return f"fallback {x}{suffix}"

    @component(fallback=recover)
    async def broken(x: int, suffix: str = "!") -> str:
        raise RuntimeError("nope")

    assert await broken(3, suffix="?") == "fallback 3?"
    assert got == [(3, "?")]


async def test_fallback_async_callable() -> None:
    async def recover(x: int) -> int:
        return -x

    @component(fallback=recover)
    async def broken(x: int) -> int:
        raise RuntimeError("nope")

    assert await broken(5) == -5


async def test_fallback_only_after_retries_are_exhausted() -> None:
    always = Flaky(99, ConnectionError("down"))
    twice = Flaky(2, ConnectionError("down"), value="real")

    @component(retry=FAST, fallback="fallback")
    async def a() -> str:
        return str(always())

    @component(retry=FAST, fallback="fallback")
    async def b() -> str:
        return str(twice())

    assert await a() == "fallback"
    assert always.calls == 3
    assert await b() == "real"
    assert twice.calls == 3


async def test_non_determinism_error_is_never_a_fallback_nor_retried() -> None:
    calls = 0

    @component(retry=FAST, fallback="fallback")
    async def diverged() -> str:
        nonlocal calls
        calls += 1
        raise outlast.NonDeterminismError("s#0", "diverged")

    with pytest.raises(outlast.NonDeterminismError):
        await diverged()
    assert calls == 1


# -- configuration ------------------------------------------------------------------------------


def test_secret_args_must_name_parameters() -> None:
    async def fn(prompt: str, api_key: str) -> str:
        return prompt

    assert component(secret_args=("api_key",))(fn).secret_args == ("api_key",)
    with pytest.raises(outlast.ConfigError, match="token"):
        component(secret_args=("token",))(fn)


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_timeout_must_be_positive(timeout: float) -> None:
    async def fn() -> None:
        return None

    with pytest.raises(outlast.ConfigError):
        component(timeout=timeout)(fn)


def test_component_name_option() -> None:
    @component(name="custom-name")
    async def fn() -> None:
        return None

    assert fn.name == "custom-name"
    assert fn.fn.__name__ == "fn"


# -- emissions outside a run --------------------------------------------------------------------


async def test_emissions_outside_a_run_are_noops() -> None:
    @component
    async def chatty(x: int) -> int:
        assert current_frame.get() is None
        status("working", stage=1)
        progress(1, 2, "half")
        publish("draft", {"x": x})
        publish("draft", {"x": x + 1})
        emit("citation", {"url": "https://example.com"})
        log("hello", level="debug", extra=True)
        outlast.output("chunk")
        return x

    assert current_frame.get() is None
    assert await chatty(7) == 7
