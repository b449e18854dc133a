"""Lua scripts of waiting runs: arming timers, suspending an attempt, settling a wait.

A wait (``wait_for_input``, ``sleep``, a child run's result) is recorded in the run's ``waits``
hash by the attempt that reaches it. It is *settled* only by RESOLVE, which checks the wait is
still pending, writes its result as the step's checkpoint and deletes the wait in one call, so
an input racing its timeout (or two timer scanners) settle it exactly once.

Who writes the announcing event (``input.received``, ``input.timeout``, ``sleep.ended``,
``child.completed``) depends on whether an attempt is live: a suspended or queued run has no
writer, so RESOLVE appends the event itself and re-queues the run; a running run's events are
numbered by its attempt alone, so RESOLVE leaves the checkpoint marked ``announced: false`` and
the attempt writes the event when it picks the result up.
"""

from __future__ import annotations

from typing import Final

from outlast.store.scripts import NOW

# KEYS: timers
# ARGV: member, delay_ms
# Schedules ``member`` at server time + delay. Returns {now_ms, due_ms}.
ARM: Final = (
    NOW
    + """
local due = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], due, ARGV[1])
return {now, due}
"""
)

# KEYS: meta, events, steps
# ARGV: attempt, seq, envelope (run.waiting), now, position*
# Ends a quiescent attempt without ending the run: status ``waiting``, no lease, nobody executes
# it until RESOLVE re-queues it. Refused when one of its pending waits was settled meanwhile
# (the attempt goes on instead) or a cancel was requested (the attempt ends the run cancelled).
# Returns {'OK'} | {'WOKEN', position} | {'CANCEL'} | {'STALE', attempt} | {'ENDED', status}
#       | {'GAP', last_seq} | {'GONE'}
SUSPEND: Final = """
local cur = redis.call('HMGET', KEYS[1], 'attempt', 'last_seq', 'status', 'cancel_requested')
if not cur[1] then return {'GONE'} end
if cur[1] ~= ARGV[1] then return {'STALE', tonumber(cur[1])} end
if cur[3] ~= 'running' then return {'ENDED', cur[3]} end
if cur[4] == '1' then return {'CANCEL'} end
for i = 5, #ARGV do
  if redis.call('HEXISTS', KEYS[3], ARGV[i]) == 1 then return {'WOKEN', ARGV[i]} end
end
local seq = tonumber(ARGV[2])
if seq ~= tonumber(cur[2]) + 1 then return {'GAP', tonumber(cur[2])} end
redis.call('XADD', KEYS[2], '0-' .. seq, 'e', ARGV[3])
-- Reaching a wait is progress: the worker losses counted against max_attempts start again.
redis.call('HSET', KEYS[1], 'status', 'waiting', 'lease_until', 0, 'lease_owner', '', 'last_seq', seq,
  'updated_at', ARGV[4], 'losses', 0)
redis.call('HINCRBY', KEYS[1], 'resumes', 1)
return {'OK'}
"""

# KEYS: meta, events, steps, waits
# ARGV: position, mode, match, result_json, event_type, data_json
# Settles one pending wait. ``mode``:
#   input  the wait at ``position`` must be an input wait for key ``match``; result/event given.
#   child  the child wait on run ``match`` (found by scanning the waits; position ignored).
#   due    a timer fired for ``position``: a due input wait times out, a due sleep ends, a child
#          wait answers POLL (the caller reads the child and settles it in ``child`` mode).
# With no live attempt (status waiting/queued) the event is appended here and the run becomes
# ``queued``: the caller must put it on its lane's work stream (REQUEUE). A ``queued`` run whose
# wait is already settled answers REQUEUE again to a timer (mode ``due``), so a caller that died
# before dispatching is covered by the next timer scan (a kick member is armed before settling).
# Returns {'REQUEUE', lane} | {'LIVE', checkpoint} | {'NONE', status} | {'MISMATCH', status}
#       | {'NOTDUE', deadline_ms} | {'POLL', child_run_id} | {'TERMINAL', status} | {'GONE'}
RESOLVE: Final = (
    NOW
    + """
local cur = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'last_seq', 'lane', 'version', 'run_id')
if not cur[1] then return {'GONE'} end
local status = cur[1]
if status == 'completed' or status == 'failed' or status == 'cancelled' then return {'TERMINAL', status} end
local lane = cur[5]
if cur[4] and cur[4] ~= '' then lane = cur[4] end
local mode = ARGV[2]
local position = ARGV[1]
local raw = false
if mode == 'child' then
  local all = redis.call('HGETALL', KEYS[4])
  for i = 1, #all, 2 do
    local w = cjson.decode(all[i + 1])
    if w.kind == 'child' and w.child == ARGV[3] then position = all[i]; raw = all[i + 1]; break end
  end
else
  raw = redis.call('HGET', KEYS[4], position)
end
if not raw then
  -- Only a timer re-dispatches a queued run whose wait was settled already (a lost dispatch);
  -- an input or a child notice for a wait that is gone changed nothing and says so.
  if mode ~= 'due' then return {'MISMATCH', status} end
  if status == 'queued' then return {'REQUEUE', lane} end
  return {'NONE', status}
end
local w = cjson.decode(raw)
local result, etype, data = ARGV[4], ARGV[5], ARGV[6]
if mode == 'input' then
  if w.kind ~= 'input' or w.key ~= ARGV[3] then return {'MISMATCH', status} end
elseif mode == 'due' then
  if w.kind == 'child' then return {'POLL', w.child} end
  local deadline = tonumber(w.deadline) or 0
  if deadline <= 0 then return {'NONE', status} end
  if deadline > now then return {'NOTDUE', deadline} end
  if w.kind == 'input' then
    result = '{"timed_out":true}'
    etype = 'input.timeout'
    data = '{"key":' .. cjson.encode(w.key) .. '}'
  else
    result = 'null'
    etype = 'sleep.ended'
    data = '{}'
  end
end
local free = status == 'waiting' or status == 'queued'
local checkpoint = '{"v":1,"name":' .. cjson.encode(w.name) .. ',"step_id":' .. cjson.encode(w.step_id) ..
  ',"args_hash":' .. cjson.encode(w.args_hash or '') .. ',"result":' .. result .. ',"announced":' ..
  (free and 'true' or 'false') .. '}'
redis.call('HSET', KEYS[3], position, checkpoint)
redis.call('HDEL', KEYS[4], position)
if not free then return {'LIVE', checkpoint} end
local seq = tonumber(cur[3]) + 1
local envelope = '{"v":1,"seq":' .. seq .. ',"type":' .. cjson.encode(etype) .. ',"run_id":' ..
  cjson.encode(cur[6]) .. ',"attempt":' .. cur[2] .. ',"step":' .. cjson.encode(w.step_id) .. ',"ts":' ..
  string.format('%.3f', now / 1000) .. ',"data":' .. data .. '}'
redis.call('XADD', KEYS[2], '0-' .. seq, 'e', envelope)
redis.call('HSET', KEYS[1], 'last_seq', seq, 'status', 'queued', 'updated_at', now / 1000)
return {'REQUEUE', lane}
"""
)
