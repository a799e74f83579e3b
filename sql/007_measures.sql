-- 007_measures: what was measured of each instance (coordinator/measure/).
--
--   instances.measures   the results' "measures" object: quality from the verify command
--                        (score, expected, met, source, metrics, the verify run), memory
--                        (peak and limit, MB; when it went over), the time budget, per tool
--                        calls/errors/denials/tokens, and a series of at most 240 points
--                        [t_s, total_tokens, cost_usd, rss_mb, progress_pct] for charts.
--                        Written with every snapshot of the row; '{}' before the first.
-- Never edit this file after it has shipped; add 008_*.sql instead.

ALTER TABLE instances
    ADD COLUMN measures jsonb NOT NULL DEFAULT '{}';
