"""A fleet-wide circuit breaker per LLM provider, with its state in one Redis hash.

States: **closed** (calls flow) → **open** after ``failure_threshold`` consecutive failures, or an
error rate ≥ ``error_rate`` over the last ``window_s`` with at least ``min_calls`` calls → after
``cooldown_s`` **half-open**: at most ``half_open_probes`` concurrent probe calls are admitted; a
probe success closes the breaker (counters reset), a probe failure reopens it for another cooldown.

Every operation is one run of one Lua script (atomic across the fleet) that reads the server clock
(``TIME``), so machines with skewed clocks agree. The error-rate window is kept as 10 time buckets
of call/failure counters in the same hash, so memory stays constant however busy the provider is;
the window is therefore exact to one bucket (a tenth of ``window_s``).

A probe that will not be made (its call went elsewhere) is handed back with
:meth:`CircuitBreaker.cancel_probe`. A probe whose worker dies never reports back; after
``probe_timeout_s`` its slot is given to the next caller so the breaker cannot stay half-open
forever. An idle breaker's key expires (closed), which also forgets old consecutive failures.

Without Redis, :class:`LocalBreaker` keeps the same states in one process (consecutive-failure
rule only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal, cast

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from outlast.errors import ConfigError, StoreError, StoreUnavailable
from outlast.store.client import RedisClient, register_script
from outlast.store.keys import llm_breaker_key

__all__ = ["Admission", "BreakerSettings", "BreakerState", "CircuitBreaker", "LocalBreaker"]

StateName = Literal["closed", "open", "half_open"]
Admission = Literal["call", "probe"] | None
"""How a breaker let a call through: ``"call"`` (closed), ``"probe"`` (a half-open probe slot that
must be reported or handed back), or None (rejected)."""
_BUCKETS = 10

# KEYS: breaker hash. ARGV: op (allow|success|failure|cancel|state), failure threshold, error rate (-1 =
# off), min calls, window ms, bucket ms, cooldown ms, max probes, probe timeout ms.
# Returns {allowed 0/1, state, consecutive, window calls, window failures, probes, opened_until ms}.
_BREAKER = """
local key, op = KEYS[1], ARGV[1]
local threshold, rate, min_calls = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local window_ms, bucket_ms, cooldown_ms = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local max_probes, probe_ms = tonumber(ARGV[8]), tonumber(ARGV[9])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = math.floor(now / bucket_ms)
local nb = math.floor(window_ms / bucket_ms)

local h = redis.call('HMGET', key, 'state', 'consecutive', 'opened_until', 'probes', 'probe_until')
local state = h[1] or 'closed'
local consecutive = tonumber(h[2]) or 0
local opened_until = tonumber(h[3]) or 0
local probes = tonumber(h[4]) or 0
local probe_until = tonumber(h[5]) or 0

-- Sum the live buckets ("c:<n>" calls, "f:<n>" failures); delete stale ones when writing.
local function window(prune)
  local calls, fails = 0, 0
  local flat = redis.call('HGETALL', key)
  for i = 1, #flat, 2 do
    local kind = string.sub(flat[i], 1, 2)
    if kind == 'c:' or kind == 'f:' then
      if tonumber(string.sub(flat[i], 3)) <= cur - nb then
        if prune then redis.call('HDEL', key, flat[i]) end
      elseif kind == 'c:' then calls = calls + tonumber(flat[i + 1])
      else fails = fails + tonumber(flat[i + 1]) end
    end
  end
  return calls, fails
end

local function clear_window()
  local fields = redis.call('HKEYS', key)
  for i = 1, #fields do
    local kind = string.sub(fields[i], 1, 2)
    if kind == 'c:' or kind == 'f:' then redis.call('HDEL', key, fields[i]) end
  end
end

local function save()
  redis.call('HSET', key, 'state', state, 'consecutive', consecutive, 'opened_until', opened_until,
             'probes', probes, 'probe_until', probe_until)
  redis.call('PEXPIRE', key, math.max(window_ms, cooldown_ms, probe_ms) + 60000)
end

-- An open breaker whose cooldown is over is half-open with no probe out yet.
if state == 'open' and now >= opened_until then
  state, probes = 'half_open', 0
end
-- Probes that never reported back (crashed worker) stop holding their slots.
if state == 'half_open' and probes > 0 and now >= probe_until then probes = 0 end

local allowed = 0
if op == 'allow' then
  if state == 'closed' then
    allowed = 1
  elseif state == 'half_open' and probes < max_probes then
    probes = probes + 1
    probe_until = now + probe_ms
    allowed = 1
    save()
  end
elseif op == 'success' then
  if state == 'half_open' then
    state, consecutive, probes, opened_until, probe_until = 'closed', 0, 0, 0, 0
    clear_window()
    save()
  elseif state == 'closed' then
    consecutive = 0
    redis.call('HINCRBY', key, 'c:' .. cur, 1)
    window(true)
    save()
  end
  -- open: a straggler admitted before the breaker opened; it proves nothing, ignore it
elseif op == 'cancel' then
  -- an unused probe: free its slot for the next caller (closed or reopened: nothing to free)
  if state == 'half_open' and probes > 0 then
    probes = probes - 1
    save()
  end
elseif op == 'failure' then
  if state == 'half_open' then
    state, consecutive, probes, opened_until = 'open', consecutive + 1, 0, now + cooldown_ms
    save()
  elseif state == 'closed' then
    consecutive = consecutive + 1
    redis.call('HINCRBY', key, 'c:' .. cur, 1)
    redis.call('HINCRBY', key, 'f:' .. cur, 1)
    local calls, fails = window(true)
    if consecutive >= threshold or (rate >= 0 and calls >= min_calls and fails >= rate * calls) then
      state, opened_until, probes = 'open', now + cooldown_ms, 0
      clear_window()
    end
    save()
  end
