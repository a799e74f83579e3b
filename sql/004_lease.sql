-- 004_lease: a crashed coordinator is visible.
--
--   orchestrations.heartbeat_at   the last heartbeat of the coordinator that runs it (server
--                                 clock); it beats every lease_s / 3 while the run goes on;
--   orchestrations.lease_s        how long it may go without a heartbeat before the run
--                                 counts as lost (its coordinator was killed, its host died);
--   orchestrations_seen           orchestrations as every reader shows them: a run still
--                                 'running' whose lease expired is 'lost', with last_seen_at.
--                                 The stored status is kept: a coordinator that comes back
--                                 (a long database outage) beats again and is running again.
-- Never edit this file after it has shipped; add 005_*.sql instead.

ALTER TABLE orchestrations
    ADD COLUMN heartbeat_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN lease_s double precision NOT NULL DEFAULT 30 CHECK (lease_s > 0);

CREATE VIEW orchestrations_seen AS
SELECT
    o.id,
    o.config,
    CASE
        WHEN o.status = 'running'
             AND o.heartbeat_at < now() - make_interval(secs => o.lease_s) THEN 'lost'
        ELSE o.status
    END AS status,
    o.budgets,
    o.host,
    o.sync_mode,
    o.results,
    o.started_at,
    o.ended_at,
    o.updated_at,
    o.heartbeat_at AS last_seen_at,
    o.lease_s
FROM orchestrations o;
