-- Record the committed windows (registered as `windows`: scope, window_start, window_end,
-- row_count); written in the same transaction as their calls. One statement per group:
-- a statement per window cost more than the calls' upsert itself.
MERGE INTO sync_windows
USING windows
ON sync_windows.scope = windows.scope
   AND sync_windows.window_start = windows.window_start
   AND sync_windows.window_end = windows.window_end
WHEN MATCHED THEN UPDATE SET row_count = windows.row_count, run_id = $run_id, synced_at = $synced_at
WHEN NOT MATCHED THEN INSERT (scope, window_start, window_end, row_count, run_id, synced_at)
    VALUES (windows.scope, windows.window_start, windows.window_end, windows.row_count, $run_id, $synced_at);
