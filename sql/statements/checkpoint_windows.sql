-- Record the committed windows (registered as `windows`: scope, window_start, window_end,
-- row_count); written in the same transaction as their calls. One statement per group:
-- a statement per window cost more than the calls' upsert itself.
INSERT OR REPLACE INTO sync_windows (scope, window_start, window_end, row_count, run_id, synced_at)
SELECT scope, window_start, window_end, row_count, $run_id, $synced_at
FROM windows;
