"""The Redis key schema: every key Outlast writes is built here, and only here.

Every key that belongs to one run carries the hash tag ``{<run_id>}`` so that all of them
live in one Redis Cluster slot and a Lua script may touch them together. The global control keys
that one script touches together (REGISTER, PROMOTE) share the tag ``{outlast:deploy}``: the whole
name of ``outlast:deploy``, which has no braces and so hashes by its whole name into the same slot.
Other global keys (work streams, lease indexes, run indexes, timers) each live in a slot of their
own; no script touches two of them (in cluster mode a start writes them after the run's own script,
see :mod:`outlast.store.queue`).

Per-run keys (writer: the run's current attempt through the Lua scripts in
:mod:`outlast.store.scripts`; lifetime: until ``retention`` seconds after the run ends,
then they expire together):

``outlast:run:{ID}:meta``     hash    run record: workflow, input, status, attempt (the
                                      fencing token), version, timestamps, result/error,
                                      last_seq, latest progress and status message.
``outlast:run:{ID}:events``   stream  the event log; entry id ``0-<seq>``, one field ``e``
                                      holding the JSON envelope. Optionally capped.
``outlast:run:{ID}:steps``    hash    checkpoints: ``<position>`` → JSON checkpoint of a
                                      completed step; ``e:<position>:<n>`` → ``1`` for each
                                      status/progress/object/custom/log event already
                                      emitted (so a replay does not emit it again).
``outlast:run:{ID}:objects``  hash    current value of each published object, as JSON.
``outlast:run:{ID}:waits``    hash    pending waits (input, sleep, child): ``<position>`` → JSON
                                      wait record (kind, key, schema, prompt, deadline, child).
                                      Written by the attempt that registers the wait (APPEND op
                                      ``W``); removed by the RESOLVE script that settles it.
``outlast:run:{ID}:children`` set     run ids of the child runs this run started. Writer: the
                                      child's start (RunQueue.enqueue of a run with a ``parent``).
                                      Read when the run is cancelled, to cancel its children.

``outlast:run:{ID}:otel``     set     keys of the run's spans already exported to OpenTelemetry
                                      (``run``, ``a:<n>``, ``s:<n>:<step>``, ``w:<step>``), so
                                      a span rebuilt by several processes goes out once. Writer:
                                      :mod:`outlast.observe.otel` (SADD), only when export is on.
                                      Lifetime: ``retention`` after the last export.

The meta hash also holds the run's lease (``lease_owner``, ``lease_until`` in server ms): the
authoritative record of which worker executes the current attempt.

Compute-plane keys (global, one per deployment version where named so):

``outlast:work:<version>``       stream  dispatch queue: one entry ``{run: ID}`` per start or
                                         hand-off; consumer group ``workers``. Writer: start,
                                         release; entries are acked once a worker holds the run.
                                         Trimmed to ~100k entries.
``outlast:work:<version>/<i>``   stream  partition ``i`` (1..N-1) of the version's queue, when it has N > 1
                                         partitions (``OUTLAST_QUEUE_PARTITIONS``); the same
                                         entries, group and trimming as partition 0, which is
                                         ``outlast:work:<version>`` itself. Writer: start (a
                                         fairness key's partition is the key's hash mod N, else
                                         round-robin), the fair pump. Read by every worker of the
                                         version (all partitions up to the most ever used).
``outlast:partitions``           hash    version (or ``@any``) → ``"<n> <max>"``: the partitions
                                         new starts use (the last registering worker's setting)
                                         and the most ever used (workers read all of those).
                                         Writer: workers at start-up (SET_PARTITIONS). Permanent.

Fair queues (:mod:`outlast.store.fair`): per work-stream partition ``S`` (its full key name is
the hash tag, so these share the stream's slot and one script moves runs between them).
Writers: the fair scripts only (:mod:`outlast.store.fair_scripts`). Lifetime: a list or zset
goes when emptied; the hashes stay (a few bytes per key ever capped or weighted).

``outlast:fair:{S}:q:<key>``     list    run ids of fairness key ``key`` waiting for the pump
                                         (pushed at start, popped onto ``S`` by the pump).
``outlast:fair:{S}:ring``        list    fairness keys with waiting runs and room under their
                                         cap, in round-robin order (a key is listed at most once).
``outlast:fair:{S}:parked``      set     keys with waiting runs that are at their cap; back to
                                         the ring when one of their runs is released.
``outlast:fair:{S}:run:<key>``   zset    run id → pumped ms: runs of a capped key pumped and not
                                         yet released (ended). Released by the worker that ends
                                         the run, or by any worker that finds it ended (reaper).
``outlast:fair:{S}:limits``      hash    ``c:<key>`` → max_concurrency, ``w:<key>`` → weight (runs
                                         per turn). Writer: start (given), ``set_fairness``.
``outlast:fair:{S}:credit``      hash    key → runs left of its current turn (a pump that ran out
                                         of room mid-turn); cleared when the turn resumes.
``outlast:fair:{S}:bell``        string  set while a bell entry (``{run: "", bell: 1}``) that
                                         wakes workers is on ``S`` and not yet pumped: at most one
                                         bell per partition at a time. PX 10 s (self-healing).

``outlast:leases:<version>``     zset    index of leased runs → lease expiry (server ms), scanned
                                         for takeovers. Advisory: the meta hash decides. Writer:
                                         workers. Members removed when the run ends (by its
                                         worker, or by whoever FINISHes it); entries of ended
                                         runs found expired are pruned by ``deploy status``.
``outlast:{outlast:deploy}:workers``  hash  worker id → JSON (host, pid, version, running,
                                         heartbeat, lease timeout, workflows and their digest). Writer: each
                                         worker, every heartbeat (first by REGISTER, which refuses
                                         a worker whose workflows differ from a live one's of its
                                         version); entries not renewed for the worker's lease
                                         timeout are pruned by readers.
``outlast:{outlast:deploy}:workflows:<version>``  hash  workflow name → JSON (description,
                                         input/output schema). Writer: workers at start-up
                                         (REGISTER replaces the whole hash, so names no code has
                                         any more go). Lifetime: permanent.
``outlast:{outlast:deploy}:versions``  zset  version → last time a worker of it registered (ms).
                                         (These three were ``outlast:workers``, ``outlast:versions``
                                         and ``outlast:workflows:<version>`` before cluster support;
                                         workers rebuild them when they start.)
``outlast:deploy``               hash    ``active`` → version new runs go to; ``previous`` → the
                                         one ``rollback`` returns to. Writer: ``outlast deploy``.
``outlast:runs``                 zset    run id → created ms: the run index for listing.
                                         Writer: start (on a cluster its first write, and again
                                         in its last step). Pruned by API listings (ZREM of ids
                                         whose run expired, older than a minute) and by the start
                                         sweeper (ids without a run, once past its grace).
``outlast:runs:tenant:<tenant>`` zset    the same, for one tenant's runs only (runs started
                                         with a tenant, and their children): a tenant's
                                         listing never reads another tenant's entries.
                                         Writer: start, with ``outlast:runs`` (same steps).
                                         Pruned with it by API listings.
``outlast:sweep:starts``         string  the start sweeper's cursor (cluster mode): the created
                                         ms up to which the run index was checked for half-started
                                         runs. Writer: the worker holding ``outlast:sweep:lock``
                                         (:mod:`outlast.worker.sweep`). Permanent.
``outlast:sweep:lock``           string  the worker id sweeping starts now: SET NX PX one
                                         heartbeat, tried by every worker's beat (leader-free, one
                                         sweeper at a time); left to expire.
``outlast:idem:{<workflow>}:<key>`` string  run id started for an idempotency key. TTL 24 h.
``outlast:chat:{<workflow>}:<scope>:<chat_id>``  string  the run answering the latest message of a
                                         chat (the AI SDK chat endpoints; ``scope`` is ``t<len>:<tenant>``,
                                         empty in open mode). Writer: ``POST /v1/chat/<workflow>``
                                         through one Lua script that only moves it to a newer
                                         (time-ordered) run id. TTL: the API's retention (7 days).
``outlast:cancel``               pubsub  channel: run ids whose cancellation was requested.
``outlast:settled``              pubsub  channel: run ids one of whose waits was settled while an
                                         attempt was live (RESOLVE answered LIVE). Its worker
                                         reads the settled waits at once instead of at its next
                                         poll. Writer: whoever settled (API, CLI, timer scan, a
                                         child's worker). A lost message costs only that poll.
``outlast:deploy:changed``       pubsub  channel: the active version moved (promote, rollback) or a
                                         worker registered its workflows; processes caching
                                         either drop their copy.
``outlast:timers``               zset    ``<run_id>|<position>`` → due time (server ms): a wait's
                                         deadline, a child wait's next poll, or a re-dispatch
                                         guard (``<run_id>|kick``). Armed before the wait is
                                         recorded; scanned by every worker (leader-free: settling
                                         is an idempotent RESOLVE on the run's slot); a member
                                         goes once it fired, or when the input it times out
                                         arrives. Stale members (a settled child's poll) are
                                         harmless: when due they settle nothing and go.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from outlast.errors import ConfigError

PREFIX = "outlast"


@dataclass(frozen=True, slots=True)
class RunKeys:
    """The keys of one run, in the order the Lua scripts expect them."""

    meta: str
    events: str
    steps: str
    objects: str
    waits: str
    children: str

    def all(self) -> list[str]:
        """Every key of the run: the scripts that expire a finished run expire all of these."""
        return [self.meta, self.events, self.steps, self.objects, self.waits, self.children]


def exported_spans(run_id: str) -> str:
    """The run's set of exported span keys (not in :class:`RunKeys`: no script touches it)."""
    return f"{PREFIX}:run:{{{run_id}}}:otel"


