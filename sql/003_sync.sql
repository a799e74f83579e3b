-- 003_sync: what the engine needs from the barrier tables now that it is wired in.
--
--   instances.wait_s                 seconds spent waiting at barriers, kept apart from working
--                                    time (an instance's duration includes it);
--   barrier_orchestrations.lease_s   how long a participant's process may go without a
--                                    heartbeat before it counts as gone (it crashed, its host
--                                    died): the next decision marks it 'left', so nobody
--                                    waits out the whole timeout for a dead process;
--   barrier_participants.seen_at     the last heartbeat of the process hosting it;
--   barrier_people                   who takes part in an orchestration's barrier and who is
--                                    excused (completed or left): read by every decision and
--                                    by the status line, defined once here.
-- Never edit this file after it has shipped; add 004_*.sql instead.

ALTER TABLE instances ADD COLUMN wait_s double precision NOT NULL DEFAULT 0;

ALTER TABLE barrier_orchestrations
    ADD COLUMN lease_s double precision NOT NULL DEFAULT 30 CHECK (lease_s > 0);

ALTER TABLE barrier_participants
    ADD COLUMN seen_at timestamptz NOT NULL DEFAULT now();

CREATE VIEW barrier_people AS
SELECT
    o.orchestration_id,
    o.timeout_s,
    o.lease_s,
    o.participants || ARRAY(
        SELECT bp.name FROM barrier_participants bp
        WHERE bp.orchestration_id = o.orchestration_id
    ) AS participants,
    ARRAY(
        SELECT bp.name FROM barrier_participants bp
        WHERE bp.orchestration_id = o.orchestration_id AND bp.state <> 'active'
    ) AS excused
FROM barrier_orchestrations o;
