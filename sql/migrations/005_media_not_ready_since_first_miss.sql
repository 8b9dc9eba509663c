-- A "not ready yet" answer (404) now counts from callsync's first miss, not from the
-- call's start: a job becomes unavailable only after media.max_age_days of misses and at
-- least 3 requests (pipeline.media.MIN_MISSES). The old rule closed every job whose call was
-- older than max_age_days on its first 404, so a backfill of old calls gave up on media the
-- vendor had not made yet. This counts the misses, and reopens the jobs the old rule closed.

-- Consecutive "not ready yet" answers since missing_since (kept through failed attempts).
-- NOT NULL in a second statement: duckdb 1.5.5 (the lake extra's) cannot add a column with a
-- constraint ("Adding columns with constraints not yet supported"); the result is the same.
ALTER TABLE media_jobs ADD COLUMN misses INTEGER DEFAULT 0;
ALTER TABLE media_jobs ALTER COLUMN misses SET NOT NULL;

-- Closed by the old rule: status unavailable with its message, "still not available N days
-- after the call: ...". Jobs unavailable for other reasons keep their status: refused URLs
-- ("refused: ..."), and anything else (their last_error says why). The old rule kept no
-- missing_since, so the streak starts again at the next miss: a reopened job is asked
-- again for another max_age_days (with the back-off), never given up sooner.
UPDATE media_jobs SET
    status          = 'pending',
    missing_since   = NULL,
    misses          = 0,
    next_attempt_at = NULL,
    last_error      = 'reopened (closed by the old max_age_days rule): ' || last_error
WHERE status = 'unavailable'
  AND last_error LIKE 'still not available % days after the call: %';
