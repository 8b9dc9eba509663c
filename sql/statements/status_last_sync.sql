-- When the last sync that ran to the end (ok, or with failures) finished, for `callsync status`.
SELECT max(finished_at) FROM runs WHERE command = 'sync' AND status IN ('ok', 'failed');
