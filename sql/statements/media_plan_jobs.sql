-- Jobs for the media of calls we hold: one per (call, kind) with a URL, found set-based.
-- Only calls changed since $since are looked at (the previous plan, with a margin; the
-- beginning of time when settings changed), so a run over a large, settled table is cheap.

-- Calls with a recording_url / transcript_url and no job yet (an anti-join), that started
-- since $keep_since ([media] keep_days; older media is never fetched).
INSERT INTO media_jobs (call_id, kind, url, status, first_seen_at)
SELECT c.id, 'recording', c.recording_url, 'pending', $now
FROM calls c
ANTI JOIN media_jobs j ON j.call_id = c.id AND j.kind = 'recording'
WHERE $recordings AND c.recording_url IS NOT NULL AND c.last_changed_at >= $since
  AND c.started_at >= $keep_since;

INSERT INTO media_jobs (call_id, kind, url, status, first_seen_at)
SELECT c.id, 'transcript', c.transcript_url, 'pending', $now
FROM calls c
ANTI JOIN media_jobs j ON j.call_id = c.id AND j.kind = 'transcript'
WHERE $transcripts AND c.transcript_url IS NOT NULL AND c.last_changed_at >= $since
  AND c.started_at >= $keep_since;

-- The URL changed upstream: remember the new one. What is stored stays stored; anything
-- else is asked again on the next attempt, back-off forgotten, and a new URL's misses
-- count from its own first miss.
UPDATE media_jobs AS j SET
    url             = u.url,
    status          = CASE WHEN j.status = 'done' THEN 'done' ELSE 'pending' END,
    failures        = CASE WHEN j.status = 'done' THEN j.failures ELSE 0 END,
    next_attempt_at = CASE WHEN j.status = 'done' THEN j.next_attempt_at ELSE NULL END,
    missing_since   = CASE WHEN j.status = 'done' THEN j.missing_since ELSE NULL END,
    misses          = CASE WHEN j.status = 'done' THEN j.misses ELSE 0 END
FROM (
    SELECT id AS call_id, 'recording' AS kind, recording_url AS url
    FROM calls WHERE recording_url IS NOT NULL AND last_changed_at >= $since
    UNION ALL
    SELECT id, 'transcript', transcript_url
    FROM calls WHERE transcript_url IS NOT NULL AND last_changed_at >= $since
) AS u
WHERE j.call_id = u.call_id AND j.kind = u.kind AND j.url IS DISTINCT FROM u.url;

-- Links refused only because they point at another host: asked again once that is allowed.
UPDATE media_jobs SET status = 'pending', next_attempt_at = NULL
WHERE $allow_foreign_hosts AND status = 'unavailable' AND last_error LIKE '%allow_foreign_hosts%';

-- Links refused only because they lead to a private or loopback address: asked again once allowed.
UPDATE media_jobs SET status = 'pending', next_attempt_at = NULL
WHERE $allow_private_addresses AND status = 'unavailable' AND last_error LIKE '%allow_private_addresses%';