def work_stream(version: str) -> str:
    return f"{PREFIX}:work:{version}"


def work_partition(version: str, partition: int) -> str:
    """Partition ``partition`` of a version's queue (0 is :func:`work_stream` itself)."""
    return work_stream(version) if partition == 0 else f"{PREFIX}:work:{version}/{partition}"


def _fair(stream: str) -> str:
    return f"{PREFIX}:fair:{{{stream}}}"


def fair_waiting(stream: str, key: str) -> str:
    """Runs of fairness key ``key`` waiting in partition ``stream`` (see the module docstring)."""
    return f"{_fair(stream)}:q:{key}"


def fair_running(stream: str, key: str) -> str:
    """Pumped, unreleased runs of capped fairness key ``key`` in partition ``stream``."""
    return f"{_fair(stream)}:run:{key}"


def fair_keys(stream: str) -> list[str]:
    """The partition's fixed fair keys, in the fair scripts' order: ring, parked, limits, credit,
    bell (the per-key lists and zsets are named by the scripts from ARGV prefixes)."""
    base = _fair(stream)
    return [f"{base}:ring", f"{base}:parked", f"{base}:limits", f"{base}:credit", f"{base}:bell"]


def lease_index(version: str) -> str:
    return f"{PREFIX}:leases:{version}"


