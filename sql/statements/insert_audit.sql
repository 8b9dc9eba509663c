-- One erasure or deletion, for the audit table (counts only, never the personal data).
INSERT INTO forget_audit (happened_at, kind, run_id, calls, "rows", files, detail)
VALUES ($happened_at, $kind, $run_id, $calls, $rows, $files, $detail);
