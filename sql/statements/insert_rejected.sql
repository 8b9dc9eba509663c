-- Keep records that failed validation (registered as `batch`) with their raw payload.
-- Ids are numbered here, not by a sequence: a DuckLake has none (one writer at a time).
INSERT INTO rejected_records (rejected_id, run_id, entity, record_id, window_start, window_end, error, raw, rejected_at)
SELECT (SELECT coalesce(max(rejected_id), 0) FROM rejected_records) + row_number() OVER (), $run_id, entity, record_id, window_start, window_end, error, raw, $rejected_at
FROM batch;
