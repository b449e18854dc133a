"""Lua scripts: every write to a run's keys that can race is one of these.

The run's ``attempt`` (in the meta hash) is the fencing token. A writer carries the attempt
it was given by ``BEGIN_ATTEMPT``; ``APPEND`` refuses anything from another attempt, so a
paused or partitioned worker that wakes up after a takeover can no longer write.
Keys are the run's keys in :meth:`RunKeys.all` order (``meta, events, steps, objects, waits,
children``), all in one hash slot; a script that expires a finished run expires every one.
"""

from __future__ import annotations

from typing import Final

# Records a new run: its meta hash (extra fields from ARGV[first_extra] on, as pairs) and its
# first event, ``run.queued`` (seq 1). Ends the script with 0 when the run already exists.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fields = {'v', '1', 'run_id', ARGV[1], 'workflow', ARGV[2], 'version', ARGV[3], 'tenant', ARGV[4],
  'input', ARGV[5], 'status', 'queued', 'attempt', '0', 'last_seq', '1', 'created_at', ARGV[6],
  'updated_at', ARGV[6]}
for i = first_extra, #ARGV - 1, 2 do
  fields[#fields + 1] = ARGV[i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('XADD', KEYS[2], '0-1', 'e', ARGV[7])
"""

#: The record-writing body shared with the fair start (outlast.store.fair_scripts.START_FAIR).
CREATE_BODY: Final = _CREATE

# KEYS: meta, events
# ARGV: run_id, workflow, version, tenant, input_json, now, queued_envelope, [field, value]*
# Returns 1 when created, 0 when the run already existed (idempotent start).
CREATE_RUN: Final = "local first_extra = 8\n" + _CREATE + "return 1\n"

# KEYS: meta, events
# ARGV: as CREATE_RUN
# The run's own step of a start in cluster mode, where the other writes (run index, work stream,
# version, parent's children) live in other slots than the run's keys (store/queue.py). As
# CREATE_RUN, except that a run that exists, was never claimed (``queued`` at attempt 0) and lacks
# the ``dispatched`` marker (the start's last write) answers 2: its dispatch may have been lost
# with the process that started it, so the caller does it again (a duplicate work-stream entry is
# harmless: the second claim finds the run held or ended).
# Returns 1 when created, 2 when it exists, was never claimed nor marked dispatched, 0 otherwise.
CREATE_PENDING: Final = (
    """
local cur = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'dispatched')
if cur[1] then
  if cur[1] == 'queued' and cur[2] == '0' and not cur[3] then return 2 end
  return 0
end
local first_extra = 8
"""
    + _CREATE
    + "return 1\n"
)

# KEYS: a run index (``outlast:runs`` or a tenant's)
# ARGV: created ms, run id
# Step (0) of a cluster start: ZADD NX. A script only so that it goes over the hot path's
# multiplexed connection (a plain redis-py cluster command costs the starter more CPU).
INDEX_RUN: Final = "return redis.call('ZADD', KEYS[1], 'NX', ARGV[1], ARGV[2])\n"

# KEYS: a work stream
# ARGV: maxlen, run id
# Step (2) of a cluster start: the run's entry (as START's XADD), a script for the same reason.
ADD_ENTRY: Final = "return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'run', ARGV[2])\n"

# KEYS: meta
# The ``dispatched`` marker a cluster start writes last, for a run the start sweeper completes:
# only if the run still exists (an HSET would otherwise make a meta hash of one field).
MARK_DISPATCHED: Final = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'dispatched', '1')
return 1
"""

# KEYS: meta, events, work stream (the run's lane), runs index, versions[, the tenant's runs
#       index when tenant is not ''][, parent's children]
# ARGV: run_id, workflow, version, tenant, input_json, now, queued_envelope, now_ms,
#       work_maxlen, [field, value]*
# Starting a run: records it (as CREATE_RUN), puts its id on the work stream, indexes it (and in
# its tenant's index) and its version, and lists a child run on its parent, all at once, so no
# half-written run can exist. A run that already exists is left alone and not queued again.
# One command, where a MULTI/EXEC of the same writes costs the client a reply per write to parse.
# Returns 1 when created, 0 when the run already existed.
START: Final = (
    "local first_extra = 10\n"
    + _CREATE
    + """
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[9], '*', 'run', ARGV[1])
redis.call('ZADD', KEYS[4], 'NX', ARGV[8], ARGV[1])
redis.call('ZADD', KEYS[5], 'NX', ARGV[8], ARGV[3])
local k = 6
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[6], 'NX', ARGV[8], ARGV[1])
  k = 7
end
if KEYS[k] then redis.call('SADD', KEYS[k], ARGV[1]) end
return 1
"""
)

