-- Upsert a batch of calls (registered as `batch`, one row per id) into `calls`.
-- last_changed_at moves only when a field really changed.
INSERT INTO calls
SELECT
    id, tracking_number, caller_number, duration_seconds, outcome, campaign_id, affiliate_id,
    source, caller_city, caller_state, recording_url, transcript_url, sentiment, started_at,
    extra, $synced_at, $synced_at, $synced_at
FROM batch
ON CONFLICT (id) DO UPDATE SET
    tracking_number  = excluded.tracking_number,
    caller_number    = excluded.caller_number,
    duration_seconds = excluded.duration_seconds,
    outcome          = excluded.outcome,
    campaign_id      = excluded.campaign_id,
    affiliate_id     = excluded.affiliate_id,
    source           = excluded.source,
    caller_city      = excluded.caller_city,
    caller_state     = excluded.caller_state,
    recording_url    = excluded.recording_url,
    transcript_url   = excluded.transcript_url,
    sentiment        = excluded.sentiment,
    started_at       = excluded.started_at,
    extra            = excluded.extra,
    last_synced_at   = excluded.last_synced_at,
    last_changed_at  = CASE
        WHEN (calls.tracking_number, calls.caller_number, calls.duration_seconds, calls.outcome,
              calls.campaign_id, calls.affiliate_id, calls.source, calls.caller_city,
              calls.caller_state, calls.recording_url, calls.transcript_url, calls.sentiment,
              calls.started_at, calls.extra::VARCHAR)
             IS DISTINCT FROM
             (excluded.tracking_number, excluded.caller_number, excluded.duration_seconds,
              excluded.outcome, excluded.campaign_id, excluded.affiliate_id, excluded.source,
              excluded.caller_city, excluded.caller_state, excluded.recording_url,
              excluded.transcript_url, excluded.sentiment, excluded.started_at,
              excluded.extra::VARCHAR)
        THEN excluded.last_changed_at
        ELSE calls.last_changed_at
    END;
