-- 006_attempts: an instance may run as several attempts, and a run can be resumed.
--
--   instances.attempts       processes launched for the instance so far (0: never launched);
--   instances.carry          what a resume needs to continue the instance where it stopped:
--                            turns done and sent, whether claude has its session, API
--                            messages, the log of attempts (each: status, error, tokens);
--   orchestrations.launch    how the run was launched (config path, working directory,
--                            command-line overrides, results path), so `coordinator resume`
--                            can launch it again; never secrets (env values are not in it).
-- Never edit this file after it has shipped; add 007_*.sql instead.

ALTER TABLE instances
    ADD COLUMN attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    ADD COLUMN carry jsonb NOT NULL DEFAULT '{}';

ALTER TABLE orchestrations
    ADD COLUMN launch jsonb NOT NULL DEFAULT '{}';

CREATE OR REPLACE VIEW orchestrations_seen AS
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
    o.lease_s,
    o.launch
FROM orchestrations o;
