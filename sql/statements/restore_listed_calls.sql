-- Calls deleted upstream that a listing has again (the batch, registered as `batch`) move
-- back into `calls`, as changed now so that their media is planned again. classify_calls
-- then compares them with the batch as with any stored call. Returns the calls restored
-- per window of the batch.
CREATE OR REPLACE TEMP TABLE restored_calls AS
SELECT d.id, b.window_index
FROM deleted_calls d
JOIN batch b ON b.id = d.id;

INSERT INTO calls (
    id, tracking_number, caller_number, duration_seconds, outcome, campaign_id, affiliate_id, source,
    caller_city, caller_state, recording_url, transcript_url, sentiment, started_at, extra,
    first_synced_at, last_synced_at, last_changed_at
)
SELECT
    id, tracking_number, caller_number, duration_seconds, outcome, campaign_id, affiliate_id, source,
    caller_city, caller_state, recording_url, transcript_url, sentiment, started_at, extra,
    first_synced_at, last_synced_at, $synced_at
FROM deleted_calls
WHERE id IN (SELECT id FROM restored_calls);

DELETE FROM deleted_calls WHERE id IN (SELECT id FROM restored_calls);

SELECT window_index, count(*) FROM restored_calls GROUP BY window_index;
