-- A batch of finished media work, in one transaction (the caller's). Registered tables:
--   fetched_recordings (call_id, path, size_bytes, sha256, content_type)  files already fsynced in place
--   fetched_transcripts (call_id)                                          transcripts replaced whole
--   fetched_segments (call_id, segment_index, speaker, text, timestamp)
--   outcomes (call_id, kind, status, failures, last_error, missing_since, next_attempt_at, done_at, misses)
MERGE INTO recordings
USING fetched_recordings AS fetched
ON recordings.call_id = fetched.call_id
WHEN MATCHED THEN UPDATE SET
    path = fetched.path, size_bytes = fetched.size_bytes, sha256 = fetched.sha256,
    content_type = fetched.content_type, fetched_at = $now
WHEN NOT MATCHED THEN INSERT (call_id, path, size_bytes, sha256, content_type, fetched_at)
    VALUES (fetched.call_id, fetched.path, fetched.size_bytes, fetched.sha256, fetched.content_type, $now);

DELETE FROM transcript_segments WHERE call_id IN (SELECT call_id FROM fetched_transcripts);

INSERT INTO transcript_segments (call_id, segment_index, speaker, text, "timestamp")
SELECT call_id, segment_index, speaker, text, "timestamp" FROM fetched_segments;

UPDATE media_jobs AS j SET
    status          = o.status,
    attempts        = j.attempts + 1,
    failures        = o.failures,
    last_error      = o.last_error,
    missing_since   = o.missing_since,
    misses          = o.misses,
    last_attempt_at = $now,
    next_attempt_at = o.next_attempt_at,
    done_at         = o.done_at
FROM outcomes AS o
WHERE j.call_id = o.call_id AND j.kind = o.kind;
