"""The server-side half of :mod:`outlast.llm.limits`: its Lua scripts (one atomic round trip each).

Scripts that need the time read the server's clock (``TIME``), so machines with skewed clocks agree.
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "FINISH", "RENEW", "SETTLE", "USAGE"]

# Shared Lua helpers. Window hash layout: "r:<id>" / "t:<id>" per grant, "R" / "T" running totals
# (kept equal to the sum of the per-grant fields, so a check is O(1) instead of a window scan).
_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function incr(hash, field, delta)
  -- HINCRBY rejects "-0", which is what Lua prints for a negated zero
  if delta ~= 0 then redis.call('HINCRBY', hash, field, delta) end
end

-- Drop window entries admitted at or before `cutoff`, keeping the totals in step.
local function prune(win, cost, cutoff)
  local old = redis.call('ZRANGEBYSCORE', win, '-inf', cutoff)
  if #old == 0 then return end
  local dr, dt = 0, 0
  for i = 1, #old do
    local v = redis.call('HMGET', cost, 'r:' .. old[i], 't:' .. old[i])
    dr = dr + (tonumber(v[1]) or 0)
    dt = dt + (tonumber(v[2]) or 0)
    redis.call('HDEL', cost, 'r:' .. old[i], 't:' .. old[i])
  end
  incr(cost, 'R', -dr)
  incr(cost, 'T', -dt)
  redis.call('ZREMRANGEBYSCORE', win, '-inf', cutoff)
end
"""

# KEYS: window zset, cost hash, lease zset
# ARGV: id, requests, tokens, rpm, tpm, max_concurrency (-1 = none), window ms, lease ms
# Returns {1, now_ms, lease_until_ms or -1} or {0, reasons, window_retry_ms, conc_retry_ms}
# (retry -1 = never fits).
ACQUIRE = (
    _COMMON
    + """
-- ms until the oldest entries holding `need` units (field prefix r: or t:) leave the window
local function free_after(win, cost, prefix, need, window_ms, now)
  local freed, start = 0, 0
  while true do
    local batch = redis.call('ZRANGE', win, start, start + 127, 'WITHSCORES')
    if #batch == 0 then return window_ms end
    for i = 1, #batch, 2 do
      freed = freed + (tonumber(redis.call('HGET', cost, prefix .. batch[i])) or 0)
      if freed >= need then
        return math.max(tonumber(batch[i + 1]) + window_ms - now, 1)
      end
    end
    start = start + 128
  end
end

local win, cost, lease = KEYS[1], KEYS[2], KEYS[3]
local id = ARGV[1]
local req, tok = tonumber(ARGV[2]), tonumber(ARGV[3])
local rpm, tpm, maxc = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local window_ms, lease_ms = tonumber(ARGV[7]), tonumber(ARGV[8])
local now = now_ms()
prune(win, cost, now - window_ms)

local reasons, wretry, cretry = {}, 0, 0
local cur_r = tonumber(redis.call('HGET', cost, 'R')) or 0
local cur_t = tonumber(redis.call('HGET', cost, 'T')) or 0
if rpm >= 0 and cur_r + req > rpm then
  table.insert(reasons, 'rpm')
  if req > rpm then wretry = -1
  else wretry = math.max(wretry, free_after(win, cost, 'r:', cur_r + req - rpm, window_ms, now)) end
end
if tpm >= 0 and cur_t + tok > tpm then
  table.insert(reasons, 'tpm')
  if tok > tpm then wretry = -1
  elseif wretry >= 0 then
    wretry = math.max(wretry, free_after(win, cost, 't:', cur_t + tok - tpm, window_ms, now))
  end
end
if maxc >= 0 then
  redis.call('ZREMRANGEBYSCORE', lease, '-inf', now)
  if redis.call('ZCARD', lease) >= maxc then
    table.insert(reasons, 'concurrency')
    local first = redis.call('ZRANGE', lease, 0, 0, 'WITHSCORES')
    cretry = math.max(tonumber(first[2]) - now, 1)
  end
end
if #reasons > 0 then
  return {0, table.concat(reasons, ','), wretry, cretry}
end

redis.call('ZADD', win, now, id)
redis.call('HSET', cost, 'r:' .. id, req, 't:' .. id, tok)
incr(cost, 'R', req)
incr(cost, 'T', tok)
-- idle windows vanish shortly after their last entry has left the window
redis.call('PEXPIRE', win, window_ms + 1000)
redis.call('PEXPIRE', cost, window_ms + 1000)
local lease_until = -1
if maxc >= 0 then
  lease_until = now + lease_ms
  redis.call('ZADD', lease, lease_until, id)
  local last = redis.call('ZRANGE', lease, -1, -1, 'WITHSCORES')
  redis.call('PEXPIRE', lease, tonumber(last[2]) - now + 1000)
end
return {1, now, lease_until}
"""
)

# Replace a grant's token cost with the actual one; 1 if the grant was still accounted, else 0.
_SETTLE_FN = """
local function settle(cost, id, tokens)
  local old = redis.call('HGET', cost, 't:' .. id)
  if not old then return 0 end
  local delta = tonumber(tokens) - tonumber(old)
  redis.call('HSET', cost, 't:' .. id, tokens)
  if delta ~= 0 then redis.call('HINCRBY', cost, 'T', delta) end
  return 1
end
"""

# KEYS: cost hash; ARGV: id, actual tokens. Returns 1 if the grant was still accounted, else 0.
SETTLE = _SETTLE_FN + "return settle(KEYS[1], ARGV[1], ARGV[2])\n"

# KEYS: cost hash, lease zset; ARGV: id, actual tokens. Settles and frees the concurrency slot in
# one round trip. Returns {settled 0/1, released 0/1}.
FINISH = _SETTLE_FN + "return {settle(KEYS[1], ARGV[1], ARGV[2]), redis.call('ZREM', KEYS[2], ARGV[1])}\n"

# KEYS: lease zset; ARGV: id, lease ms. Extends a live lease; returns new expiry ms or -1.
RENEW = (
    _COMMON
    + """
local now = now_ms()
local exp = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not exp or tonumber(exp) <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return -1
end
local until_ms = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], until_ms, ARGV[1])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], tonumber(last[2]) - now + 1000)
return until_ms
"""
)

# KEYS: window zset, cost hash, lease zset; ARGV: window ms. Returns {requests, tokens, in_flight}.
USAGE = (
    _COMMON
    + """
local now = now_ms()
prune(KEYS[1], KEYS[2], now - tonumber(ARGV[1]))
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
return {tonumber(redis.call('HGET', KEYS[2], 'R')) or 0,
        tonumber(redis.call('HGET', KEYS[2], 'T')) or 0,
        redis.call('ZCARD', KEYS[3])}
"""
)
