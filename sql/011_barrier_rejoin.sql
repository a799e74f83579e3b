-- 011_barrier_rejoin: barrier participants a take-over rejoins (coordinator/fleet/).
--
--   barrier_participants.rejoins   the participant's instance is held by a claim (a fleet
--                                  runner): when its process is gone the instance is taken
--                                  over, not ended, so the lease does not excuse it (the
--                                  sync timeout still bounds every wait). Its new holder
--                                  rejoins it (state active again, host the new holder's);
--                                  from then on only that host's arrivals and ends count,
--                                  so a runner that lost the claim writes nothing over it.
-- Never edit this file after it has shipped; add a new migration instead.

ALTER TABLE barrier_participants
    ADD COLUMN rejoins boolean NOT NULL DEFAULT false;
