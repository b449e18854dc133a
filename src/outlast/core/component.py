"""``@component``: a reusable, idempotent step with retry, timeout, fallback and a trace record.

Outside a workflow run a component is a plain call with its retry/timeout/fallback
behaviour (no Redis), so it can be unit-tested directly. Inside a run each call is a durable
step: its identity is fixed when the call is *made* (parent path + name + call index), its
result is checkpointed together with its ``step.completed`` event, and a replayed run gets
the stored result back without running it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from typing import Any, Generic, ParamSpec, TypeVar, cast, overload

from pydantic import TypeAdapter

from outlast import events as ev
from outlast import serde
from outlast.core.context import Checkpoint, Frame, current_frame
from outlast.core.retry import NO_RETRY, Retry
from outlast.errors import ConfigError, NonDeterminismError, SerializationError
from outlast.events import ErrorInfo
from outlast.masking import MASK
from outlast.sizes import MAX_ERROR_MESSAGE_CHARS, MAX_TRACEBACK_CHARS, cap_text
from outlast.store.base import OP_ADD, OP_META, OP_STEP, Op

P = ParamSpec("P")
R = TypeVar("R")
_UNSET: Any = object()
_END = object()
#: Written with every step's completion: the run made progress, so the count of attempts in a
#: row that lost their worker starts again (the CLAIM script compares it with max_attempts).
_PROGRESS: Op = (OP_META, "losses", "0")


def error_info(exc: BaseException, *, with_traceback: bool = False) -> ErrorInfo:
    """An exception as events and run records store it: type and message (capped, so the failure
    can always be written), and with ``with_traceback`` its capped traceback (for failures)."""
    info: ErrorInfo = {"type": type(exc).__name__, "message": cap_text(str(exc), MAX_ERROR_MESSAGE_CHARS)}
    if with_traceback and exc.__traceback__ is not None:
        info["traceback"] = format_traceback(exc)
    return info


def format_traceback(exc: BaseException) -> str:
    """The traceback as Python prints it (chained causes included), each line and the whole capped."""
    lines = traceback.TracebackException.from_exception(exc).format()
    text = "".join(cap_text(line, MAX_ERROR_MESSAGE_CHARS) for line in lines)
    return cap_text(text, MAX_TRACEBACK_CHARS, keep_end=True)


class Component(Generic[P, R]):
    """A decorated step function. Calling it returns an awaitable :class:`StepCall`."""

    def __init__(
        self,
        fn: Callable[P, Any],
        *,
        name: str | None = None,
        retry: Retry | None = None,
        timeout: float | None = None,
        fallback: Any = _UNSET,
        secret_args: tuple[str, ...] = (),
        usage: Callable[[Any], dict[str, Any] | None] | None = None,
    ) -> None:
        self.fn = fn
        #: Reads ``{tokens_in, tokens_out, cost}`` from a result (LLM steps): recorded in
        #: step.completed's ``usage`` and added to the run's ``tokens``/``cost`` with that event.
        self.usage = usage
        self.name = name or fn.__name__
        self.retry = retry or NO_RETRY
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"component {self.name!r}: timeout must be positive, got {timeout}")
        self.timeout = timeout
        self.fallback = fallback
        self.secret_args = tuple(secret_args)
        self.signature = inspect.signature(fn)
        unknown = [arg for arg in self.secret_args if arg not in self.signature.parameters]
        if unknown:
            raise ConfigError(f"component {self.name!r}: secret_args {unknown} are not parameters")
        self.is_async_gen = inspect.isasyncgenfunction(fn)
        self.is_sync_gen = inspect.isgeneratorfunction(fn)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.streaming = self.is_async_gen or self.is_sync_gen
        params = list(self.signature.parameters.values())
        simple = all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)
        #: Parameter names, when a call passing every one positionally needs no signature binding.
        self.simple_params: tuple[str, ...] | None = tuple(p.name for p in params) if simple else None
        annotation = self.signature.return_annotation
        self._result_adapter: TypeAdapter[Any] | None = None
        if not self.streaming and annotation is not inspect.Signature.empty and annotation is not None:
            with contextlib.suppress(Exception):  # unresolvable hints: results stay plain JSON
                hints = inspect.get_annotations(fn, eval_str=True)
                self._result_adapter = TypeAdapter(hints.get("return", Any))
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> StepCall[R]:
        frame = current_frame.get()
        if frame is None:
            return StepCall(self, args, kwargs, None, "", 0)
        position, index = frame.next_step()
        return StepCall(self, args, kwargs, frame, position, index)

    def __repr__(self) -> str:
        return f"<component {self.name}>"

    # -- running the body -------------------------------------------------------------------

    async def _invoke(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], sink: Callable[[Any], None]
    ) -> Any:
        """One try of the body. Streaming bodies feed ``sink`` and return the joined result."""
        if self.is_async_gen:
            chunks: list[Any] = []
            agen = cast(AsyncIterator[Any], self.fn(*args, **kwargs))
            try:
                async for chunk in agen:
                    chunks.append(chunk)
                    sink(chunk)
            finally:
                await cast(Any, agen).aclose()
            return _join(chunks)
        if self.is_sync_gen:
            chunks = []
            gen = cast(Iterator[Any], self.fn(*args, **kwargs))
            while (chunk := await asyncio.to_thread(next, gen, _END)) is not _END:
                chunks.append(chunk)
                sink(chunk)
            return _join(chunks)
        if self.is_async:
            return await cast(Awaitable[Any], self.fn(*args, **kwargs))
        return await asyncio.to_thread(functools.partial(self.fn, *args, **kwargs))

    async def _try(self, args: tuple[Any, ...], kwargs: dict[str, Any], sink: Callable[[Any], None]) -> Any:
        if self.timeout is None:
            return await self._invoke(args, kwargs, sink)
        async with asyncio.timeout(self.timeout):
            return await self._invoke(args, kwargs, sink)

    async def _fallback_value(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not callable(self.fallback):
            return self.fallback
        value = self.fallback(*args, **kwargs)
        if inspect.isawaitable(value):
            value = await value
        return value

    def decode_result(self, stored: Any) -> Any:
        """A checkpointed result, validated against the return annotation."""
        if self._result_adapter is None:
            return stored
        return self._result_adapter.validate_python(stored)


def _join(chunks: list[Any]) -> Any:
    if all(isinstance(chunk, str) for chunk in chunks):
        return "".join(chunks)
    return chunks


def _discard(_chunk: Any) -> None:
    return None


class StepCall(Generic[R]):
    """One call of a component. Its position in the run was fixed when it was created."""

    __slots__ = ("args", "component", "frame", "index", "kwargs", "position")

    def __init__(
        self,
        component: Component[Any, R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        frame: Frame | None,
        position: str,
        index: int,
    ) -> None:
        self.component = component
        self.args = args
        self.kwargs = kwargs
        self.frame = frame
        self.position = position
        self.index = index

    def __await__(self) -> Generator[Any, None, R]:
        if self.frame is None:
            return self._plain().__await__()
        return self._durable(self.frame).__await__()

    async def _plain(self) -> R:
        comp = self.component
        tries = 0
        while True:
            tries += 1
            try:
                return cast(R, await comp._try(self.args, self.kwargs, _discard))
            except Exception as exc:
                if tries < comp.retry.attempts and comp.retry.should_retry(exc):
                    await asyncio.sleep(comp.retry.delay(tries))
                    continue
                if comp.fallback is _UNSET or isinstance(exc, NonDeterminismError):
                    raise
                return cast(R, await comp._fallback_value(self.args, self.kwargs))

    async def _durable(self, parent: Frame) -> R:
        comp = self.component
        ctx = parent.ctx
        writer = ctx.writer
        step_id = (
            f"{parent.step_id}/{comp.name}#{self.index}" if parent.step_id else f"{comp.name}#{self.index}"
        )
        arguments = self._arguments()
        for name in comp.secret_args:
            ctx.secrets.add(arguments.get(name))
        hashed = {k: v for k, v in arguments.items() if k not in comp.secret_args}
        args_hash = serde.fast_hash([comp.name, hashed])

        recorded = ctx.checkpoints.get(self.position)
        if recorded is not None:
            if recorded.name == comp.name and recorded.args_hash == args_hash:
                ctx.replayed_steps += 1
                return cast(R, comp.decode_result(recorded.result))
            what = (
                f"recorded {recorded.name}(args hash {recorded.args_hash}) at position {self.position}, "
                f"code now calls {comp.name}(args hash {args_hash})"
            )
            if not ctx.lenient_replay:
                raise NonDeterminismError(recorded.step_id, what)
            writer.event(
                ev.LOG, step_id, {"level": "warning", "message": f"lenient replay re-runs step: {what}"}
            )

        waits = ctx.waits
        if waits is None:
            return await self._execute(parent, step_id, arguments, args_hash)
        waits.busy += 1  # a running step: the attempt must not suspend under it
        try:
            return await self._execute(parent, step_id, arguments, args_hash)
        finally:
            waits.leave()

    async def _execute(self, parent: Frame, step_id: str, arguments: dict[str, Any], args_hash: str) -> R:
        comp = self.component
        ctx = parent.ctx
        writer = ctx.writer
        shown = {k: (MASK if k in comp.secret_args else v) for k, v in arguments.items()}
        started = time.time()
        writer.event(
            ev.STEP_STARTED,
            step_id,
            {"name": comp.name, "parent": parent.step_id, "position": self.position, "args": shown},
        )
        # No side effect before the steps that completed earlier are durable (see writer.checkpoint).
        await writer.barrier()
        frame = Frame(ctx, step_id, self.position)
        tries = 0
        fallback_error: ErrorInfo | None = None
        while True:
            tries += 1
            attempt_try = tries

            def sink(chunk: Any, _try: int = attempt_try) -> None:
                writer.output(step_id, chunk, _try)

            token = current_frame.set(frame)
            try:
                frame.steps = frame.emissions = 0  # a retried try makes the same child calls again
                frame.tries = tries
                result = await comp._try(self.args, self.kwargs, sink)
                break
            except asyncio.CancelledError:
                writer.flush_output(step_id)
                writer.event(ev.STEP_FAILED, step_id, {"name": comp.name, "error": {"type": "CancelledError",
                             "message": "cancelled"}, "cancelled": True, "tries": tries})  # fmt: skip
                raise
            except Exception as exc:
                writer.flush_output(step_id)
                if tries < comp.retry.attempts and comp.retry.should_retry(exc):
                    delay = comp.retry.delay(tries)
                    writer.event(
                        ev.STEP_RETRYING,
                        step_id,
                        {"name": comp.name, "try": tries, "error": error_info(exc), "delay": round(delay, 3)},
                    )
                    await asyncio.sleep(delay)
                    continue
                if comp.fallback is _UNSET or isinstance(exc, NonDeterminismError):
                    error = error_info(exc, with_traceback=True)
                    writer.event(ev.STEP_FAILED, step_id, {"name": comp.name, "error": error, "tries": tries})
                    raise
                fallback_error = error_info(exc)
                result = await comp._fallback_value(self.args, self.kwargs)
                break
            finally:
                current_frame.reset(token)

        try:
            stored = serde.to_jsonable(result, f"result of step {step_id!r}")
        except SerializationError as exc:
            writer.event(
                ev.STEP_FAILED, step_id, {"name": comp.name, "error": error_info(exc), "tries": tries}
            )
            raise
        checkpoint = {
            "v": 1, "name": comp.name, "step_id": step_id, "args_hash": args_hash,
            "result": stored, "fallback": fallback_error is not None,
        }  # fmt: skip
        data: dict[str, Any] = {
            "name": comp.name, "result": stored, "tries": tries,
            "duration": round(time.time() - started, 6),
        }  # fmt: skip
        if fallback_error is not None:
            data["fallback"] = True
            data["error"] = fallback_error
        # _PROGRESS: the run moved on, worker losses before it no longer count (max_attempts).
        ops: list[Op] = [(OP_STEP, self.position, serde.dumps(checkpoint)), _PROGRESS]
        usage = comp.usage(stored) if comp.usage is not None else None
        if usage:
            data["usage"] = usage
            spent = int(usage.get("tokens_in", 0)) + int(usage.get("tokens_out", 0))
            ops.append((OP_ADD, "tokens", str(spent)))
            ops.append((OP_ADD, "cost", repr(float(usage.get("cost") or 0.0))))
        # Known done before the commit is awaited: if this task is cancelled while it waits, the
        # commit still lands, and a retried parent (or workflow) must find the step done.
        ctx.checkpoints[self.position] = Checkpoint(
            comp.name, step_id, args_hash, stored, fallback_error is not None
        )
        try:
            # Durable before the run's next side effect (the next step awaits the barrier), not
            # before the workflow code goes on: the last step shares run.completed's round trip.
            writer.checkpoint(ev.STEP_COMPLETED, step_id, data, tuple(ops))
        except SerializationError as exc:  # refused before anything was written (e.g. too large)
            if comp.streaming:
                # Its output already went out frame by frame: the event can do without the joined
                # result, which the checkpoint keeps for replays.
                data["result"] = None
                data["result_omitted"] = len(serde.dumps(stored))
                writer.checkpoint(ev.STEP_COMPLETED, step_id, data, tuple(ops))
                return cast(R, result)
            del ctx.checkpoints[self.position]
            failed = {"name": comp.name, "error": error_info(exc), "tries": tries}
            writer.event(ev.STEP_FAILED, step_id, failed)
            raise
        return cast(R, result)

    def _arguments(self) -> dict[str, Any]:
        """The call's arguments by parameter name, as JSON types (defaults applied)."""
        comp = self.component
        names = comp.simple_params
        if names is not None and not self.kwargs and len(self.args) == len(names):
            arguments = dict(zip(names, self.args, strict=True))  # fast path: all positional
        else:
            try:
                bound = comp.signature.bind(*self.args, **self.kwargs)
            except TypeError as exc:
                raise TypeError(f"{comp.name}(): {exc}") from exc
            bound.apply_defaults()
            arguments = dict(bound.arguments)
        try:
            return dict(serde.to_jsonable(arguments, "arguments"))
        except SerializationError:
            for name, value in arguments.items():  # find which one, for the message
                serde.to_jsonable(value, f"argument {name!r} of {comp.name}")
            raise


