-- Named queries of the control channel (coordinator.control.channel). Each block starts
-- with "-- name: <name>" and runs as one statement with $n parameters.

-- name: listen
LISTEN coordinator_control;

-- name: send
INSERT INTO control_commands (orchestration_id, verb, instances, requested_by)
VALUES ($1, $2, $3, $4)
RETURNING id, orchestration_id, verb, instances, requested_by, requested_at, taken_at,
          acked_at, outcome, error, withdrawn_at;

-- name: open_commands
-- Neither acknowledged nor withdrawn, oldest first (a taken but unacknowledged one is
-- there too: its coordinator may have lost the connection between take and ack).
SELECT id, orchestration_id, verb, instances, requested_by, requested_at, taken_at,
       acked_at, outcome, error, withdrawn_at
FROM control_commands
WHERE orchestration_id = $1 AND acked_at IS NULL AND withdrawn_at IS NULL
ORDER BY id;

-- name: take
-- The coordinator is about to apply it; refused once withdrawn (or taken before).
UPDATE control_commands SET taken_at = now()
WHERE id = $1 AND taken_at IS NULL AND withdrawn_at IS NULL
RETURNING id;

-- name: ack
UPDATE control_commands SET acked_at = now(), outcome = $2, error = $3
WHERE id = $1 AND taken_at IS NOT NULL AND acked_at IS NULL
RETURNING id;

-- name: withdraw
-- The sender gave up waiting; refused once a coordinator took it.
UPDATE control_commands SET withdrawn_at = now()
WHERE id = $1 AND taken_at IS NULL AND withdrawn_at IS NULL
RETURNING id;

-- name: get
SELECT id, orchestration_id, verb, instances, requested_by, requested_at, taken_at,
       acked_at, outcome, error, withdrawn_at
FROM control_commands
WHERE id = $1;