DEPLOY = f"{PREFIX}:deploy"
#: The hash tag of the control keys REGISTER and PROMOTE touch with ``outlast:deploy`` (one slot).
_CONTROL = f"{PREFIX}:{{{DEPLOY}}}"


def workflows_key(version: str) -> str:
    return f"{_CONTROL}:workflows:{version}"


WORKERS = f"{_CONTROL}:workers"
VERSIONS = f"{_CONTROL}:versions"
RUNS_INDEX = f"{PREFIX}:runs"
CANCEL_CHANNEL = f"{PREFIX}:cancel"
SETTLED_CHANNEL = f"{PREFIX}:settled"
DEPLOY_CHANNEL = f"{PREFIX}:deploy:changed"
TIMERS = f"{PREFIX}:timers"
PARTITIONS = f"{PREFIX}:partitions"
SWEEP_STARTS = f"{PREFIX}:sweep:starts"
SWEEP_LOCK = f"{PREFIX}:sweep:lock"
WORK_GROUP = "workers"
#: The pseudo-version of upgrade-safe runs: a worker of any version may execute them.
ANY_VERSION = "@any"
#: A deployment version's name (it is part of keys and URLs): what the API's ``version`` allows.
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


def check_version(version: str) -> str:
    """``version`` if it is a usable version name, else ConfigError saying what is allowed."""
    if version.startswith("@"):
        raise ConfigError(f"version {version!r}: versions starting with '@' are reserved")
    if not VERSION_PATTERN.match(version):
        raise ConfigError(f"version {version!r}: use 1-128 letters, digits, '_', '.', ':' or '-'")
    return version


