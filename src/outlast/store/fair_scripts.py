"""Lua scripts of the fair queues and queue partitions (keys: :mod:`outlast.store.keys`).

Every script but START_FAIR touches the keys of ONE work-stream partition ``S`` only: the stream
and its ``outlast:fair:{S}:…`` keys, which carry the stream's name as hash tag. The per-key
lists and zsets are named inside the scripts from prefixes in ARGV (they are in the same slot).
START_FAIR is START (``outlast.store.scripts``) with the fair push in place of the XADD, for a
single node, where a run's keys and the partition may be touched by one script.

Fixed fair keys, in this order (``keys.fair_keys``): ring, parked, limits, credit, bell.
"""

from __future__ import annotations

from typing import Final

from outlast.store import scripts

# fair_push(stream, ring, limits, bell, waiting_list, run_id, key, cap, weight, maxlen, bell_ms)
# Queues a run behind its fairness key. ``cap``/``weight``: '' leaves the key's setting alone, '0'
# clears it, else sets it. A key whose list was empty joins the ring; when that makes the ring
# non-empty, a bell entry ({run: '', bell: 1}) goes on the stream to wake a blocked worker, unless
# a bell is already out (the bell key): the stream never holds more than one bell.
_PUSH_FN = """
local function fair_set(limits, field, value)
  if value == '0' then redis.call('HDEL', limits, field)
  elseif value ~= '' then redis.call('HSET', limits, field, value) end
end
local function fair_ring(stream, ring, bell, key, maxlen, bell_ms)
  if redis.call('RPUSH', ring, key) == 1 and redis.call('SET', bell, '1', 'NX', 'PX', bell_ms) then
    redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'run', '', 'bell', '1')
  end
end
local function fair_push(stream, ring, limits, bell, list, run_id, key, cap, weight, maxlen, bell_ms)
  fair_set(limits, 'c:' .. key, cap)
  fair_set(limits, 'w:' .. key, weight)
  if redis.call('RPUSH', list, run_id) == 1 then fair_ring(stream, ring, bell, key, maxlen, bell_ms) end
end
"""

# KEYS: stream, ring, parked, limits, credit, bell, waiting list
# ARGV: run_id, key, cap, weight, maxlen, bell_ms
# The enqueue half of a fair start (cluster mode: after the run's record was created).
PUSH: Final = (
    _PUSH_FN
    + """
fair_push(KEYS[1], KEYS[2], KEYS[4], KEYS[6], KEYS[7], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
return 1
"""
)

# KEYS: meta, events, stream (the run's partition), runs index, versions, ring, parked, limits,
#       credit, bell, waiting list[, the tenant's runs index when tenant is not ''][, parent's
#       children]
# ARGV: run_id, workflow, version, tenant, input_json, now, queued_envelope, now_ms, work_maxlen,
#       key, cap, weight, bell_ms, [field, value]*
# START for a run with a fairness key, on a single node: the run is recorded and indexed as START
# does, but queued behind its key (fair_push) instead of on the stream. Returns 1 | 0 (existed).
START_FAIR: Final = (
    "local first_extra = 14\n"
    + scripts.CREATE_BODY
    + _PUSH_FN
    + """
fair_push(KEYS[3], KEYS[6], KEYS[8], KEYS[10], KEYS[11], ARGV[1], ARGV[10], ARGV[11], ARGV[12], ARGV[9],
  ARGV[13])
redis.call('ZADD', KEYS[4], 'NX', ARGV[8], ARGV[1])
redis.call('ZADD', KEYS[5], 'NX', ARGV[8], ARGV[3])
local k = 12
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[12], 'NX', ARGV[8], ARGV[1])
  k = 13
end
if KEYS[k] then redis.call('SADD', KEYS[k], ARGV[1]) end
return 1
"""
)

