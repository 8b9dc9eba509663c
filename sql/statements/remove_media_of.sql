-- The media of the calls in temp table `doomed_calls (id)`: recording rows (their files
-- queued in files_to_remove, removed once this commits), transcript segments and jobs.
-- Each statement's count is read (load.count_sql).
INSERT INTO files_to_remove (path, queued_at)
SELECT DISTINCT path, $now FROM recordings
WHERE call_id IN (SELECT id FROM doomed_calls) AND path NOT IN (SELECT path FROM files_to_remove);

DELETE FROM recordings WHERE call_id IN (SELECT id FROM doomed_calls);

DELETE FROM transcript_segments WHERE call_id IN (SELECT id FROM doomed_calls);

DELETE FROM media_jobs WHERE call_id IN (SELECT id FROM doomed_calls);
