-- The fleet's statements (tables: sql/010_runners.sql; the queue is pgqueuer's own).
-- Every value is a $n parameter; nothing is ever formatted into these strings.

-- name: lock_queue_install
-- Two hosts installing pgqueuer's schema at once: one waits for the other.
SELECT pg_advisory_lock(hashtext('coordinator.fleet.queue-install'));

-- name: unlock_queue_install
SELECT pg_advisory_unlock(hashtext('coordinator.fleet.queue-install'));

-- name: register_runner
INSERT INTO runners (id, name, host, pid, capacity, labels, lease_s)
VALUES ($1, $2, $3, $4, $5, $6, $7);

-- name: heartbeat_runner
UPDATE runners SET heartbeat_at = now(), state = $2
WHERE id = $1;

-- name: stop_runner
UPDATE runners SET state = 'stopped', stopped_at = now(), heartbeat_at = now()
WHERE id = $1;

-- name: claim_instance
-- The fence: every claim (first or take-over) moves the epoch on, under the row lock, so a
-- write of the previous holder (fenced_update_instances below) either lands before it or not at all.
UPDATE instances
SET claim_epoch = claim_epoch + 1, runner = $3, updated_at = now()
WHERE orchestration_id = $1 AND name = $2
RETURNING orchestration_id, name, session_id, status, pid, host,
          input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, total_tokens,
          cost_usd, tool_calls, turns, progress_pct, exit_code, error, reason,
          started_at, ended_at, wait_s, attempts, carry, updated_at, claim_epoch;

