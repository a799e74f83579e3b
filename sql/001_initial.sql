-- 001_initial: orchestrations, their instances, and milestone checkpoints.
--
-- Applied once, inside one transaction, by coordinator.db.migrations, which records it in
-- coordinator_migrations. Never edit this file after it has shipped: its checksum is
-- recorded and a changed file is refused. Add 002_*.sql instead (002_barrier.sql is
-- reserved for the barrier tables).
--
-- Clocks: created/updated/started/ended columns that the database fills use the server
-- clock (now()). timestamp_unix and instances.started_at/ended_at are event times the
-- caller measured on its own host, because writes are batched and arrive later.

CREATE TABLE orchestrations (
    id          text        PRIMARY KEY,
    config      jsonb       NOT NULL DEFAULT '{}',  -- snapshot of the resolved config
    status      text        NOT NULL,
    budgets     jsonb       NOT NULL DEFAULT '{}',
    host        text        NOT NULL,
    sync_mode   text        NOT NULL,
    results     jsonb,
    started_at  timestamptz NOT NULL DEFAULT now(),
    ended_at    timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- History listing and "latest orchestration".
CREATE INDEX orchestrations_started_at_idx ON orchestrations (started_at DESC, id DESC);

CREATE TABLE instances (
    orchestration_id      text             NOT NULL REFERENCES orchestrations (id) ON DELETE CASCADE,
    name                  text             NOT NULL,
    session_id            uuid,
    status                text             NOT NULL,
    pid                   integer,
    host                  text,
    input_tokens          bigint           NOT NULL DEFAULT 0,
    output_tokens         bigint           NOT NULL DEFAULT 0,
    cache_read_tokens     bigint           NOT NULL DEFAULT 0,
    cache_creation_tokens bigint           NOT NULL DEFAULT 0,
    total_tokens          bigint           NOT NULL DEFAULT 0,
    cost_usd              double precision NOT NULL DEFAULT 0,
    tool_calls            jsonb            NOT NULL DEFAULT '{}',  -- {"Bash": 3, ...}
    turns                 integer          NOT NULL DEFAULT 0,
    progress_pct          double precision,
    exit_code             integer,
    error                 text,
    reason                text,
    started_at            timestamptz,
    ended_at              timestamptz,
    updated_at            timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (orchestration_id, name)
);

-- One row per (orchestration, scenario, milestone): the first write wins, a repeat is a
-- no-op (ON CONFLICT DO NOTHING), so retried batches are harmless.
CREATE TABLE scenario_orchestration_checkpoints (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    orchestration_id text             NOT NULL REFERENCES orchestrations (id) ON DELETE CASCADE,
    scenario_id      text             NOT NULL,  -- the instance name
    milestone_name   text             NOT NULL,
    progress_pct     double precision NOT NULL CHECK (progress_pct >= 0 AND progress_pct <= 100),
    timestamp_unix   bigint           NOT NULL,  -- epoch milliseconds when the milestone was reached
    state_snapshot   jsonb            NOT NULL DEFAULT '{}',
    metrics          jsonb            NOT NULL DEFAULT '{}',
    created_at       timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT scenario_orchestration_checkpoints_milestone_key
        UNIQUE (orchestration_id, scenario_id, milestone_name)
);

-- The unique key above also serves lookups by orchestration_id alone.
-- Latest checkpoint per scenario of an orchestration (the view below):
CREATE INDEX scenario_orchestration_checkpoints_progress_idx
    ON scenario_orchestration_checkpoints (orchestration_id, scenario_id, timestamp_unix DESC, id DESC);
-- One scenario across orchestrations (history of a scenario):
CREATE INDEX scenario_orchestration_checkpoints_scenario_idx
    ON scenario_orchestration_checkpoints (scenario_id, timestamp_unix);
-- Time-range queries and retention:
CREATE INDEX scenario_orchestration_checkpoints_time_idx
    ON scenario_orchestration_checkpoints (timestamp_unix);

-- The usual progress query: the most recent milestone of every scenario.
--   SELECT scenario_id, milestone_name, progress_pct FROM scenario_latest_progress
--   WHERE orchestration_id = $1 ORDER BY scenario_id;
-- "Most recent" is by the caller's timestamp_unix, ties broken by insertion order.
CREATE VIEW scenario_latest_progress AS
SELECT DISTINCT ON (orchestration_id, scenario_id)
    orchestration_id,
    scenario_id,
    milestone_name,
    progress_pct,
    timestamp_unix,
    metrics,
    created_at
FROM scenario_orchestration_checkpoints
ORDER BY orchestration_id, scenario_id, timestamp_unix DESC, id DESC;
