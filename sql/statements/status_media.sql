-- Media for `callsync status` and the run summary: (label, value) rows, in display order.
WITH jobs AS (
    SELECT
        count(*) FILTER (WHERE status = 'done') AS downloaded,
        count(*) FILTER (WHERE status = 'done' AND kind = 'recording') AS recordings,
        count(*) FILTER (WHERE status = 'done' AND kind = 'transcript') AS transcripts,
        count(*) FILTER (WHERE status = 'pending') AS pending,
        count(*) FILTER (WHERE status = 'failed') AS failed,
        count(*) FILTER (WHERE status = 'unavailable') AS unavailable
    FROM media_jobs
)
SELECT label, value FROM (
    SELECT 1 AS position, 'downloaded' AS label, downloaded AS value FROM jobs
    UNION ALL SELECT 2, 'recordings', recordings FROM jobs
    UNION ALL SELECT 3, 'transcripts', transcripts FROM jobs
    UNION ALL SELECT 4, 'pending', pending FROM jobs
    UNION ALL SELECT 5, 'failed', failed FROM jobs
    UNION ALL SELECT 6, 'unavailable', unavailable FROM jobs
    UNION ALL SELECT 7, 'bytes', coalesce(sum(size_bytes), 0)::BIGINT FROM recordings
)
ORDER BY position;
