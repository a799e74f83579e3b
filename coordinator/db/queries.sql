-- Named queries used by coordinator.db. Each block starts with "-- name: <name>" and
-- runs as one statement with $n parameters; Python never builds SQL from values.

-- name: create_migrations_table
-- The bookkeeping table of the migrator; created under the advisory lock.
CREATE TABLE IF NOT EXISTS coordinator_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: lock_migrations
-- Session-level lock: only one migrator per database at a time. The key is "coord" in ASCII.
SELECT pg_advisory_lock(427677216612);

-- name: unlock_migrations
SELECT pg_advisory_unlock(427677216612);

-- name: migrations_table_exists
SELECT to_regclass('coordinator_migrations') IS NOT NULL;

-- name: list_applied_migrations
SELECT version, name, checksum, applied_at FROM coordinator_migrations ORDER BY version;

-- name: record_migration
INSERT INTO coordinator_migrations (version, name, checksum) VALUES ($1, $2, $3);

-- name: database_exists
SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1);

-- name: create_orchestration
INSERT INTO orchestrations (id, config, status, budgets, host, sync_mode, results, lease_s,
                            launch)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (id) DO NOTHING
RETURNING id, config, status, budgets, host, sync_mode, results, started_at, ended_at,
          updated_at, heartbeat_at AS last_seen_at, lease_s, launch;

-- name: finish_orchestration
-- The comparison column (008) is the results' comparison section, kept apart.
UPDATE orchestrations
SET status = $2, results = $3, comparison = $3::jsonb -> 'comparison', ended_at = now(),
    updated_at = now()
WHERE id = $1
RETURNING id, config, status, budgets, host, sync_mode, results, started_at, ended_at,
          updated_at, heartbeat_at AS last_seen_at, lease_s, launch;

-- name: heartbeat_orchestration
-- The coordinator running it is alive (server clock). A finished run is left alone.
UPDATE orchestrations SET heartbeat_at = now()
WHERE id = $1 AND status = 'running';

