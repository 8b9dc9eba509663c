-- How many jobs this run will attempt (for the progress bar): the jobs media_due_jobs.sql
-- pages through, by the same conditions, counted in one go.
SELECT count(*)
FROM media_jobs j
SEMI JOIN calls c ON c.id = j.call_id
WHERE j.status IN ('pending', 'failed')
  AND j.url IS NOT NULL
  AND (j.next_attempt_at IS NULL OR j.next_attempt_at <= $now OR $ignore_backoff)
  AND ((j.kind = 'recording' AND $recordings) OR (j.kind = 'transcript' AND $transcripts));
