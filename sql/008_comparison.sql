-- 008_comparison: the comparison of a run's scenarios (coordinator/report/compare.py), kept
-- apart from the results so a report or a dashboard reads it without the instances:
--   orchestrations.comparison   per scenario: items, tokens, cost, time, wait, peak memory,
--                               quality against its expectation; the quality comparison;
--                               the scaling fits; recommendations (NULL: the run has not
--                               ended, or ended before comparisons existed).
-- Written with the final results (finish_orchestration takes it from results.comparison).
-- Never edit this file after it has shipped; add 009_*.sql instead.

ALTER TABLE orchestrations ADD COLUMN comparison jsonb;
