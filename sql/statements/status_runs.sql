-- Recent runs, newest first, for `callsync status`.
SELECT run_id, command, status, started_at, finished_at,
       windows_done, windows_failed, calls_new, calls_updated, rejected, requests, error,
       -- listing requests per 100 calls listed (NULL for a run that listed none)
       100 * TRY_CAST(summary->>'listing_requests' AS DOUBLE)
           / nullif(calls_new + calls_updated + calls_unchanged + rejected, 0) AS listing_requests_per_100_calls
FROM runs
ORDER BY started_at DESC
LIMIT 10;
