-- Calls (live or deleted upstream) that started in [$since, $cutoff): their media is past
-- [media] keep_days. Into temp table `doomed_calls` for remove_media_of. Calls before $since
-- were handled by an earlier run, and media_plan_jobs never plans them again.
CREATE OR REPLACE TEMP TABLE doomed_calls AS
SELECT id FROM calls WHERE started_at >= $since AND started_at < $cutoff
UNION ALL
SELECT id FROM deleted_calls WHERE started_at >= $since AND started_at < $cutoff;
