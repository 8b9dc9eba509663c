-- Erase the calls of `doomed_calls` (see doomed_forgotten) and every rejected record that
-- holds one of them or one of the numbers, then leave tombstones. Each statement's count
-- is read (load.count_sql).
DELETE FROM calls WHERE id IN (SELECT id FROM doomed_calls);

DELETE FROM deleted_calls WHERE id IN (SELECT id FROM doomed_calls);

DELETE FROM rejected_records
WHERE record_id IN (SELECT id FROM doomed_calls)
   OR regexp_replace(json_extract_string(raw, '$.caller_number'), '[^0-9]', '', 'g')
      IN (SELECT value FROM forget_values WHERE kind = 'caller_number');

INSERT INTO tombstones (hash, kind, created_at, run_id)
SELECT DISTINCT ON (sha256($salt || value)) sha256($salt || value), kind, $now, $run_id FROM forget_values
WHERE sha256($salt || value) NOT IN (SELECT hash FROM tombstones);
