-- Record a committed window; written in the same transaction as its calls.
INSERT OR REPLACE INTO sync_windows (scope, window_start, window_end, row_count, run_id, synced_at)
VALUES ($scope, $window_start, $window_end, $row_count, $run_id, $synced_at);
