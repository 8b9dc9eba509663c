-- Sort each call of a batch (registered as `batch`) by what it means for `calls`:
-- new, updated (some field differs) or unchanged. upsert_calls acts on this, and the
-- run summary counts it per window.
CREATE OR REPLACE TEMP TABLE batch_changes AS
SELECT
    batch.id,
    batch.window_index,
    CASE
        WHEN calls.id IS NULL THEN 'new'
        WHEN (calls.tracking_number, calls.caller_number, calls.duration_seconds, calls.outcome,
              calls.campaign_id, calls.affiliate_id, calls.source, calls.caller_city,
              calls.caller_state, calls.recording_url, calls.transcript_url, calls.sentiment,
              calls.started_at, calls.extra::VARCHAR)
             IS DISTINCT FROM
             (batch.tracking_number, batch.caller_number, batch.duration_seconds, batch.outcome,
              batch.campaign_id, batch.affiliate_id, batch.source, batch.caller_city,
              batch.caller_state, batch.recording_url, batch.transcript_url, batch.sentiment,
              batch.started_at, batch.extra::VARCHAR)
        THEN 'updated'
        ELSE 'unchanged'
    END AS change
FROM batch
LEFT JOIN calls ON calls.id = batch.id;

SELECT
    window_index,
    count(*) FILTER (WHERE change = 'new') AS new,
    count(*) FILTER (WHERE change = 'updated') AS updated,
    count(*) AS seen
FROM batch_changes
GROUP BY window_index;
