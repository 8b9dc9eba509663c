-- The calls mark_vanished_calls found (temp table `vanished_calls`) move to `deleted_calls`.
-- $low and $high bound the rows to look at, as there.
INSERT INTO deleted_calls (
    id, tracking_number, caller_number, duration_seconds, outcome, campaign_id, affiliate_id, source,
    caller_city, caller_state, recording_url, transcript_url, sentiment, started_at, extra,
    first_synced_at, last_synced_at, last_changed_at,
    deleted_at, deleted_run_id
)
SELECT
    id, tracking_number, caller_number, duration_seconds, outcome, campaign_id, affiliate_id, source,
    caller_city, caller_state, recording_url, transcript_url, sentiment, started_at, extra,
    first_synced_at, last_synced_at, last_changed_at,
    $synced_at, $run_id
FROM calls
WHERE started_at >= $low AND started_at < $high AND rowid IN (SELECT stored_row FROM vanished_calls);

DELETE FROM calls WHERE started_at >= $low AND started_at < $high AND rowid IN (SELECT stored_row FROM vanished_calls);
