-- 009_pool: the pool of what each instance did (coordinator/pool/): files written or
-- edited, commands and tests run, milestones, turn summaries, the `pool` blocks instances
-- write themselves, and conflicts (a path written by two instances, or a write refused).
--   kind      file | command | test | milestone | summary | declared | note | conflict
--   action    wrote, edited, ran, passed, failed, reached, completed, researched, blocked, ...
--   at        when it happened (the coordinator's clock); `coordinator pool --since` reads it
-- Summaries are clipped and redacted before they are written.
-- Never edit this file after it has shipped; add a later one instead.

CREATE TABLE pool_entries (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    orchestration_id text        NOT NULL REFERENCES orchestrations (id) ON DELETE CASCADE,
    instance         text        NOT NULL,
    seq              integer     NOT NULL DEFAULT 0,
    kind             text        NOT NULL,
    action           text        NOT NULL,
    topic            text,
    summary          text        NOT NULL DEFAULT '',
    affects          text[]      NOT NULL DEFAULT '{}',
    blocks           text[]      NOT NULL DEFAULT '{}',
    at               timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- an entry written twice (a flush cut short, then done again) is stored once
    CONSTRAINT pool_entries_once UNIQUE (orchestration_id, instance, at, seq)
);

CREATE INDEX pool_entries_by_time ON pool_entries (orchestration_id, at, id);
