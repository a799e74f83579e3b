-- 005_control: control a running orchestration from any terminal or host.
--
--   control_commands   one row per command (stop, pause, unpause) sent to an orchestration:
--                      the row is the truth. The coordinator that runs the orchestration
--                      takes it (taken_at), applies it and acknowledges it (acked_at, the
--                      outcome per instance, or an error). A sender that gave up waiting
--                      withdraws it (withdrawn_at), which only succeeds while nobody took it,
--                      so a command is either applied and acknowledged or never applied.
--                      instances: the instance names; empty means every instance.
--                      requested_by: "<host>:<pid>" of the sender.
--   coordinator_control  NOTIFY channel, payload the orchestration id, sent when a command
--                      is inserted. Only a wake-up hint: the coordinator also re-reads the
--                      table on a poll timer, so a lost notification only delays a command.
-- All timestamps come from the server clock.
-- Never edit this file after it has shipped; add a new migration instead.

CREATE TABLE control_commands (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    orchestration_id text        NOT NULL REFERENCES orchestrations (id) ON DELETE CASCADE,
    verb             text        NOT NULL CHECK (verb IN ('stop', 'pause', 'unpause')),
    instances        text[]      NOT NULL DEFAULT '{}',
    requested_by     text        NOT NULL,
    requested_at     timestamptz NOT NULL DEFAULT now(),
    taken_at         timestamptz,
    acked_at         timestamptz,
    outcome          jsonb,  -- {"worker-2": "paused", ...}
    error            text,
    withdrawn_at     timestamptz,
    CHECK (acked_at IS NULL OR taken_at IS NOT NULL),
    CHECK (withdrawn_at IS NULL OR taken_at IS NULL)
);

-- What a coordinator polls: the open commands of its orchestration, oldest first.
CREATE INDEX control_commands_open_idx ON control_commands (orchestration_id, id)
    WHERE acked_at IS NULL AND withdrawn_at IS NULL;

CREATE FUNCTION control_notify_command() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('coordinator_control', NEW.orchestration_id);
    RETURN NULL;
END;
$$;

CREATE TRIGGER control_commands_notify
    AFTER INSERT ON control_commands
    FOR EACH ROW EXECUTE FUNCTION control_notify_command();
