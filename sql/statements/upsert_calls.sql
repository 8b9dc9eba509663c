-- Upsert a batch of calls (registered as `batch`, one row per id, sorted by classify_calls
-- into `batch_changes`) into `calls`. Plain UPDATE + INSERT of only what changed is several
-- times faster in DuckDB than INSERT ... ON CONFLICT DO UPDATE over every row.
-- last_changed_at moves only when a field really changed; last_synced_at whenever seen.
UPDATE calls SET
    tracking_number  = batch.tracking_number,
    caller_number    = batch.caller_number,
    duration_seconds = batch.duration_seconds,
    outcome          = batch.outcome,
    campaign_id      = batch.campaign_id,
    affiliate_id     = batch.affiliate_id,
    source           = batch.source,
    caller_city      = batch.caller_city,
    caller_state     = batch.caller_state,
    recording_url    = batch.recording_url,
    transcript_url   = batch.transcript_url,
    sentiment        = batch.sentiment,
    started_at       = batch.started_at,
    extra            = batch.extra,
    last_synced_at   = $synced_at,
    last_changed_at  = $synced_at
FROM batch
JOIN batch_changes USING (id)
WHERE calls.id = batch.id AND batch_changes.change = 'updated';

UPDATE calls SET last_synced_at = $synced_at
FROM batch_changes
WHERE calls.id = batch_changes.id AND batch_changes.change = 'unchanged';

INSERT INTO calls
SELECT
    batch.id, tracking_number, caller_number, duration_seconds, outcome, campaign_id, affiliate_id,
    source, caller_city, caller_state, recording_url, transcript_url, sentiment, started_at,
    extra, $synced_at, $synced_at, $synced_at
FROM batch
JOIN batch_changes USING (id)
WHERE batch_changes.change = 'new';
