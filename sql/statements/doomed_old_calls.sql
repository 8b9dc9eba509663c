-- Calls (live or deleted upstream) that started before $cutoff, past [sync] keep_days:
-- into temp table `doomed_calls`, for remove_media_of and remove_old_calls.
CREATE OR REPLACE TEMP TABLE doomed_calls AS
SELECT id FROM calls WHERE started_at < $cutoff
UNION ALL
SELECT id FROM deleted_calls WHERE started_at < $cutoff;