end
local calls, fails = window(false)
return {allowed, state, consecutive, calls, fails, probes, opened_until}
"""


@dataclass(frozen=True, slots=True)
class BreakerState:
    """A snapshot of one provider's breaker. ``opened_until`` is server epoch seconds.

    ``state`` is the effective state: an open breaker whose cooldown is over reads ``half_open``.
    """

    state: StateName
    consecutive_failures: int
    window_calls: int
    window_failures: int
    probes_in_flight: int
    opened_until: float | None


class CircuitBreaker:
    """Fleet-wide circuit breaker for one LLM ``provider`` (state in Redis, see module docs)."""

    def __init__(
        self,
        redis: RedisClient,
        provider: str,
        *,
        failure_threshold: int = 5,
        error_rate: float | None = 0.5,
        min_calls: int = 20,
        window_s: float = 30,
        cooldown_s: float = 10,
        half_open_probes: int = 1,
        probe_timeout_s: float = 60,
    ) -> None:
        if failure_threshold < 1 or min_calls < 1 or half_open_probes < 1:
            raise ConfigError("failure_threshold, min_calls and half_open_probes must be >= 1")
        if error_rate is not None and not 0 < error_rate <= 1:
            raise ConfigError(f"error_rate must be in (0, 1] or None, got {error_rate!r}")
        if window_s < 0.01 or cooldown_s <= 0 or probe_timeout_s <= 0:
            raise ConfigError("window_s must be >= 0.01, cooldown_s and probe_timeout_s > 0")
        self.provider = provider
        self._key = llm_breaker_key(provider)
        self._script = register_script(redis, _BREAKER)
        window_ms = round(window_s * 1000)
        self._params: list[str | int | float] = [
            failure_threshold,
            -1 if error_rate is None else error_rate,
            min_calls,
            window_ms,
            max(1, window_ms // _BUCKETS),
            max(1, round(cooldown_s * 1000)),
            half_open_probes,
            max(1, round(probe_timeout_s * 1000)),
        ]

    async def _run(self, op: str) -> tuple[bool, BreakerState]:
        try:
            res = cast(list[Any], await self._script(keys=[self._key], args=[op, *self._params]))
        except RedisError as exc:
            what = f"circuit breaker {op} for {self.provider!r} failed: {exc}"
            if isinstance(exc, RedisConnectionError | RedisTimeoutError):
                raise StoreUnavailable(what) from exc
            raise StoreError(what) from exc
        raw = res[1]
        name = cast(StateName, raw.decode() if isinstance(raw, bytes) else str(raw))
        opened_until = int(res[6])
        return bool(int(res[0])), BreakerState(
            state=name,
            consecutive_failures=int(res[2]),
            window_calls=int(res[3]),
            window_failures=int(res[4]),
            probes_in_flight=int(res[5]),
            opened_until=opened_until / 1000 if name != "closed" and opened_until else None,
        )

    async def admit(self) -> Admission:
        """Like :meth:`allow`, saying whether the call is a half-open probe."""
        allowed, snapshot = await self._run("allow")
        if not allowed:
            return None
        return "probe" if snapshot.state == "half_open" else "call"

    async def allow(self) -> bool:
        """May a call go to the provider now? Half-open admits at most ``half_open_probes`` probes."""
        return await self.admit() is not None

    async def cancel_probe(self) -> None:
        """Hand back a probe slot from :meth:`admit` that will not be used (the call went elsewhere),
        so the next caller can probe at once instead of after ``probe_timeout_s``."""
        await self._run("cancel")

    async def record_success(self) -> None:
        """Report a successful call; a half-open probe success closes the breaker."""
        await self._run("success")

    async def record_failure(self) -> None:
        """Report a failed call (retryable provider error); may open or reopen the breaker."""
        await self._run("failure")

    async def state(self) -> BreakerState:
        """The current state and counters (read-only)."""
        _, snapshot = await self._run("state")
        return snapshot


@dataclass(frozen=True)
class BreakerSettings:
    """Per-provider circuit breaker settings (see :class:`CircuitBreaker`)."""

    failure_threshold: int = 5
    error_rate: float | None = 0.5
    min_calls: int = 20
    window_s: float = 30.0
    cooldown_s: float = 10.0
    half_open_probes: int = 1
    probe_timeout_s: float = 60.0


class LocalBreaker:
    """An in-process breaker (no Redis): consecutive failures open it, same states as the shared one."""

    def __init__(self, settings: BreakerSettings) -> None:
        self.settings = settings
        self.state = "closed"
        self.consecutive = 0
        self.opened_until = 0.0
        self.probes = 0
        self.probe_until = 0.0

    async def admit(self) -> Admission:
        now = time.monotonic()
        if self.state == "open" and now >= self.opened_until:
            self.state, self.probes = "half_open", 0
        if self.state == "half_open" and self.probes and now >= self.probe_until:
            self.probes = 0
        if self.state == "closed":
            return "call"
        if self.state == "half_open" and self.probes < self.settings.half_open_probes:
            self.probes += 1
            self.probe_until = now + self.settings.probe_timeout_s
            return "probe"
        return None

    async def allow(self) -> bool:
        return await self.admit() is not None

    async def cancel_probe(self) -> None:
        if self.state == "half_open" and self.probes:
            self.probes -= 1

    async def record_success(self) -> None:
        if self.state != "open":
            self.state, self.consecutive, self.probes = "closed", 0, 0

    async def record_failure(self) -> None:
        self.consecutive += 1
        if self.state == "half_open" or (
            self.state == "closed" and self.consecutive >= self.settings.failure_threshold
        ):
            self.state, self.probes = "open", 0
            self.opened_until = time.monotonic() + self.settings.cooldown_s
