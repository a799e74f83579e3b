-- 010_runners: several hosts, one orchestration (coordinator/fleet/).
--
--   runners                 one row per `coordinator runner` process: host, name, capacity,
--                           labels, its heartbeat (server clock) and lease; state running ->
--                           draining -> stopped. A runner silent for lease_s is lost: its
--                           pgqueuer jobs go stale after the same lease and another runner
--                           takes its instances over.
--   instances.claim_epoch   the fence: every claim of an instance (the first, and every
--                           take-over) adds one. A runner writes an instance's row only while
--                           the row still carries the epoch of its own claim (checked under
--                           the row lock, in the write's transaction); a runner that finds the
--                           epoch moved (it was stopped past its lease) stops its copy.
--   instances.runner        the runner (runners.id) holding the current claim.
--
-- The queue itself (jobs, their heartbeat, stale re-claims, scheduled execute_after) is
-- pgqueuer's: its own tables, installed and upgraded by pgqueuer's installer, not here
-- (coordinator/fleet/queue.py). No foreign key into them.
-- Never edit this file after it has shipped; add a new migration instead.

CREATE TABLE runners (
    id            uuid             PRIMARY KEY,
    name          text             NOT NULL,
    host          text             NOT NULL,
    pid           integer          NOT NULL,
    capacity      integer          NOT NULL CHECK (capacity > 0),
    labels        text[]           NOT NULL DEFAULT '{}',
    state         text             NOT NULL DEFAULT 'running'
        CHECK (state IN ('running', 'draining', 'stopped')),
    lease_s       double precision NOT NULL CHECK (lease_s > 0),
    started_at    timestamptz      NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz      NOT NULL DEFAULT now(),
    stopped_at    timestamptz
);

ALTER TABLE instances
    ADD COLUMN claim_epoch integer NOT NULL DEFAULT 0 CHECK (claim_epoch >= 0),
    ADD COLUMN runner uuid;

CREATE INDEX instances_runner_idx ON instances (runner) WHERE runner IS NOT NULL;
