-- Keep records that failed validation (registered as `batch`) with their raw payload.
INSERT INTO rejected_records (run_id, entity, record_id, window_start, window_end, error, raw, rejected_at)
SELECT $run_id, entity, record_id, window_start, window_end, error, raw, $rejected_at
FROM batch;
