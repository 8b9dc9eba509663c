-- A page of the jobs to attempt now, in storage order after row $after (keyset paging on
-- rowid: a page costs one scan of media_jobs, not a sort of it), with the call's started_at.
WITH page AS (
    SELECT rowid AS job_row, call_id, kind, url, missing_since, failures, misses
    FROM media_jobs
    WHERE rowid > $after
      AND status IN ('pending', 'failed')
      AND url IS NOT NULL
      AND (next_attempt_at IS NULL OR next_attempt_at <= $now OR $ignore_backoff)
      AND ((kind = 'recording' AND $recordings) OR (kind = 'transcript' AND $transcripts))
    ORDER BY rowid
    LIMIT $page_size
)
SELECT p.job_row, p.call_id, p.kind, p.url, c.started_at, p.missing_since, p.failures, p.misses
FROM page p
LEFT JOIN calls c ON c.id = p.call_id  -- (a job without its call is skipped, not a short page)
ORDER BY p.job_row;