def checkpoint_from_json(raw: bytes) -> Checkpoint:
    data = serde.loads(raw)
    return Checkpoint(
        name=data["name"],
        step_id=data["step_id"],
        args_hash=data.get("args_hash", ""),
        result=data["result"],
        fallback=bool(data.get("fallback", False)),
        announced=bool(data.get("announced", True)),
    )


@overload
def component(fn: Callable[P, Awaitable[R]], /) -> Component[P, R]: ...
@overload
def component(fn: Callable[P, AsyncIterator[Any]], /) -> Component[P, Any]: ...
@overload
def component(fn: Callable[P, R], /) -> Component[P, R]: ...
@overload
def component(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    retry: Retry | None = None,
    timeout: float | None = None,
    fallback: Any = _UNSET,
    secret_args: tuple[str, ...] = (),
) -> Callable[[Callable[P, Any]], Component[P, Any]]: ...
def component(
    fn: Callable[P, Any] | None = None,
    /,
    *,
    name: str | None = None,
    retry: Retry | None = None,
    timeout: float | None = None,
    fallback: Any = _UNSET,
    secret_args: tuple[str, ...] = (),
) -> Component[P, Any] | Callable[[Callable[P, Any]], Component[P, Any]]:
    """Make a function a durable step. Use bare (``@component``) or with options.

    ``retry``: a :class:`Retry` policy (default: one try). ``timeout``: seconds per try.
    ``fallback``: a value, or a callable taking the component's arguments, used when every
    try failed — the step then completes with it (recorded as a fallback) instead of failing.
    ``secret_args``: parameters whose values are masked in events and traces and left out of
    the step's argument hash.
    """

    def wrap(func: Callable[P, Any]) -> Component[P, Any]:
        return Component(
            func, name=name, retry=retry, timeout=timeout, fallback=fallback, secret_args=secret_args
        )

    return wrap(fn) if fn is not None else wrap