# KEYS: meta
# ARGV: expected_attempt ('' = any), now
# Returns {'OK', attempt, last_seq} | {'CONFLICT', attempt} | {'TERMINAL', status} | {'WAITING'}
#       | {'GONE'}
BEGIN_ATTEMPT: Final = """
local cur = redis.call('HMGET', KEYS[1], 'attempt', 'last_seq', 'status')
if not cur[1] then return {'GONE'} end
if cur[3] == 'completed' or cur[3] == 'failed' or cur[3] == 'cancelled' then
  return {'TERMINAL', cur[3]}
end
if cur[3] == 'waiting' then return {'WAITING'} end
if ARGV[1] ~= '' and ARGV[1] ~= cur[1] then return {'CONFLICT', tonumber(cur[1])} end
local attempt = tonumber(cur[1]) + 1
redis.call('HSET', KEYS[1], 'attempt', attempt, 'status', 'running', 'started_at', ARGV[2],
  'updated_at', ARGV[2])
return {'OK', attempt, tonumber(cur[2])}
"""

# KEYS: the run's keys (RunKeys.all)
# ARGV: attempt, maxlen (0 = uncapped), now, batch
# ``batch`` frames the events in one binary string (one argument instead of ~6 per event, which
# halves the client's encoding cost; Lua's struct library reads each header in one C call):
# per event ``>I4 seq, >I4 len, envelope, >H n_ops``, then per side effect ``opcode (1 byte),
# >I4 len, a, >I4 len, b`` (big-endian unsigned, lengths in bytes). Opcodes: H = HSET meta a b
# (collected into the final HSET of meta); C = HSET steps a b; O = HSET objects a b; W = HSET
# waits a b (a wait is registered); I = HINCRBYFLOAT meta a b (running totals); X = PEXPIRE
# every run key a*1000 ms (terminal events).
# Events whose seq is already written are skipped with their side effects (a retried append).
# Returns {'OK', last_seq} | {'STALE', current_attempt} | {'GAP', last_seq, seq} | {'GONE'}
APPEND: Final = """
local cur = redis.call('HMGET', KEYS[1], 'attempt', 'last_seq')
if not cur[1] then return {'GONE'} end
if cur[1] ~= ARGV[1] then return {'STALE', tonumber(cur[1])} end
local last = tonumber(cur[2])
local maxlen = tonumber(ARGV[2])
local blob = ARGV[4]
local read = struct.unpack
local meta = {'last_seq', last, 'updated_at', ARGV[3]}
local pos = 1
while pos <= #blob do
  local seq, envelope, nops
  seq, envelope, nops, pos = read('>I4I4c0I2', blob, pos)
  local fresh = seq > last
  if fresh then
    if seq ~= last + 1 then
      -- Scripts do not roll back: keep the meta hash true to what this call already wrote.
      meta[2] = last
      redis.call('HSET', KEYS[1], unpack(meta))
      return {'GAP', last, seq}
    end
    if maxlen > 0 then
      redis.call('XADD', KEYS[2], 'MAXLEN', maxlen, '0-' .. seq, 'e', envelope)
    else
      redis.call('XADD', KEYS[2], '0-' .. seq, 'e', envelope)
    end
    last = seq
  end
  for _ = 1, nops do
    local op, a, b
    op, a, b, pos = read('>c1I4c0I4c0', blob, pos)
    if fresh then
      if op == 'H' then
        meta[#meta + 1] = a
        meta[#meta + 1] = b
        if #meta >= 4000 then  -- unpack() has a limit (~8000 values): write out a long batch's fields
          meta[2] = last
          redis.call('HSET', KEYS[1], unpack(meta))
          meta = {'last_seq', last, 'updated_at', ARGV[3]}
        end
      elseif op == 'C' then redis.call('HSET', KEYS[3], a, b)
      elseif op == 'O' then redis.call('HSET', KEYS[4], a, b)
      elseif op == 'W' then redis.call('HSET', KEYS[5], a, b)
      elseif op == 'I' then redis.call('HINCRBYFLOAT', KEYS[1], a, b)
      elseif op == 'X' then
        local ms = math.floor(tonumber(a) * 1000)
        for k = 1, #KEYS do redis.call('PEXPIRE', KEYS[k], ms) end
      end
    end
  end
end
meta[2] = last
redis.call('HSET', KEYS[1], unpack(meta))
return {'OK', last}
"""

