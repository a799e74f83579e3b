-- 002_barrier: barriers between instances (sync modes "milestone" and "lockstep").
--
-- Everything is a row, so any number of coordinator processes sharing one orchestration id
-- (later: on several hosts) agree on one truth:
--
--   barrier_orchestrations  the expected participants and the timeout, written once by
--                           whoever gets there first (INSERT ... ON CONFLICT DO NOTHING);
--   barrier_participants    one row per instance a process hosts; state active ->
--                           completed | left (final: the first end wins);
--   barrier_points          one row per barrier point ("milestone:30", "step:2"), created by
--                           the first arrival; it is the row locked (FOR UPDATE) while a
--                           release is decided, and its first_arrival_at starts the timeout;
--   barrier_arrivals        who reached the point (idempotent: primary key);
--   barrier_releases        the decision, at most one per point: released when every
--                           participant arrived, completed or left, or timed out with the
--                           names still missing. Inserting it NOTIFYs coordinator_barrier.
--
-- NOTIFY is only a wake-up hint: waiters re-read these tables after every notification and
-- on a poll timer. All timestamps come from the server clock. No foreign key to
-- orchestrations: a barrier may be set up before (or without) the orchestration row.
-- Never edit this file after it has shipped; add 003_*.sql instead.

CREATE TABLE barrier_orchestrations (
    orchestration_id text             PRIMARY KEY,
    mode             text             NOT NULL CHECK (mode IN ('free', 'milestone', 'lockstep')),
    participants     text[]           NOT NULL,
    timeout_s        double precision NOT NULL CHECK (timeout_s > 0),
    created_at       timestamptz      NOT NULL DEFAULT now()
);

CREATE TABLE barrier_participants (
    orchestration_id text        NOT NULL
        REFERENCES barrier_orchestrations (orchestration_id) ON DELETE CASCADE,
    name             text        NOT NULL,
    state            text        NOT NULL DEFAULT 'active'
        CHECK (state IN ('active', 'completed', 'left')),
    reason           text,
    host             text,
    registered_at    timestamptz NOT NULL DEFAULT now(),
    ended_at         timestamptz,
    PRIMARY KEY (orchestration_id, name)
);

CREATE TABLE barrier_points (
    orchestration_id text        NOT NULL
        REFERENCES barrier_orchestrations (orchestration_id) ON DELETE CASCADE,
    point            text        NOT NULL,
    first_arrival_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (orchestration_id, point)
);

CREATE TABLE barrier_arrivals (
    orchestration_id text        NOT NULL,
    point            text        NOT NULL,
    name             text        NOT NULL,
    arrived_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (orchestration_id, point, name),
    FOREIGN KEY (orchestration_id, point)
        REFERENCES barrier_points (orchestration_id, point) ON DELETE CASCADE
);

CREATE TABLE barrier_releases (
    orchestration_id text        NOT NULL,
    point            text        NOT NULL,
    released_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    timed_out        boolean     NOT NULL,
    missing          text[]      NOT NULL DEFAULT '{}',
    PRIMARY KEY (orchestration_id, point),
    FOREIGN KEY (orchestration_id, point)
        REFERENCES barrier_points (orchestration_id, point) ON DELETE CASCADE
);

-- Every release wakes the listeners of every process (delivered at commit). The payload
-- names the orchestration and the point; listeners filter on it and re-read the tables.
CREATE FUNCTION barrier_notify_release() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'coordinator_barrier',
        json_build_object('o', NEW.orchestration_id, 'p', NEW.point)::text
    );
    RETURN NULL;
END;
$$;

CREATE TRIGGER barrier_releases_notify
    AFTER INSERT ON barrier_releases
    FOR EACH ROW EXECUTE FUNCTION barrier_notify_release();
