-- The media of the calls in temp table `doomed_calls (id)`: recording rows (their files
-- queued in files_to_remove, removed once this commits), transcript segments and jobs.
-- Each statement's count is read (load.count_sql).
INSERT OR IGNORE INTO files_to_remove (path, queued_at)
SELECT path, $now FROM recordings WHERE call_id IN (SELECT id FROM doomed_calls);

DELETE FROM recordings WHERE call_id IN (SELECT id FROM doomed_calls);

DELETE FROM transcript_segments WHERE call_id IN (SELECT id FROM doomed_calls);

DELETE FROM media_jobs WHERE call_id IN (SELECT id FROM doomed_calls);
