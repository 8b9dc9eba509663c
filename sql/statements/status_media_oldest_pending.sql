-- The pending media job that has waited longest, for `callsync status`: waiting since its
-- first "not ready yet" (missing_since), or since it was planned if not asked for yet.
SELECT kind, call_id, coalesce(missing_since, first_seen_at) AS waiting_since, misses
FROM media_jobs
WHERE status = 'pending'
ORDER BY waiting_since, call_id
LIMIT 1;
