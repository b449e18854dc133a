"""``@workflow``: a durable function composed of components.

The workflow's parameters define its input: a pydantic model is derived from the signature
so inputs are validated (and a JSON Schema is available to the API and the console).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Generic, ParamSpec, TypeVar, overload

import pydantic
from pydantic import BaseModel, ConfigDict, TypeAdapter

from outlast import serde
from outlast.core.retry import Retry
from outlast.errors import ConfigError, InputValidationError, WorkflowNotFound

P = ParamSpec("P")
R = TypeVar("R")

WORKFLOW_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


class Workflow(Generic[P, R]):
    """A registered durable workflow. Awaiting a direct call runs it as a plain function."""

    def __init__(
        self,
        fn: Callable[P, Awaitable[R]],
        *,
        name: str | None = None,
        lenient_replay: bool = False,
        secret_args: tuple[str, ...] = (),
        description: str | None = None,
        upgrade_safe: bool = False,
        retry: Retry | None = None,
    ) -> None:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigError(f"@workflow needs an async function, got {fn!r}")
        self.fn = fn
        self.name = name or fn.__name__
        if not self.name or not set(self.name) <= WORKFLOW_NAME_CHARS:
            raise ConfigError(f"workflow name {self.name!r}: use letters, digits, '_', '-' and '.'")
        self.lenient_replay = lenient_replay
        self.upgrade_safe = upgrade_safe
        self.retry = retry
        self.secret_args = tuple(secret_args)
        self.description = description if description is not None else inspect.getdoc(fn) or ""
        self.signature = inspect.signature(fn)
        hints = inspect.get_annotations(fn, eval_str=True)
        fields: dict[str, Any] = {}
        for param in self.signature.parameters.values():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ConfigError(f"workflow {self.name!r}: *args/**kwargs cannot form an input schema")
            default = ... if param.default is inspect.Parameter.empty else param.default
            fields[param.name] = (hints.get(param.name, Any), default)
        self.input_model: type[BaseModel] = pydantic.create_model(
            f"{self.name}_input", __config__=ConfigDict(extra="forbid"), **fields
        )
        self.output_adapter: TypeAdapter[Any] = TypeAdapter(hints.get("return", Any))

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self.fn(*args, **kwargs)

    def input_schema(self) -> dict[str, Any]:
        return self.input_model.model_json_schema()

    def output_schema(self) -> dict[str, Any]:
        return self.output_adapter.json_schema()

    def validate_input(self, data: dict[str, Any] | None) -> dict[str, Any]:
        """The input as stored (JSON types), or InputValidationError naming each bad field."""
        try:
            model = self.input_model.model_validate(data or {})
        except pydantic.ValidationError as exc:
            errors = [
                {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]}
                for err in exc.errors(include_url=False)
            ]
            summary = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in errors)
            raise InputValidationError(
                f"invalid input for workflow {self.name!r}: {summary}", errors
            ) from None
        return dict(serde.to_jsonable(model.model_dump(mode="json"), "workflow input"))

    def bind_input(self, stored: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments for the function (pydantic models rebuilt from stored JSON)."""
        model = self.input_model.model_validate(stored)
        return {name: getattr(model, name) for name in self.signature.parameters}

    def __repr__(self) -> str:
        return f"<workflow {self.name}>"


@overload
def workflow(fn: Callable[P, Awaitable[R]], /) -> Workflow[P, R]: ...
@overload
def workflow(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    lenient_replay: bool = False,
    secret_args: tuple[str, ...] = (),
    description: str | None = None,
    upgrade_safe: bool = False,
    retry: Retry | None = None,
) -> Callable[[Callable[P, Awaitable[R]]], Workflow[P, R]]: ...
def workflow(
    fn: Callable[P, Awaitable[R]] | None = None,
    /,
    *,
    name: str | None = None,
    lenient_replay: bool = False,
    secret_args: tuple[str, ...] = (),
    description: str | None = None,
    upgrade_safe: bool = False,
    retry: Retry | None = None,
) -> Workflow[P, R] | Callable[[Callable[P, Awaitable[R]]], Workflow[P, R]]:
    """Declare a durable workflow. ``name`` defaults to the function name.

    ``lenient_replay``: when replayed code calls a different step than the one recorded at a
    position, re-run it (with a warning event) instead of failing with NonDeterminismError.
    ``secret_args``: inputs masked as ``"[secret]"`` in events and traces.
    ``upgrade_safe``: its runs are not pinned to the version they started on: a worker of any
    version may execute or take them over (use only when every version replays them the same).
    ``retry``: when the body raises, run it again (completed steps replay) per this policy,
    instead of failing the run; each retry is a ``run.retrying`` event. Default: no retry.
    """

    def wrap(func: Callable[P, Awaitable[R]]) -> Workflow[P, R]:
        return Workflow(
            func, name=name, lenient_replay=lenient_replay, secret_args=secret_args,
            description=description, upgrade_safe=upgrade_safe, retry=retry,
        )  # fmt: skip

    return wrap(fn) if fn is not None else wrap


class Registry:
    """Workflows by name: what a worker can run and what the API can list."""

    def __init__(self, workflows: Iterable[Workflow[Any, Any]] = ()) -> None:
        self._by_name: dict[str, Workflow[Any, Any]] = {}
        for wf in workflows:
            self.add(wf)

    def add(self, wf: Workflow[Any, Any]) -> None:
        existing = self._by_name.get(wf.name)
        if existing is not None and existing is not wf:
            raise ConfigError(f"two workflows are named {wf.name!r}")
        self._by_name[wf.name] = wf

    def get(self, name: str) -> Workflow[Any, Any]:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise WorkflowNotFound(f"no workflow named {name!r} (registered: {known})") from None

    def __iter__(self) -> Any:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)