-- name: reopen_orchestration
-- `coordinator resume` takes the run over, atomically: only when no live coordinator owns
-- it (it ended, or it is lost: running with its lease expired on the server's clock).
UPDATE orchestrations
SET status = 'running', host = $2, lease_s = $3, ended_at = NULL, heartbeat_at = now(),
    updated_at = now()
WHERE id = $1
  AND NOT (status = 'running' AND heartbeat_at >= now() - make_interval(secs => lease_s))
RETURNING id, config, status, budgets, host, sync_mode, results, started_at, ended_at,
          updated_at, heartbeat_at AS last_seen_at, lease_s, launch;

-- name: get_orchestration
SELECT id, config, status, budgets, host, sync_mode, results, started_at, ended_at, updated_at,
       last_seen_at, lease_s, launch
FROM orchestrations_seen
WHERE id = $1;

-- name: list_orchestrations
SELECT id, config, status, budgets, host, sync_mode, results, started_at, ended_at, updated_at,
       last_seen_at, lease_s, launch
FROM orchestrations_seen
ORDER BY started_at DESC, id DESC
LIMIT $1;

-- name: latest_orchestration_id
SELECT id FROM orchestrations ORDER BY started_at DESC, id DESC LIMIT 1;

-- name: upsert_instances
-- One statement for the whole batch: $n are parallel arrays, one element per instance
-- (keys must be unique within a batch). Each row is a full snapshot and replaces every field.
INSERT INTO instances (
    orchestration_id, name, session_id, status, pid, host,
    input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, total_tokens,
    cost_usd, tool_calls, turns, progress_pct, exit_code, error, reason,
    started_at, ended_at, wait_s, attempts, carry, measures, updated_at
)
SELECT u.*, now()
FROM unnest(
    $1::text[], $2::text[], $3::uuid[], $4::text[], $5::integer[], $6::text[],
    $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[],
    $12::double precision[], $13::jsonb[], $14::integer[], $15::double precision[],
    $16::integer[], $17::text[], $18::text[],
    $19::timestamptz[], $20::timestamptz[], $21::double precision[],
    $22::integer[], $23::jsonb[], $24::jsonb[]
) AS u
ON CONFLICT (orchestration_id, name) DO UPDATE SET
    session_id = EXCLUDED.session_id,
    status = EXCLUDED.status,
    pid = EXCLUDED.pid,
    host = EXCLUDED.host,
    input_tokens = EXCLUDED.input_tokens,
    output_tokens = EXCLUDED.output_tokens,
    cache_read_tokens = EXCLUDED.cache_read_tokens,
    cache_creation_tokens = EXCLUDED.cache_creation_tokens,
    total_tokens = EXCLUDED.total_tokens,
    cost_usd = EXCLUDED.cost_usd,
    tool_calls = EXCLUDED.tool_calls,
    turns = EXCLUDED.turns,
    progress_pct = EXCLUDED.progress_pct,
    exit_code = EXCLUDED.exit_code,
    error = EXCLUDED.error,
    reason = EXCLUDED.reason,
    started_at = EXCLUDED.started_at,
    ended_at = EXCLUDED.ended_at,
    wait_s = EXCLUDED.wait_s,
    attempts = EXCLUDED.attempts,
    carry = EXCLUDED.carry,
    measures = EXCLUDED.measures,
    updated_at = now();

-- name: list_instances
SELECT orchestration_id, name, session_id, status, pid, host,
       input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, total_tokens,
       cost_usd, tool_calls, turns, progress_pct, exit_code, error, reason,
       started_at, ended_at, wait_s, attempts, carry, measures, updated_at
FROM instances
WHERE orchestration_id = $1
ORDER BY name;

-- name: claimed_instances
-- Which of these instances still carry claim epoch $3 (the rows of a fleet runner's claim,
-- e.g. from its journal, are written only then); locked until the write commits, so no
-- take-over slips in between the check and the write.
SELECT name FROM instances
WHERE orchestration_id = $1 AND name = ANY($2::text[]) AND claim_epoch = $3
FOR UPDATE;

-- name: add_checkpoints
-- One statement for the whole batch: $n are parallel arrays, one element per checkpoint.
-- Inserted in array order (ids follow it); a milestone already stored is left alone.
INSERT INTO scenario_orchestration_checkpoints (
    orchestration_id, scenario_id, milestone_name, progress_pct, timestamp_unix,
    state_snapshot, metrics
)
SELECT orchestration_id, scenario_id, milestone_name, progress_pct, timestamp_unix,
       state_snapshot, metrics
FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::double precision[], $5::bigint[],
    $6::jsonb[], $7::jsonb[]
) WITH ORDINALITY AS u (
    orchestration_id, scenario_id, milestone_name, progress_pct, timestamp_unix,
    state_snapshot, metrics, position
)
ORDER BY position
ON CONFLICT ON CONSTRAINT scenario_orchestration_checkpoints_milestone_key DO NOTHING;

-- name: list_checkpoints
SELECT orchestration_id, scenario_id, milestone_name, progress_pct, timestamp_unix,
       state_snapshot, metrics, created_at
FROM scenario_orchestration_checkpoints
WHERE orchestration_id = $1
ORDER BY timestamp_unix, scenario_id, id;

-- name: list_scenario_checkpoints
SELECT orchestration_id, scenario_id, milestone_name, progress_pct, timestamp_unix,
       state_snapshot, metrics, created_at
FROM scenario_orchestration_checkpoints
WHERE orchestration_id = $1 AND scenario_id = $2
ORDER BY timestamp_unix, scenario_id, id;

-- name: latest_progress
SELECT orchestration_id, scenario_id, milestone_name, progress_pct, timestamp_unix,
       metrics, created_at
FROM scenario_latest_progress
WHERE orchestration_id = $1
ORDER BY scenario_id;
