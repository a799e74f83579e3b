-- Named queries of the report (coordinator/report/load.py). Each block starts with
-- "-- name: <name>" and runs as one statement with $n parameters.

-- name: measures_column_exists
-- instances.measures comes with migration 007; a database before it has none.
SELECT EXISTS (
    SELECT 1 FROM information_schema.columns
    WHERE table_schema = current_schema() AND table_name = 'instances'
      AND column_name = 'measures'
);

-- name: instance_measures
SELECT name, measures FROM instances WHERE orchestration_id = $1;

-- name: stored_comparison
SELECT comparison FROM orchestrations WHERE id = $1;

-- name: checkpoint_points
-- Tokens and cost at each milestone, for the charts over time (no state snapshots).
SELECT scenario_id, progress_pct, timestamp_unix, metrics
FROM scenario_orchestration_checkpoints
WHERE orchestration_id = $1
ORDER BY timestamp_unix, scenario_id, id;
