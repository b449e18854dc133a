"""Starting and cancelling runs, deployment versions and the registry: what any client needs.

The API plane and the CLI use :class:`Dispatcher`; they never execute workflow code. Starting a
run writes its record and its ``run.queued`` event and puts its id on the work stream of its
deployment version, in one script (``START``), so no half-written run can exist. On a cluster it
takes four steps (:mod:`outlast.store.queue`); one that died halfway is completed by a retried
start, or else by the workers' start sweep (:mod:`outlast.worker.sweep`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, cast

from outlast import events as ev
from outlast.control.registry import RegistryCache, read_active, read_workflow
from outlast.core.workflow import Workflow
from outlast.errors import ConfigError, RunFailed, WorkflowNotFound
from outlast.events import RunStatus
from outlast.ids import new_run_id
from outlast.store import keys, scripts
from outlast.store.base import NewRun, RunRecord
from outlast.store.client import RedisClient, register_script
from outlast.store.commands import server_ms
from outlast.store.errors import guard, text
from outlast.store.fair import Fairness, check_fairness_key, partition_of
from outlast.store.leases import RunLeases
from outlast.store.pubsub import publish
from outlast.store.queue import RunQueue
from outlast.store.reads import RunReader
from outlast.store.redis import RedisStore
from outlast.store.waits import pending_records

IDEMPOTENCY_TTL = 24 * 3600


@dataclass(frozen=True)
class Started:
    run_id: str
    created: bool
    version: str


@dataclass(frozen=True)
class Cancelled:
    """``status``: ``cancelled`` (done now), ``cancelling`` (its worker stops it) or the terminal
    status the run already had (``completed``/``failed``/``cancelled``, with ``already``)."""

    run_id: str
    status: str
    already: bool = False


class Dispatcher:
    """Start, cancel and await runs; read and change deployment versions."""

    def __init__(
        self, redis: RedisClient, *, retention: float = 7 * 24 * 3600, cache_active_version: bool = False
    ) -> None:
        """``cache_active_version``: keep the active version and the workflows' registrations in
        memory, dropped whenever a change is announced (saves round trips per start; for
        long-lived processes, with :meth:`aclose` at the end)."""
        self.redis = redis
        self.store = RedisStore(redis)
        self.leases = RunLeases(redis, retention=retention)
        self.queue = RunQueue(redis)
        #: Read-only views of runs (snapshots, stream pages, the run index) for the API and CLI.
        self.reader = RunReader(redis)
        self._registry = RegistryCache(redis) if cache_active_version else None
        self._promote = register_script(redis, scripts.PROMOTE)

    async def aclose(self) -> None:
        if self._registry is not None:
            await self._registry.aclose()

    # -- versions ------------------------------------------------------------------------------

    async def active_version(self) -> str | None:
        if self._registry is not None:
            return await self._registry.active()
        return await read_active(self.redis)

    async def workflow_info(self, version: str, name: str) -> dict[str, Any] | None:
        """How a worker of ``version`` registered workflow ``name`` (None: no worker did)."""
        if self._registry is not None:
            return await self._registry.workflow(version, name)
        return await read_workflow(self.redis, version, name)

    async def promote(self, version: str, *, force: bool = False) -> str | None:
        """Make ``version`` the one new runs go to; returns the previously active one.

        ConfigError for a name no worker could serve, and for a version no worker registered
        (every start would fail), unless ``force`` (its workers are about to start)."""
        keys.check_version(version)
        _, previous = await self._switch(version, force)
        return previous or None

    async def rollback(self) -> str:
        """Make the previously active version active again; returns it."""
        version, _ = await self._switch("", True)
        return version

    async def _switch(self, version: str, force: bool) -> tuple[str, str]:
        """PROMOTE: (the version now active, the one before it or '')."""
        args = [version, "1" if force else "", keys.DEPLOY_CHANNEL]
        reply: list[Any] = await guard(self._promote(keys=[keys.DEPLOY, keys.VERSIONS], args=args))
        tag = text(reply[0])
        if tag == "NOPREVIOUS":
            raise ConfigError("nothing to roll back to: no version was active before this one")
        if tag == "UNKNOWN":
            known = ", ".join(await self.versions()) or "none yet"
            raise ConfigError(
                f"no worker has registered version {version!r} (known versions: {known}); start its "
                "workers first, or pass --force (force=True) for a version about to be deployed"
            )
        return text(reply[1]), text(reply[2])

    async def workflows(self, version: str) -> dict[str, dict[str, Any]]:
        """The workflows registered by workers of ``version`` (name → registration)."""
        return (await self.reader.registrations([version]))[0]

    async def versions(self) -> list[str]:
        raw = await guard(self.redis.zrange(keys.VERSIONS, 0, -1))
        return [v.decode() for v in raw]

    async def workers(self, stale_after: float | None = None) -> list[dict[str, Any]]:
        """Live workers; stale entries are pruned. A worker is stale once it missed its heartbeats
        for its lease timeout (when its runs are taken over), or for ``stale_after`` seconds."""
        raw: dict[bytes, bytes] = await guard(self.redis.hgetall(keys.WORKERS))
        now = await server_ms(self.redis) / 1000  # (workers report heartbeats on the server's clock)
        alive: list[dict[str, Any]] = []
        stale: list[bytes] = []
        for worker_id, payload in raw.items():
            info = json.loads(payload)
            limit = stale_after if stale_after is not None else float(info.get("lease_timeout") or 15.0)
            age = now - info.get("heartbeat_at", 0)
            if age <= limit:
                info["heartbeat_age"] = max(0.0, age)  # (on the server's clock: readers' clocks differ)
                alive.append(info)
            else:
                stale.append(worker_id)
        if stale:
            await guard(self.redis.hdel(keys.WORKERS, *[w.decode() for w in stale]))
        return sorted(alive, key=lambda w: str(w.get("id")))

    async def deploy_status(self) -> dict[str, Any]:
        """Active version; per version: live workers, in-flight and queued runs, and its state."""
        active = await self.active_version()
        live = await self.workers()
        report: list[dict[str, Any]] = []
        for version in await self.versions():
            in_flight = await self._in_flight(version)
            _, partitions = await self.queue.partitions.get(version)  # (every partition, fair queues too)
            queued = 0
            for index in range(partitions):
                queued += await self.queue.fair.queued(keys.work_partition(version, index))
            if version == active:
                state = "active"
            else:
                state = "drained" if in_flight == 0 and queued == 0 else "draining"
            workers = sum(1 for w in live if w.get("version") == version)
            report.append(
                {
                    "version": version,
                    "workers": workers,
                    "in_flight": in_flight,
                    "queued": queued,
                    "state": state,
                }
            )
        return {"active": active, "versions": report}

    async def _in_flight(self, version: str) -> int:
        """Runs of ``version`` under way: live leases, and runs whose lease expired but that have
        not ended (orphans a worker of the version will take over). Entries of runs that ended
        meanwhile (cancelled after their worker died, say) are pruned from the lease index."""
        index = keys.lease_index(version)
        now_ms = await server_ms(self.redis)
        live = int(await guard(self.redis.zcount(index, f"({now_ms}", "+inf")))
        expired: list[bytes] = await guard(self.redis.zrangebyscore(index, 0, now_ms))
        if not expired:
            return live
        pipe = self.redis.pipeline(transaction=False)
        for member in expired:
            pipe.hget(keys.run_keys(member.decode()).meta, "status")
        statuses: list[bytes | None] = await guard(pipe.execute())
        ended = [
            m for m, st in zip(expired, statuses, strict=True)
            if st is None or st.decode() in ev.TERMINAL_STATUSES or st == b"waiting"
        ]  # fmt: skip
        if ended:
            await guard(self.redis.zrem(index, *ended))
        return live + len(expired) - len(ended)

    # -- runs ----------------------------------------------------------------------------------

    async def start(
        self,
        workflow: Workflow[Any, Any] | str,
        input: dict[str, Any] | None = None,
        *,
        version: str | None = None,
        idempotency_key: str | None = None,
        tenant: str = "",
        run_id: str | None = None,
        extra: dict[str, str] | None = None,
        fairness_key: str | None = None,
        max_concurrency: int | None = None,
        weight: int | None = None,
    ) -> Started:
        """Record a queued run and dispatch it to a worker of its version.

        ``fairness_key`` (default: ``tenant``, if any; ``""`` for none) queues the run behind
        its key: workers take runs round-robin across keys, so one key's burst does not hold up
        another key's runs; ``max_concurrency`` and ``weight`` (runs per turn) set the key's
        limits as :meth:`set_fairness` does, for its partition (docs/compute.md, "Fair queues").

        A Workflow object validates ``input`` here; a workflow name must be registered by a
        worker of the version (``input`` is then expected to be validated by the caller, as the
        API does against the registered JSON Schema). The same ``idempotency_key`` for the same
        workflow returns the same run for 24 hours.
        """
        version = keys.check_version(version or await self.active_version() or "dev")
        if isinstance(workflow, Workflow):
            name, stored = workflow.name, workflow.validate_input(input)
            secret_args: tuple[str, ...] = workflow.secret_args
            upgrade_safe = workflow.upgrade_safe
        else:
            info = await self.workflow_info(version, workflow)
            if info is None:  # only now read the whole registry, to name what exists
                known = ", ".join(sorted(await self.workflows(version))) or "none"
                raise WorkflowNotFound(
                    f"no workflow {workflow!r} in version {version!r} (registered: {known})"
                )
            name, stored = workflow, dict(input or {})
            secret_args = tuple(info.get("secret_args", ()))
            upgrade_safe = bool(info.get("upgrade_safe", False))
        lane = keys.ANY_VERSION if upgrade_safe else version  # upgrade-safe runs are not pinned
        run = NewRun(
            run_id=run_id or new_run_id(), workflow=name, input=stored, version=version, tenant=tenant,
            extra=extra or {}, lane=lane if lane != version else "",
        )  # fmt: skip
        queued = run.queued_event(secret_args)  # (refuses a too large input before anything is written)
        if idempotency_key is not None:
            idem = keys.idempotency_key(name, idempotency_key)
            claimed = await guard(self.redis.set(idem, run.run_id, nx=True, ex=IDEMPOTENCY_TTL))
            if not claimed:
                existing = await guard(self.redis.get(idem))
                if existing:
                    run = dataclasses.replace(run, run_id=existing.decode())
                    if await guard(self.redis.exists(keys.run_keys(run.run_id).meta)):
                        record = await self.store.get_run(run.run_id)
                        await self._redispatch(record)
                        return Started(run.run_id, False, record.version)
                    queued = run.queued_event(secret_args)  # its run expired: start it under that id
        key = tenant if fairness_key is None else fairness_key
        if not key and (max_concurrency is not None or weight is not None):
            raise ConfigError("max_concurrency and weight are limits of a fairness key: give one")
        fair = Fairness(key, max_concurrency, weight) if key else None
        created = await self.queue.enqueue(run, queued, lane, fair)
        return Started(run.run_id, created, version)

    async def _redispatch(self, record: RunRecord) -> None:
        """Cluster mode: a run an earlier start recorded but never saw claimed may have lost its
        dispatch with that start's process (see store/queue.py); dispatch it again unless it is
        marked ``dispatched`` (a duplicate entry is harmless). On one server a start is atomic:
        nothing to do."""
        if not self.queue.split or record.status != RunStatus.QUEUED or record.attempt != 0:
            return
        fair = Fairness(record.fairness_key) if record.fairness_key else None  # (its fair queue again)
        await self.queue.dispatch(
            record.run_id, record.lane or record.version, version=record.version,
            created_ms=int(record.created_at * 1000), tenant=record.tenant, parent=record.parent, repair=True,
            stream=record.queue or None, fairness=fair,
        )  # fmt: skip

    async def set_fairness(
        self, key: str, *, max_concurrency: int | None = None, weight: int | None = None
    ) -> None:
        """Set (0: clear) a fairness key's cap on runs in flight across the fleet and its weight
        (runs per round-robin turn, default 1), for every known version; None leaves one alone.

        Written in each partition the key may hash to (any partition count up to the most used)."""
        Fairness(check_fairness_key(key), max_concurrency, weight)  # (validates)
        for version in [*await self.versions(), keys.ANY_VERSION]:
            _, most = await self.queue.partitions.get(version)
            for index in sorted({partition_of(key, n) for n in range(1, most + 1)}):
                stream = keys.work_partition(version, index)
                await self.queue.fair.set_limits(stream, key, max_concurrency, weight)

    async def started_for(self, workflow: str, idempotency_key: str) -> str | None:
        """The run ``idempotency_key`` started for ``workflow``, if that run exists (read only)."""
        existing = await guard(self.redis.get(keys.idempotency_key(workflow, idempotency_key)))
        if existing is None or not await guard(self.redis.exists(keys.run_keys(existing.decode()).meta)):
            return None
        return str(existing.decode())

    async def supply_input(self, run_id: str, key: str, value: Any) -> str:
        """Deliver input to a run waiting for ``key``: 'resumed' (it was suspended and is queued
        again) or 'delivered' (its live attempt takes it). NotWaiting / InputRejected otherwise."""
        return await self.leases.waits.supply_input(run_id, key, value)

    async def pending_waits(self, run_id: str) -> list[dict[str, Any]]:
        """What the run waits for, oldest first: input requests (key, schema, prompt, deadline),
        sleeps (deadline) and child runs (child)."""
        raw: dict[bytes, bytes] = await guard(self.redis.hgetall(keys.run_keys(run_id).waits))
        return pending_records(raw)

    async def cancel(self, run_id: str) -> Cancelled:
        """Cancel a run and its child runs: a queued, waiting (or orphaned) run ends now; a running
        one is stopped by its worker. A run that had already ended is left alone, children too."""
        outcome = await self._cancel_one(run_id)
        if outcome.already:
            return outcome
        children: set[bytes] = await guard(self.redis.smembers(keys.run_keys(run_id).children))
        for child in sorted(children):
            await self.cancel(child.decode())
        return outcome

    async def _cancel_one(self, run_id: str) -> Cancelled:
        for _ in range(5):
            tag, value = await self.leases.request_cancel(run_id)
            if tag == "terminal":
                return Cancelled(run_id, str(value), already=True)
            if tag == "leased":
                await publish(self.redis, keys.CANCEL_CHANNEL, run_id)
                return Cancelled(run_id, "cancelling")
            outcome, _ = await self.leases.cancel_unleased(run_id, int(value))
            if outcome == "ok":
                return Cancelled(run_id, RunStatus.CANCELLED)
            if outcome == "terminal":
                record = await self.store.get_run(run_id)
                return Cancelled(run_id, record.status, already=True)
            # A worker claimed it in between: go round again, it is leased now.
        return Cancelled(run_id, "cancelling")

    async def wait(self, run_id: str, timeout: float | None = None) -> RunRecord:
        """Block until the run ends (or ``timeout``), then return its record."""
        record = await self.store.get_run(run_id)
        if record.status not in ev.TERMINAL_STATUSES:
            await self._terminal_event(record, timeout)
            record = await self.store.get_run(run_id)
        return record

    async def result(self, run_id: str, timeout: float | None = None) -> Any:
        """The run's result once it completed; RunFailed if it failed or was cancelled,
        TimeoutError if it did not end within ``timeout`` seconds (as the HTTP client)."""
        record = await self.store.get_run(run_id)
        if record.status not in ev.TERMINAL_STATUSES:
            last = await self._terminal_event(record, timeout)
            if last is not None and last.type == ev.RUN_COMPLETED:
                return last.data.get("result")  # as stored in the record (masked the same way)
            record = await self.store.get_run(run_id)
            if record.status not in ev.TERMINAL_STATUSES:
                raise TimeoutError(f"run {run_id} did not end within {timeout}s (it is {record.status})")
        if record.status == RunStatus.COMPLETED:
            return record.result
        raise RunFailed(run_id, record.status, record.error)

    async def _terminal_event(self, record: RunRecord, timeout: float | None) -> ev.Event | None:
        """The run's terminal event once written (None on timeout), tailing from the record."""
        reading = cast(
            AsyncGenerator[ev.Event, None],
            self.store.read_events(record.run_id, after=record.last_seq, block_ms=1_000, known=record),
        )
        try:
            async with asyncio.timeout(timeout):
                async for event in reading:
                    if event.terminal:
                        return event
        except TimeoutError:
            return None
        finally:
            await reading.aclose()
        return None
