-- One erasure or deletion, for the audit table (counts only, never the personal data).
INSERT INTO forget_audit (audit_id, happened_at, kind, run_id, calls, "rows", files, detail)
SELECT (SELECT coalesce(max(audit_id), 0) + 1 FROM forget_audit), $happened_at, $kind, $run_id, $calls, $rows, $files, $detail;
