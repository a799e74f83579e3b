-- The Postgres barrier's statements (tables: sql/002_barrier.sql, sql/003_sync.sql).
-- Every value is a $n parameter; nothing is ever formatted into these strings.

-- name: declare
-- First writer wins: the participants, timeout and lease of an orchestration's barrier.
INSERT INTO barrier_orchestrations (orchestration_id, mode, participants, timeout_s, lease_s)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (orchestration_id) DO NOTHING;

-- name: get_declared
SELECT mode, participants, timeout_s, lease_s
FROM barrier_orchestrations WHERE orchestration_id = $1;

-- name: register
-- The participants a process hosts; registering again refreshes the heartbeat only (an
-- ended participant stays ended; one a take-over rejoins is rejoined, never registered).
INSERT INTO barrier_participants (orchestration_id, name, host)
SELECT $1, n, $3 FROM unnest($2::text[]) AS n
ON CONFLICT (orchestration_id, name) DO UPDATE SET seen_at = now()
WHERE barrier_participants.state = 'active';

-- name: heartbeat
UPDATE barrier_participants SET seen_at = now()
WHERE orchestration_id = $1 AND host = $2 AND state = 'active';

-- name: end
-- completed / left are final: the first end wins, a repeat changes nothing. A participant
-- a take-over rejoins is ended only by its current holder (the host that rejoined it).
INSERT INTO barrier_participants (orchestration_id, name, state, reason, host, ended_at)
VALUES ($1, $2, $3, $4, $5, now())
ON CONFLICT (orchestration_id, name) DO UPDATE
SET state = EXCLUDED.state, reason = EXCLUDED.reason, ended_at = EXCLUDED.ended_at
WHERE barrier_participants.state = 'active'
  AND (NOT barrier_participants.rejoins OR barrier_participants.host = EXCLUDED.host);

-- name: rejoin
-- A claimed instance (first claim or take-over) joins as a live participant hosted here:
-- active again unless it completed (it has passed every point), its arrivals kept. Returns
-- the state it has now.
INSERT INTO barrier_participants (orchestration_id, name, host, rejoins)
VALUES ($1, $2, $3, true)
ON CONFLICT (orchestration_id, name) DO UPDATE
SET state = 'active', reason = NULL, ended_at = NULL, host = EXCLUDED.host,
    seen_at = now(), rejoins = true
WHERE barrier_participants.state <> 'completed'
RETURNING state;

-- name: expire
-- Participants whose process stopped sending heartbeats for longer than the lease leave.
-- Run inside every decision, so a crashed process costs the others one lease, not the
-- whole timeout. Returns who was expired.
UPDATE barrier_participants bp
SET state = 'left',
    reason = 'no heartbeat for ' || o.lease_s || 's (its process is gone)',
    ended_at = now()
FROM barrier_orchestrations o
WHERE bp.orchestration_id = $1
  AND o.orchestration_id = bp.orchestration_id
  AND bp.state = 'active'
  AND NOT bp.rejoins
  AND bp.seen_at < clock_timestamp() - make_interval(secs => o.lease_s)
RETURNING bp.name;

-- name: open_points
SELECT p.point FROM barrier_points p
WHERE p.orchestration_id = $1
  AND NOT EXISTS (
      SELECT 1 FROM barrier_releases r
      WHERE r.orchestration_id = p.orchestration_id AND r.point = p.point)
ORDER BY p.point;

-- name: create_and_lock_point
-- The first arrival creates the point; every arrival locks it (DO UPDATE takes the row
-- lock like FOR UPDATE, waiting for a concurrent decider). The dummy SET keeps
-- first_arrival_at.
INSERT INTO barrier_points (orchestration_id, point) VALUES ($1, $2)
ON CONFLICT (orchestration_id, point)
DO UPDATE SET first_arrival_at = barrier_points.first_arrival_at
RETURNING true;

-- name: lock_point
SELECT true FROM barrier_points WHERE orchestration_id = $1 AND point = $2 FOR UPDATE;

-- name: get_release
SELECT timed_out, missing FROM barrier_releases WHERE orchestration_id = $1 AND point = $2;

-- name: point_state
-- Run AFTER the point is locked, as a statement of its own: its snapshot then includes
-- every arrival and departure committed before the lock was granted. $3 (may be NULL) is
-- an arrival to record; the CTE's row is not visible to this statement's SELECT, so the
-- caller adds the arriving name itself (unless arrival_fenced). $4 is the arriving host: a
-- participant a take-over rejoined arrives only from its current holder.
WITH fence AS (
    SELECT EXISTS (
        SELECT 1 FROM barrier_participants bp
        WHERE bp.orchestration_id = $1 AND bp.name = $3::text
          AND bp.rejoins AND bp.host IS DISTINCT FROM $4::text
    ) AS fenced
), arrival AS (
    INSERT INTO barrier_arrivals (orchestration_id, point, name)
    SELECT $1, $2, $3::text FROM fence WHERE $3::text IS NOT NULL AND NOT fence.fenced
    ON CONFLICT (orchestration_id, point, name) DO NOTHING
)
SELECT
    (SELECT fenced FROM fence) AS arrival_fenced,
    extract(epoch FROM clock_timestamp() - p.first_arrival_at)::float8 AS elapsed_s,
    people.timeout_s,
    people.participants,
    people.excused,
    ARRAY(
        SELECT a.name FROM barrier_arrivals a WHERE a.orchestration_id = $1 AND a.point = $2
    ) AS arrived,
    r.point IS NOT NULL AS released,
    r.timed_out,
    r.missing
FROM barrier_points p
JOIN barrier_people people ON people.orchestration_id = p.orchestration_id
LEFT JOIN barrier_releases r ON r.orchestration_id = p.orchestration_id AND r.point = p.point
WHERE p.orchestration_id = $1 AND p.point = $2;

-- name: insert_release
INSERT INTO barrier_releases (orchestration_id, point, timed_out, missing)
VALUES ($1, $2, $3, $4)
ON CONFLICT (orchestration_id, point) DO NOTHING;

-- name: participants
SELECT participants, excused FROM barrier_people WHERE orchestration_id = $1;

-- name: points
SELECT
    p.point,
    p.first_arrival_at,
    ARRAY(
        SELECT a.name FROM barrier_arrivals a
        WHERE a.orchestration_id = p.orchestration_id AND a.point = p.point
        ORDER BY a.arrived_at, a.name
    ) AS arrived,
    r.released_at,
    coalesce(r.timed_out, false) AS timed_out,
    r.missing
FROM barrier_points p
LEFT JOIN barrier_releases r ON r.orchestration_id = p.orchestration_id AND r.point = p.point
WHERE p.orchestration_id = $1;