# KEYS: meta, objects
# A run's record and its objects as one atomic read, so the objects match ``last_seq`` exactly
# (objects read after the record could already hold patches past it). Read-only.
# Returns {meta, objects} as flat field/value lists.
SNAPSHOT: Final = """
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
"""

# --- compute plane: leases on runs --------------------------------------------------------------
# The lease lives in the run's meta hash (lease_owner, lease_until in server ms), next to the
# attempt it belongs to, so one script can check and move both. Server time (TIME) is used so
# workers on different machines agree on expiry.

NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: the run's keys (RunKeys.all)
# ARGV: owner, lease_ms, max_attempts (0 = unlimited), served (the workflow names this worker
#       can execute, each followed by a newline; '' = any)
# Claims the run for a new attempt when nobody holds a live lease on it, and returns everything
# the attempt needs (meta, checkpoints, objects, pending waits) so starting a run costs one round
# trip. A suspended run (status ``waiting``) is not claimable: RESOLVE re-queues it. A run of a
# workflow the claimer lacks is left untouched (UNSERVED) for a worker that has it.
# ``losses`` counts the attempts in a row that lost their worker (lease expired, or handed on
# after a failure: RELEASE) without the run making progress; a committed step (APPEND op
# ``H losses 0``) or a suspension resets it. The claim that would start attempt number
# ``max_attempts + 1`` since the last progress answers EXHAUSTED instead: a run that kills its
# worker at the same step is a poison pill, one that loses a worker now and then lives on.
# Returns {'OK', attempt, last_seq, lease_until, meta, steps, objects, waits (flat field/value
#       lists), lost (the owner whose expired lease this claim takes over, or '')}
#       | {'ALIVE', lease_until} | {'TERMINAL', status} | {'CANCELLED', attempt}
#       | {'EXHAUSTED', attempt, lost_workers, losses} | {'UNSERVED', workflow} | {'WAITING'}
#       | {'GONE'}
CLAIM: Final = (
    NOW
    + """
local cur = redis.call('HMGET', KEYS[1], 'attempt', 'last_seq', 'status', 'lease_until', 'lease_owner',
  'cancel_requested', 'lost_workers', 'losses', 'workflow')
if not cur[1] then return {'GONE'} end
if cur[3] == 'completed' or cur[3] == 'failed' or cur[3] == 'cancelled' then return {'TERMINAL', cur[3]} end
local until_ms = tonumber(cur[4] or '0')
if until_ms > now then return {'ALIVE', until_ms} end
if cur[6] == '1' then return {'CANCELLED', tonumber(cur[1])} end
if cur[3] == 'waiting' then return {'WAITING'} end
if ARGV[4] ~= '' and not string.find('\\n' .. ARGV[4], '\\n' .. cur[9] .. '\\n', 1, true) then
  return {'UNSERVED', cur[9]}
end
local lost = cur[7] or ''
local losses = tonumber(cur[8] or '0')
local took = ''
if cur[5] and cur[5] ~= '' and until_ms > 0 then
  took = cur[5]
  -- The lease expired: its owner was lost. Counted once (lease_until 0 marks it counted).
  lost = (lost == '' and cur[5]) or (lost .. ',' .. cur[5])
  losses = losses + 1
  redis.call('HSET', KEYS[1], 'lost_workers', lost, 'losses', losses, 'lease_until', 0)
end
local attempt = tonumber(cur[1]) + 1
local max_attempts = tonumber(ARGV[3])
if max_attempts > 0 and losses >= max_attempts then
  return {'EXHAUSTED', tonumber(cur[1]), lost, losses}
end
local lease_until = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'attempt', attempt, 'status', 'running', 'started_at', now / 1000,
  'updated_at', now / 1000, 'lease_owner', ARGV[1], 'lease_until', lease_until)
return {'OK', attempt, tonumber(cur[2]), lease_until, redis.call('HGETALL', KEYS[1]),
  redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4]), redis.call('HGETALL', KEYS[5]), took}
"""
)

