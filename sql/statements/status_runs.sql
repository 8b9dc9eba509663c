-- Recent runs, newest first, for `callsync status`.
SELECT run_id, command, status, started_at, finished_at,
       windows_done, windows_failed, calls_new, calls_updated, rejected, requests, error
FROM runs
ORDER BY started_at DESC
LIMIT 10;
