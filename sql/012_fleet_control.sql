-- 012_fleet_control: runs whose instances runners claim, and control commands that reach
-- them wherever they run (coordinator/fleet/control.py).
--
--   orchestrations.fleet        NULL: a one-host run (its own process takes its commands).
--                               'submitted': `coordinator submit`, its jobs on the label
--                               queues every runner serves. 'hosted': `coordinator run
--                               --fleet`, its jobs on queues of its own
--                               (fleet_entrypoints) that its process's runner and any
--                               runner with the labels join.
--   fleet_wants                 the latest control verb (stop, pause, unpause) per instance
--                               of a fleet run, from the command that set it: the runner
--                               holding the instance applies it (and the next holder, on a
--                               claim or a take-over, applies it again), then records what
--                               it did (applied_by, outcome), which the runner that took the
--                               command acknowledges with.
-- Never edit this file after it has shipped; add a new migration instead.

ALTER TABLE orchestrations
    ADD COLUMN fleet text CHECK (fleet IN ('submitted', 'hosted')),
    ADD COLUMN fleet_entrypoints text[] NOT NULL DEFAULT '{}';

CREATE TABLE fleet_wants (
    orchestration_id text        NOT NULL,
    name             text        NOT NULL,
    command_id       bigint      NOT NULL REFERENCES control_commands (id) ON DELETE CASCADE,
    verb             text        NOT NULL CHECK (verb IN ('stop', 'pause', 'unpause')),
    reason           text        NOT NULL,
    set_at           timestamptz NOT NULL DEFAULT now(),
    applied_by       uuid,
    applied_at       timestamptz,
    outcome          text,
    PRIMARY KEY (orchestration_id, name),
    FOREIGN KEY (orchestration_id, name)
        REFERENCES instances (orchestration_id, name) ON DELETE CASCADE
);

CREATE INDEX orchestrations_open_fleet_idx ON orchestrations (id)
    WHERE fleet IS NOT NULL AND status IN ('queued', 'running');