# KEYS: meta
# ARGV: attempt, owner, lease_ms
# Returns {'OK', lease_until, cancel_requested ('1' or '')} | {'STALE', attempt} | {'ENDED'} (this
# attempt wrote the run's terminal event: nothing to renew) | {'GONE'}
RENEW: Final = (
    NOW
    + """
local cur = redis.call('HMGET', KEYS[1], 'attempt', 'lease_owner', 'cancel_requested', 'status')
if not cur[1] then return {'GONE'} end
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return {'STALE', tonumber(cur[1])} end
if cur[4] ~= 'running' then return {'ENDED'} end
local lease_until = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'lease_until', lease_until)
return {'OK', lease_until, cur[3] or ''}
"""
)

# KEYS: meta
# ARGV: attempt, owner, lost ('1': the attempt failed here, which counts as losing the run's
#       worker; '' for a drain's clean hand-off, which does not)
# Drops the lease so another worker can take the run over at once. Returns 1, or 0 when stale.
# The owner goes too (as SUSPEND does): a RENEW the releasing worker's heartbeat thread sent just
# before is then STALE, instead of reviving the lease (the next claim would find it alive, wait
# out the lease timeout, then count the hand-off as a lost worker).
RELEASE: Final = """
local cur = redis.call('HMGET', KEYS[1], 'attempt', 'lease_owner', 'lost_workers')
if cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', 0, 'lease_owner', '')
if ARGV[3] == '1' then
  local lost = cur[3] or ''
  redis.call('HSET', KEYS[1], 'lost_workers', (lost == '' and ARGV[2]) or (lost .. ',' .. ARGV[2]))
  redis.call('HINCRBY', KEYS[1], 'losses', 1)
end
return 1
"""

# KEYS: workflows:<version>, workers, versions, deploy
# ARGV: version, worker_id ('' = no worker: no check, nobody listed), digest, worker_info_json,
#       channel, [name, info_json]*
# A worker registers its workflows for its version, unless a live worker of that version (one
# whose last heartbeat is within its lease timeout, and not draining) runs other code (another
# registry ``digest``): two codes in one version would take over each other's runs. With no such
# worker the version's registrations are replaced by this worker's (stale names go), the worker
# is listed at once (so a second one starting now sees it), the version recorded, the first
# version ever seen made active, and the change announced on ``channel``. Liveness is judged on the
# server's clock, as leases are: workers report ``heartbeat_at`` in server seconds (hosts' clocks
# differ; a worker on a host whose clock is behind must still count as live).
# Returns {'OK'} | {'CONFLICT', worker_id, worker_info_json}
REGISTER: Final = (
    NOW
    + """
local now_ms = now
now = now_ms / 1000
local workers = {}
if ARGV[2] ~= '' then workers = redis.call('HGETALL', KEYS[2]) end
for i = 1, #workers, 2 do
  if workers[i] ~= ARGV[2] then
    local ok, info = pcall(cjson.decode, workers[i + 1])
    if ok and type(info) == 'table' and info.version == ARGV[1] and type(info.digest) == 'string'
        and info.digest ~= ARGV[3] and not info.draining
        and now - tonumber(info.heartbeat_at or 0) <= tonumber(info.lease_timeout or 15) then
      return {'CONFLICT', workers[i], workers[i + 1]}
    end
  end
end
redis.call('DEL', KEYS[1])
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[2], ARGV[2], ARGV[4]) end
redis.call('ZADD', KEYS[3], now_ms, ARGV[1])
redis.call('HSETNX', KEYS[4], 'active', ARGV[1])
redis.call('PUBLISH', ARGV[5], ARGV[1])
return {'OK'}
"""
)

