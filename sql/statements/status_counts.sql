-- Row counts for `callsync status`.
SELECT 'calls' AS "table", count(*) AS "rows" FROM calls
UNION ALL SELECT 'tracking_numbers', count(*) FROM tracking_numbers WHERE deleted_at IS NULL
UNION ALL SELECT 'call_flows', count(*) FROM call_flows WHERE deleted_at IS NULL
UNION ALL SELECT 'rejected_records', count(*) FROM rejected_records;
