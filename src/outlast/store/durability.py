"""Commit waits: a step's checkpoint (and a run's end) acknowledged only once replicas have it.

Redis replication is asynchronous: a master acknowledges a write before any replica has it, so
a master that dies right after a step commit may take the commit with it when its replica is
promoted (the step then runs again on replay; see docs/deploy.md, "Replication, failover and
what can be lost"). ``OUTLAST_COMMIT_WAIT`` (or ``RedisStore(commit_wait=...)``) narrows that
window by following the commit with ``WAIT`` or ``WAITAOF`` on the same connection:

* ``off`` (default): the master's acknowledgement is enough.
* ``replicas:N[:TIMEOUT_MS]``: ``WAIT N TIMEOUT_MS`` — N replicas have the commit in memory.
* ``aof[:LOCAL[:REPLICAS[:TIMEOUT_MS]]]``: ``WAITAOF LOCAL REPLICAS TIMEOUT_MS`` — the commit
  is fsynced to the master's AOF (LOCAL=1, the default) and to REPLICAS replicas' AOFs.

The waits follow the appends that carry a step's checkpoint or a run's terminal event (and a
run ended by :meth:`~outlast.store.leases.RunLeases.finish`); append ``+all`` to wait after every
append (status lines, output frames too). ``TIMEOUT_MS`` defaults to 1000.

When fewer replicas (or AOFs) acknowledge within the timeout, the commit **stands**: it is on the
master and the run goes on. The shortfall is logged (a warning, at most every 10 s per store)
and counted (:attr:`CommitWait.shortfalls`). Failing the step instead would not undo the write
(the master has it) and would stop every run whenever a replica restarts.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from outlast.errors import ConfigError
from outlast.store.base import OP_EXPIRE, OP_STEP, AppendItem

ENV_COMMIT_WAIT = "OUTLAST_COMMIT_WAIT"
DEFAULT_TIMEOUT_MS = 1000
#: A wait blocks the connection it runs on; the multiplexer's reply watchdog must outlast it.
MAX_TIMEOUT_MS = 10_000
_WARN_EVERY = 10.0

log = logging.getLogger("outlast.store")


@dataclass
class CommitWait:
    """Which appends wait for replicas or AOF fsyncs, and how (see the module's docstring)."""

    mode: str = "off"  # off | replicas | aof
    replicas: int = 0
    local: int = 0
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    every_append: bool = False
    #: Waits that ended with fewer acknowledgements than asked for (the commit stood).
    shortfalls: int = field(default=0, compare=False)
    #: Waits made.
    waits: int = field(default=0, compare=False)
    _warned_at: float = field(default=0.0, compare=False, repr=False)

    @classmethod
    def parse(cls, spec: str) -> CommitWait:
        """``off`` | ``replicas:N[:TIMEOUT_MS]`` | ``aof[:LOCAL[:REPLICAS[:TIMEOUT_MS]]]``, each
        optionally followed by ``+all``."""
        text = spec.strip().lower()
        every = text.endswith("+all")
        if every:
            text = text[: -len("+all")]
        head, *rest = text.split(":")
        try:
            numbers = [int(part) for part in rest]
        except ValueError:
            raise ConfigError(f"commit wait {spec!r}: the numbers after ':' must be integers") from None
        if head in ("", "off", "none", "0") and not rest and not every:
            return cls()
        if head == "replicas" and 1 <= len(numbers) <= 2:
            wait = cls("replicas", replicas=numbers[0], every_append=every)
            if len(numbers) == 2:
                wait.timeout_ms = numbers[1]
        elif head == "aof" and len(numbers) <= 3:
            local, replicas, timeout = numbers + [1, 0, DEFAULT_TIMEOUT_MS][len(numbers) :]
            wait = cls("aof", replicas=replicas, local=local, timeout_ms=timeout, every_append=every)
        else:
            raise ConfigError(
                f"commit wait {spec!r}: use off, replicas:N[:TIMEOUT_MS] or "
                "aof[:LOCAL[:REPLICAS[:TIMEOUT_MS]]] (optionally +all)"
            )
        wait._check(spec)
        return wait

    @classmethod
    def from_env(cls) -> CommitWait:
        """``OUTLAST_COMMIT_WAIT`` parsed (``off`` when unset)."""
        return cls.parse(os.environ.get(ENV_COMMIT_WAIT, "off"))

    def _check(self, spec: str) -> None:
        if self.replicas < 0 or self.local not in (0, 1) or (self.replicas == 0 and self.local == 0):
            raise ConfigError(f"commit wait {spec!r}: wait for at least one replica or the local AOF")
        if not 1 <= self.timeout_ms <= MAX_TIMEOUT_MS:
            # WAIT 0 blocks for ever, and a wait holds up its connection: bounded, always.
            raise ConfigError(f"commit wait {spec!r}: the timeout must be 1-{MAX_TIMEOUT_MS} ms")

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def __str__(self) -> str:
        suffix = "+all" if self.every_append else ""
        if self.mode == "replicas":
            return f"replicas:{self.replicas}:{self.timeout_ms}{suffix}"
        if self.mode == "aof":
            return f"aof:{self.local}:{self.replicas}:{self.timeout_ms}{suffix}"
        return "off"

    def command(self) -> tuple[Any, ...]:
        """The command that follows a commit on its connection."""
        if self.mode == "replicas":
            return ("WAIT", self.replicas, self.timeout_ms)
        return ("WAITAOF", self.local, self.replicas, self.timeout_ms)

    def applies(self, items: Sequence[AppendItem]) -> bool:
        """Whether an append of ``items`` waits: it carries a step's checkpoint (not an emission
        marker) or a run's terminal event (which sets the keys' expiry), or ``+all``."""
        if not self.enabled:
            return False
        if self.every_append:
            return True
        for item in items:
            for op, _, value in item.ops:
                if op == OP_EXPIRE or (op == OP_STEP and value not in ("1", b"1")):
                    return True
        return False

    def check(self, reply: Any, what: str) -> bool:
        """Whether the wait's ``reply`` met the target; a shortfall is counted and logged."""
        self.waits += 1
        if self.mode == "replicas":
            got, met = f"{int(reply)} of {self.replicas} replicas", int(reply) >= self.replicas
        else:
            local, replicas = int(reply[0]), int(reply[1])
            got = f"local AOF {local}/{self.local}, replica AOFs {replicas}/{self.replicas}"
            met = local >= self.local and replicas >= self.replicas
        if met:
            return True
        self.shortfalls += 1
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            log.warning(
                "commit wait %s: %s acknowledged %s within %d ms; the commit stands on the master "
                "(%d shortfalls so far)", self, what, got, self.timeout_ms, self.shortfalls,
            )  # fmt: skip
        return False


def commit_wait_of(value: CommitWait | str | None) -> CommitWait:
    """A store's setting: a :class:`CommitWait`, its text, or None for ``OUTLAST_COMMIT_WAIT``."""
    if isinstance(value, CommitWait):
        return value
    return CommitWait.from_env() if value is None else CommitWait.parse(value)