-- name: fenced_update_instances
-- The instance rows of every engine of one runner, in one statement ($1..$24 as in
-- upsert_instances, one element per instance, keys unique): each row is written only while
-- its instance still carries the epoch of this runner's claim ($25). A take-over moves the
-- epoch; an UPDATE that meets a row changed meanwhile waits for that commit and re-checks
-- the epoch, so a fenced-out copy's write lands before the take-over or not at all.
-- Returns the rows written (kind 'row').
-- It also watches shared budgets ($26..$31, one element per budget: run, key, covers every
-- instance of the run, in tokens, cache reads counted, limit; $32/$33: the instances of the
-- budgets not covering the whole run, by their index in $26, 1-based): a watched budget of
-- a run this statement wrote to whose rows now add up to more than its limit is NOTIFYed on
-- $34 ("<run>\t<key>\t<used>", coordinator/fleet/budgets.py alarm_payload) and returned
-- (kind 'crossed'). The notification goes out at commit: the moment the crossing is visible,
-- every runner hears it, without waiting for any runner's poll.
WITH w AS (
UPDATE instances i SET
    session_id = u.session_id,
    status = u.status,
    pid = u.pid,
    host = u.host,
    input_tokens = u.input_tokens,
    output_tokens = u.output_tokens,
    cache_read_tokens = u.cache_read_tokens,
    cache_creation_tokens = u.cache_creation_tokens,
    total_tokens = u.total_tokens,
    cost_usd = u.cost_usd,
    tool_calls = u.tool_calls,
    turns = u.turns,
    progress_pct = u.progress_pct,
    exit_code = u.exit_code,
    error = u.error,
    reason = u.reason,
    started_at = u.started_at,
    ended_at = u.ended_at,
    wait_s = u.wait_s,
    attempts = u.attempts,
    carry = u.carry,
    measures = u.measures,
    updated_at = now()
FROM unnest(
    $1::text[], $2::text[], $3::uuid[], $4::text[], $5::integer[], $6::text[],
    $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[],
    $12::double precision[], $13::jsonb[], $14::integer[], $15::double precision[],
    $16::integer[], $17::text[], $18::text[],
    $19::timestamptz[], $20::timestamptz[], $21::double precision[],
    $22::integer[], $23::jsonb[], $24::jsonb[], $25::integer[]
) AS u(
    orchestration_id, name, session_id, status, pid, host,
    input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, total_tokens,
    cost_usd, tool_calls, turns, progress_pct, exit_code,
    error, reason, started_at, ended_at, wait_s, attempts, carry, measures, epoch
)
WHERE i.orchestration_id = u.orchestration_id AND i.name = u.name
  AND i.claim_epoch = u.epoch
RETURNING i.orchestration_id, i.name,
          i.input_tokens + i.output_tokens + i.cache_read_tokens + i.cache_creation_tokens
              AS tokens,
          i.cache_read_tokens AS cache_read, i.cost_usd
),
watch AS (
    SELECT * FROM unnest($26::text[], $27::text[], $28::boolean[], $29::boolean[],
                         $30::boolean[], $31::double precision[])
        WITH ORDINALITY AS b(run, key, whole_run, in_tokens, cache_reads, lim, idx)
    WHERE b.run IN (SELECT orchestration_id FROM w)
),
-- the rows as they are now: those written here, and the others as committed (the
-- statement's snapshot does not show its own writes)
now_rows AS (
    SELECT orchestration_id, name, tokens, cache_read, cost_usd FROM w
    UNION ALL
    SELECT i.orchestration_id, i.name,
           i.input_tokens + i.output_tokens + i.cache_read_tokens + i.cache_creation_tokens,
           i.cache_read_tokens, i.cost_usd
    FROM instances i
    WHERE i.orchestration_id IN (SELECT run FROM watch)
      AND NOT EXISTS (SELECT 1 FROM w
                      WHERE w.orchestration_id = i.orchestration_id AND w.name = i.name)
),
used AS (
    SELECT b.run, b.key, b.lim,
           CASE WHEN b.in_tokens
                THEN sum(r.tokens - CASE WHEN b.cache_reads THEN 0 ELSE r.cache_read END)
                     ::double precision
                ELSE sum(r.cost_usd) END AS used
    FROM watch b
    JOIN now_rows r ON r.orchestration_id = b.run
    WHERE b.whole_run
       OR EXISTS (SELECT 1 FROM unnest($32::bigint[], $33::text[]) AS m(idx, name)
                  WHERE m.idx = b.idx AND m.name = r.name)
    GROUP BY b.run, b.key, b.lim, b.in_tokens
)
SELECT 'row' AS kind, orchestration_id, name FROM w
UNION ALL
SELECT 'crossed', u.run, u.key
FROM used u, LATERAL (SELECT pg_notify($34, u.run || E'\t' || u.key || E'\t' || u.used)) n
WHERE u.used > u.lim;

-- name: epochs_of
SELECT i.orchestration_id, i.name, i.claim_epoch, i.runner
FROM instances i
JOIN unnest($1::text[], $2::text[]) AS h(orchestration_id, name)
  ON i.orchestration_id = h.orchestration_id AND i.name = h.name;

-- name: start_orchestration
-- The first claim of a submitted run: it runs now (runners keep its heartbeat).
UPDATE orchestrations SET status = 'running', heartbeat_at = now(), updated_at = now()
WHERE id = $1 AND status = 'queued';

-- name: finish_open_orchestration
-- Every instance ended: the run's status and results, once (the first finisher wins).
-- The comparison column (008) is the results' comparison section, as a one-host run keeps it.
UPDATE orchestrations
SET status = $2, results = $3, comparison = $3::jsonb -> 'comparison', ended_at = now(),
    updated_at = now()
WHERE id = $1 AND status IN ('queued', 'running')
RETURNING id;

-- name: runners_of
-- The runners that hold or held an instance of an orchestration, with what they hold now.
SELECT r.id, r.name, r.host, r.pid, r.capacity, r.labels, r.state, r.lease_s,
       r.started_at, r.heartbeat_at,
       EXTRACT(EPOCH FROM (now() - r.heartbeat_at))::double precision AS heartbeat_age_s,
       (r.state <> 'stopped' AND r.heartbeat_at < now() - make_interval(secs => r.lease_s))
           AS lost,
       ARRAY(
           SELECT i.name FROM instances i
           WHERE i.orchestration_id = $1 AND i.runner = r.id
             AND i.status IN ('pending', 'starting', 'running', 'waiting', 'paused', 'retrying',
                              'rate_limited')
           ORDER BY i.name
       ) AS held
FROM runners r
WHERE r.id IN (SELECT runner FROM instances WHERE orchestration_id = $1 AND runner IS NOT NULL)
ORDER BY r.started_at, r.name;

-- name: open_instances
-- How many instances of a run have not ended (statuses in $2), and whether the run is
-- still open: the cheap check before building its results.
SELECT count(*) FILTER (WHERE i.status = ANY($2::text[])) AS open,
       bool_or(o.status IN ('queued', 'running')) AS run_open
FROM orchestrations o
LEFT JOIN instances i ON i.orchestration_id = o.id
WHERE o.id = $1;

-- name: mark_fleet
-- A run whose instances runners claim: 'submitted' (the label queues) or 'hosted'
-- (`run --fleet`: queues of its own, $3).
UPDATE orchestrations SET fleet = $2, fleet_entrypoints = $3
WHERE id = $1;

-- name: hosted_runs
-- Open `run --fleet` runs and their queues: runners with the labels join them.
SELECT id, fleet_entrypoints
FROM orchestrations
WHERE fleet = 'hosted' AND status IN ('queued', 'running');

-- name: fleet_kind
SELECT fleet FROM orchestrations WHERE id = $1;

-- name: live_runners
-- Runners whose lease is current (any run: a runner serves every run it can).
SELECT count(*)
FROM runners
WHERE state <> 'stopped' AND heartbeat_at >= now() - make_interval(secs => lease_s);

-- name: open_fleet_commands
-- Control commands nobody took yet, of open runs whose instances runners hold.
SELECT c.id, c.orchestration_id, c.verb, c.instances, c.requested_by, c.requested_at,
       c.taken_at, c.acked_at, c.outcome, c.error, c.withdrawn_at
FROM control_commands c
JOIN orchestrations o ON o.id = c.orchestration_id
WHERE o.fleet IS NOT NULL AND o.status IN ('queued', 'running')
  AND c.taken_at IS NULL AND c.acked_at IS NULL AND c.withdrawn_at IS NULL
ORDER BY c.id;

-- name: command_targets
-- The instances a command names ($2; empty: every one) as the runner taking it sees them.
SELECT i.name, i.status, i.runner
FROM instances i
WHERE i.orchestration_id = $1 AND (cardinality($2::text[]) = 0 OR i.name = ANY($2::text[]))
ORDER BY i.name;

-- name: set_wants
-- The command's verb becomes the latest want of each instance it reaches.
INSERT INTO fleet_wants (orchestration_id, name, command_id, verb, reason)
SELECT $1, n, $2, $3, $4 FROM unnest($5::text[]) AS n
ON CONFLICT (orchestration_id, name) DO UPDATE
SET command_id = EXCLUDED.command_id, verb = EXCLUDED.verb, reason = EXCLUDED.reason,
    set_at = now(), applied_by = NULL, applied_at = NULL, outcome = NULL;

-- name: stop_unclaimed
-- Instances no runner has claimed end here, under the row lock: a claim that came first
-- keeps its instance (it is answered by its holder), one that comes later finds it ended.
UPDATE instances
SET status = 'cancelled', reason = $3, ended_at = now(), updated_at = now()
WHERE orchestration_id = $1 AND name = ANY($2::text[]) AND runner IS NULL
  AND status IN ('pending', 'paused')
RETURNING name;

-- name: pause_unclaimed
UPDATE instances SET status = 'paused', updated_at = now()
WHERE orchestration_id = $1 AND name = ANY($2::text[]) AND runner IS NULL
  AND status = 'pending'
RETURNING name;

-- name: unpause_unclaimed
UPDATE instances SET status = 'pending', updated_at = now()
WHERE orchestration_id = $1 AND name = ANY($2::text[]) AND runner IS NULL
  AND status = 'paused'
RETURNING name;

-- name: wants_of
-- The latest want of each held instance (its runner applies the ones it has not yet).
SELECT w.orchestration_id, w.name, w.command_id, w.verb, w.reason
FROM fleet_wants w
JOIN unnest($1::text[], $2::text[]) AS h(orchestration_id, name)
  ON w.orchestration_id = h.orchestration_id AND w.name = h.name;

-- name: record_applied
UPDATE fleet_wants SET applied_by = $4, applied_at = now(), outcome = $5
WHERE orchestration_id = $1 AND name = $2 AND command_id = $3;

-- name: answers
-- What the holders did with a command so far.
SELECT name, outcome FROM fleet_wants
WHERE orchestration_id = $1 AND command_id = $2 AND outcome IS NOT NULL;

-- name: budget_use
-- What shared budgets need of a run, sums only (a runner reads this every budget poll):
-- the whole run's ('all'), each budgeted command's ('command': $2 names, $3 their
-- commands) and the rows of the instances this runner hosts ('own': $4), whose engines
-- count them live.
SELECT 'all' AS kind, NULL::text AS key,
       coalesce(sum(input_tokens + output_tokens + cache_read_tokens
                    + cache_creation_tokens), 0)::bigint AS tokens,
       coalesce(sum(cache_read_tokens), 0)::bigint AS cache_read,
       coalesce(sum(cost_usd), 0)::double precision AS cost_usd
FROM instances WHERE orchestration_id = $1
UNION ALL
SELECT 'command', g.command,
       sum(i.input_tokens + i.output_tokens + i.cache_read_tokens
           + i.cache_creation_tokens)::bigint,
       sum(i.cache_read_tokens)::bigint,
       sum(i.cost_usd)::double precision
FROM instances i
JOIN unnest($2::text[], $3::text[]) AS g(name, command) ON i.name = g.name
WHERE i.orchestration_id = $1
GROUP BY g.command
UNION ALL
SELECT 'own', name,
       (input_tokens + output_tokens + cache_read_tokens + cache_creation_tokens)::bigint,
       cache_read_tokens::bigint, cost_usd::double precision
FROM instances WHERE orchestration_id = $1 AND name = ANY($4::text[]);

-- name: budget_alarm
-- A shared budget seen exceeded: every runner LISTENing on $1 hears it at once
-- (coordinator/fleet/alarm.py); $2 is "<orchestration id>\t<budget key>".
SELECT pg_notify($1, $2);
