-- How each window of a batch (registered as `batch`) compares with what `calls` holds:
-- new, updated (the rest of `seen` is unchanged).
SELECT
    batch.window_index,
    count(*) FILTER (WHERE calls.id IS NULL) AS new,
    count(*) FILTER (
        WHERE calls.id IS NOT NULL
          AND (calls.tracking_number, calls.caller_number, calls.duration_seconds, calls.outcome,
               calls.campaign_id, calls.affiliate_id, calls.source, calls.caller_city,
               calls.caller_state, calls.recording_url, calls.transcript_url, calls.sentiment,
               calls.started_at, calls.extra::VARCHAR)
              IS DISTINCT FROM
              (batch.tracking_number, batch.caller_number, batch.duration_seconds, batch.outcome,
               batch.campaign_id, batch.affiliate_id, batch.source, batch.caller_city,
               batch.caller_state, batch.recording_url, batch.transcript_url, batch.sentiment,
               batch.started_at, batch.extra::VARCHAR)
    ) AS updated,
    count(*) AS seen
FROM batch
LEFT JOIN calls ON calls.id = batch.id
GROUP BY batch.window_index;