# KEYS: deploy, versions
# ARGV: version ('' = the previous one: a rollback), force ('1': even one no worker registered yet),
#       channel
# Makes a version the active one, recording the one it replaces as ``previous``, in one step: two
# promotions at once each see the other's result, so ``previous`` is never a version that was not
# active just before. Announced on ``channel`` (processes caching the active version drop it).
# Returns {'OK', version, previous ('' for none)} | {'UNKNOWN'} | {'NOPREVIOUS'}
PROMOTE: Final = """
local active = redis.call('HGET', KEYS[1], 'active')
local target = ARGV[1]
if target == '' then
  target = redis.call('HGET', KEYS[1], 'previous')
  if not target or target == '' then return {'NOPREVIOUS'} end
elseif ARGV[2] ~= '1' and not redis.call('ZSCORE', KEYS[2], target) then
  return {'UNKNOWN'}
end
if active ~= target then
  redis.call('HSET', KEYS[1], 'active', target, 'previous', active or '')
  redis.call('PUBLISH', ARGV[3], target)
end
return {'OK', target, active or ''}
"""

# KEYS: a work stream
# ARGV: group, entry_id, consumer, run_id, maxlen
# Puts a run back on its work stream for another worker and acks the entry it came in, at once,
# but only while that entry is still pending for ``consumer`` (another worker may have taken it
# with XAUTOCLAIM meanwhile). Trimmed like START's XADD. Returns 1 when re-queued, else 0.
REQUEUE: Final = """
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1, ARGV[3])
if #pending == 0 then return 0 end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], '*', 'run', ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: meta
# Marks a run for cancellation. Returns {'TERMINAL', status} | {'LEASED', attempt} (its worker will
# cancel it) | {'UNLEASED', attempt} (nobody runs it: the caller finishes it with FINISH) | {'GONE'}
REQUEST_CANCEL: Final = (
    NOW
    + """
local cur = redis.call('HMGET', KEYS[1], 'attempt', 'status', 'lease_until')
if not cur[1] then return {'GONE'} end
if cur[2] == 'completed' or cur[2] == 'failed' or cur[2] == 'cancelled' then return {'TERMINAL', cur[2]} end
redis.call('HSET', KEYS[1], 'cancel_requested', '1')
if tonumber(cur[3] or '0') > now then return {'LEASED', tonumber(cur[1])} end
return {'UNLEASED', tonumber(cur[1])}
"""
)

# KEYS: the run's keys (RunKeys.all)
# ARGV: run_id, expected_attempt, status, event_type, data_json, retention_s, error_json ('' = none)
# Ends a run that no live attempt is executing (cancel of a queued or waiting run, attempts
# exhausted): takes the fence by bumping the attempt, appends the terminal event with the next
# seq, and expires the run's keys. ``parent`` is the parent run to notify ('' for none); ``lane``
# the version whose lease index may still list the run (the caller removes it there).
# Returns {'OK', attempt, seq, parent, lane} | {'CONFLICT', attempt} | {'TERMINAL', status}
#       | {'GONE'}
FINISH: Final = (
    NOW
    + """
local cur = redis.call('HMGET', KEYS[1], 'attempt', 'last_seq', 'status', 'parent', 'lane', 'version')
if not cur[1] then return {'GONE'} end
if cur[3] == 'completed' or cur[3] == 'failed' or cur[3] == 'cancelled' then return {'TERMINAL', cur[3]} end
if cur[1] ~= ARGV[2] then return {'CONFLICT', tonumber(cur[1])} end
local attempt = tonumber(cur[1]) + 1
local seq = tonumber(cur[2]) + 1
-- Built as text so the caller's data JSON passes through untouched (cjson would turn [] into {}).
-- run_id is restricted to [A-Za-z0-9_-.:] and the type is ours, so neither needs escaping.
local envelope = '{"v":1,"seq":' .. seq .. ',"type":"' .. ARGV[4] .. '","run_id":"' .. ARGV[1] ..
  '","attempt":' .. attempt .. ',"step":null,"ts":' .. string.format('%.3f', now / 1000) ..
  ',"data":' .. ARGV[5] .. '}'
redis.call('XADD', KEYS[2], '0-' .. seq, 'e', envelope)
redis.call('HSET', KEYS[1], 'attempt', attempt, 'last_seq', seq, 'status', ARGV[3], 'finished_at', now / 1000,
  'updated_at', now / 1000, 'lease_until', 0)
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[7]) end
local ms = math.floor(tonumber(ARGV[6]) * 1000)
for k = 1, #KEYS do redis.call('PEXPIRE', KEYS[k], ms) end
local lane = cur[6] or ''
if cur[5] and cur[5] ~= '' then lane = cur[5] end
return {'OK', attempt, seq, cur[4] or '', lane}
"""
)
