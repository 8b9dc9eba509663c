-- Calls past [sync] keep_days (see doomed_old_calls), and the rejected records of their
-- days or with their ids. Each statement's count is read (load.count_sql).
DELETE FROM calls WHERE started_at < $cutoff;

DELETE FROM deleted_calls WHERE started_at < $cutoff;

DELETE FROM rejected_records
WHERE entity = 'call' AND (window_end < $cutoff_day OR record_id IN (SELECT id FROM doomed_calls));
