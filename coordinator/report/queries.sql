-- Named queries of the report (coordinator/report/load.py). Each block starts with
-- "-- name: <name>" and runs as one statement with $n parameters.

-- name: stored_comparison
SELECT comparison FROM orchestrations WHERE id = $1;

-- name: checkpoint_points
-- Tokens and cost at each milestone, for the charts over time (no state snapshots).
SELECT scenario_id, progress_pct, timestamp_unix, metrics
FROM scenario_orchestration_checkpoints
WHERE orchestration_id = $1
ORDER BY timestamp_unix, scenario_id, id;
