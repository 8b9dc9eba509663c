-- A page of stored recordings, for --verify (keyset paging on call_id).
SELECT call_id, path, size_bytes, sha256
FROM recordings
WHERE call_id > $after_call
ORDER BY call_id
LIMIT $page_size;
