-- Recordings that --verify found missing or changed on disk (registered as `reopen (call_id, reason)`),
-- and recording jobs marked done without a stored row: fetched again on this run.
DELETE FROM recordings WHERE call_id IN (SELECT call_id FROM reopen);

UPDATE media_jobs AS j SET
    status = 'pending', failures = 0, next_attempt_at = NULL, done_at = NULL, last_error = r.reason
FROM reopen AS r
WHERE j.call_id = r.call_id AND j.kind = 'recording';

UPDATE media_jobs AS j SET
    status = 'pending', failures = 0, next_attempt_at = NULL, done_at = NULL,
    last_error = 'verify: marked done but no recording was stored'
WHERE j.kind = 'recording' AND j.status = 'done'
  AND NOT EXISTS (SELECT 1 FROM recordings r WHERE r.call_id = j.call_id);
