-- Recording and transcript coverage: calls with media, fetched, and still pending, failed or unavailable.
-- "expected" counts calls whose listing gave a URL; the statuses are those of the media jobs.
-- "oldest_pending_since" is when the pending job that has waited longest first got "not ready
-- yet" (or was planned, if not asked for yet); "oldest_pending_waited" is how long ago that is.
WITH waiting AS (
    SELECT kind, min(coalesce(missing_since, first_seen_at)) AS since
    FROM media_jobs
    WHERE status = 'pending'
    GROUP BY kind
),
per_kind AS (
    SELECT
        'recording' AS kind,
        recording_expected AS expected,
        recording_fetched AS fetched,
        recording_status AS status
    FROM call_media
    UNION ALL
    SELECT 'transcript', transcript_expected, transcript_fetched, transcript_status
    FROM call_media
)
SELECT
    kind,
    count(*) AS calls,
    count(*) FILTER (WHERE expected) AS expected,
    count(*) FILTER (WHERE fetched) AS fetched,
    count(*) FILTER (WHERE expected AND NOT fetched AND coalesce(status, 'pending') = 'pending') AS pending,
    count(*) FILTER (WHERE NOT fetched AND status = 'failed') AS failed,
    count(*) FILTER (WHERE NOT fetched AND status = 'unavailable') AS unavailable,
    round(count(*) FILTER (WHERE fetched) / nullif(count(*) FILTER (WHERE expected), 0), 3) AS coverage,
    any_value(w.since) AS oldest_pending_since,
    date_trunc('second', now() - any_value(w.since)) AS oldest_pending_waited
FROM per_kind
LEFT JOIN waiting w USING (kind)
GROUP BY kind
ORDER BY kind