# KEYS: stream, ring, parked, limits, credit, bell
# ARGV: want, group, maxlen, now_ms, waiting-list prefix, running-zset prefix, consumer ('' = none)
# Moves up to ``want`` runs from the keys' lists onto the stream as ordinary entries
# ({run: id, fair: 1}; ``fair: c`` for a capped key's run, whose slot its worker releases),
# round-robin across the ring: each key gets its weight (default 1) of runs per turn, less its
# room under its cap (a capped key's pumped runs go in its running zset). A key at its cap leaves
# the ring for ``parked``; a key whose list emptied leaves it; a turn cut short
# by ``want`` resumes first next time (its credit). ``want`` is first reduced by the entries the
# group has not delivered yet (its lag), so the stream holds about what the workers can take, and
# a later key's run is never queued behind a long backlog. Work: O(runs moved + keys parked).
# The bell key is cleared: a bell read (or not) no longer stands for anything once pumped.
# With a ``consumer``, the script then reads up to ``want`` entries for it (XREADGROUP, as the
# worker's own read would: they are pending for it until acked, XAUTOCLAIM-able if it dies), so
# the runs a worker pumps for its free slots are its own, not taken by a worker blocked on the
# stream while the pumper's slots stay empty.
# Returns {moved, ring length after, entries read ({} without a consumer)}
PUMP: Final = """
redis.call('DEL', KEYS[6])
local want = tonumber(ARGV[1])
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if ok then
  for _, g in ipairs(groups) do
    local name, lag = nil, nil
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'lag' then lag = g[i + 1] end
    end
    if name == ARGV[2] and type(lag) == 'number' then want = want - lag end
  end
end
local moved = 0
while moved < want do
  local key = redis.call('LPOP', KEYS[2])
  if not key then break end
  local list = ARGV[5] .. key
  local running = ARGV[6] .. key
  local turn = redis.call('HGET', KEYS[5], key) or redis.call('HGET', KEYS[4], 'w:' .. key) or '1'
  local quota = math.max(1, tonumber(turn) or 1)
  redis.call('HDEL', KEYS[5], key)
  local cap = redis.call('HGET', KEYS[4], 'c:' .. key)
  if cap then
    local room = tonumber(cap) - redis.call('ZCARD', running)
    if room < quota then quota = room end
  end
  local took = 0
  if quota > 0 then
    local take = math.min(quota, want - moved)
    for _ = 1, take do
      local id = redis.call('LPOP', list)
      if not id then break end
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'run', id, 'fair', cap and 'c' or '1')
      if cap then redis.call('ZADD', running, ARGV[4], id) end
      took = took + 1
    end
    moved = moved + took
  end
  if redis.call('LLEN', list) > 0 then
    if cap and redis.call('ZCARD', running) >= tonumber(cap) then
      redis.call('SADD', KEYS[3], key)
    elseif took < quota then
      redis.call('LPUSH', KEYS[2], key)
      redis.call('HSET', KEYS[5], key, quota - took)
    else
      redis.call('RPUSH', KEYS[2], key)
    end
  end
end
local read = {}
if ARGV[7] ~= '' then
  read = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[7], 'COUNT', ARGV[1], 'STREAMS', KEYS[1], '>')
  read = (read and read[1] and read[1][2]) or {}
end
return {moved, redis.call('LLEN', KEYS[2]), read}
"""

# KEYS: stream, ring, parked, limits, credit, bell, running zset of ``key``
# ARGV: key, maxlen, bell_ms, run_id+
# Releases runs of a capped key (they ended): out of its running zset; a parked key goes back on
# the ring (the pump parks it again if it is still at its cap), ringing the bell if the ring was
# empty. Returns how many of the runs were held.
RELEASE: Final = (
    _PUSH_FN
    + """
local released = redis.call('ZREM', KEYS[7], unpack(ARGV, 4))
if released > 0 and redis.call('SREM', KEYS[3], ARGV[1]) == 1 then
  fair_ring(KEYS[1], KEYS[2], KEYS[6], ARGV[1], ARGV[2], ARGV[3])
end
return released
"""
)

# KEYS: limits (one partition's)
# ARGV: key, cap, weight ('' = leave, '0' = clear)
SET_LIMITS: Final = (
    _PUSH_FN
    + """
fair_set(KEYS[1], 'c:' .. ARGV[1], ARGV[2])
fair_set(KEYS[1], 'w:' .. ARGV[1], ARGV[3])
return 1
"""
)

# KEYS: partitions
# ARGV: version, n
# Records a worker's partition setting for its version: ``n`` is what new starts use, the most
# ever used is kept (workers read every partition up to it). Returns {n, max}.
SET_PARTITIONS: Final = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local most = tonumber(ARGV[2])
if cur then
  local old = tonumber(string.match(cur, ' (%d+)$') or '1')
  if old > most then most = old end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ' ' .. most)
return {tonumber(ARGV[2]), most}
"""