def tenant_runs_index(tenant: str) -> str:
    """The run index of one tenant (``tenant`` is non-empty: the global index serves open mode)."""
    return f"{RUNS_INDEX}:tenant:{tenant}"


def idempotency_key(workflow: str, key: str) -> str:
    return f"{PREFIX}:idem:{{{workflow}}}:{key}"


def chat_key(workflow: str, scope: str, chat_id: str) -> str:
    """The chat's current run (see the module docstring): hash-tagged by workflow like idem keys."""
    return f"{PREFIX}:chat:{{{workflow}}}:{scope}:{chat_id}"


def run_keys(run_id: str) -> RunKeys:
    tag = f"{PREFIX}:run:{{{run_id}}}"
    return RunKeys(
        meta=f"{tag}:meta",
        events=f"{tag}:events",
        steps=f"{tag}:steps",
        objects=f"{tag}:objects",
        waits=f"{tag}:waits",
        children=f"{tag}:children",
    )


# --- LLM rate limits and circuit breakers (outlast.llm.limits, outlast.llm.breaker) ---------------
# Shared by every worker of the fleet. The three keys of one provider+model share the hash tag
# ``{llm:<provider>:<model>}`` so the limiter's single Lua script may touch them in Redis Cluster.
# Writers: only the Lua scripts in outlast.llm.limits / outlast.llm.breaker.


def _llm_tag(provider: str, model: str) -> str:
    return f"{PREFIX}:llm:{{llm:{provider}:{model}}}"


def llm_window_key(provider: str, model: str) -> str:
    """zset ``grant id → admit time (ms)``: the sliding window of admitted calls.

    Writer: RateLimiter acquire (adds; prunes entries older than the window). Lifetime: PEXPIRE
    window + 1 s after the last admit, so it vanishes once idle.
    """
    return f"{_llm_tag(provider, model)}:window"


def llm_cost_key(provider: str, model: str) -> str:
    """hash ``r:<id>`` / ``t:<id>`` → requests / tokens of each windowed grant, ``R`` / ``T`` totals.

    Writer: RateLimiter acquire (adds, prunes with the window) and settle (corrects ``t:<id>``).
    Lifetime: same as the window key.
    """
    return f"{_llm_tag(provider, model)}:cost"


def llm_concurrency_key(provider: str, model: str) -> str:
    """zset ``grant id → lease expiry (ms)``: live concurrency leases.

    Writer: RateLimiter acquire (adds; reaps expired), release (removes), renew (extends).
    Lifetime: PEXPIRE 1 s past the latest lease expiry.
    """
    return f"{_llm_tag(provider, model)}:leases"


def llm_breaker_key(provider: str) -> str:
    """hash: circuit breaker state of one provider (state, counters, opened_until, probes, buckets).

    Writer: CircuitBreaker scripts (allow / record_success / record_failure). Lifetime: PEXPIRE
    after each write to max(window, cooldown, probe timeout) + 60 s, so idle breakers vanish closed.
    """
    return f"{PREFIX}:llm:breaker:{{llmbreaker:{provider}}}"
