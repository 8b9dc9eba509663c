-- Calls the API no longer lists: held in `calls` with started_at inside one of the complete,
-- unfiltered windows of this commit (registered as `listed_windows`: window_index,
-- range_start, range_end, UTC instants, end exclusive), yet in none of the commit's listings
-- (registered as `listed_ids`). They move to `deleted_calls`. $low and $high bound all the
-- ranges, so that the scan skips the row groups of other days. Returns the calls deleted
-- per window.
CREATE OR REPLACE TEMP TABLE vanished_calls AS
SELECT c.rowid AS stored_row, c.id, w.window_index
FROM calls c
JOIN listed_windows w ON c.started_at >= w.range_start AND c.started_at < w.range_end
WHERE c.started_at >= $low AND c.started_at < $high
  AND c.id NOT IN (SELECT id FROM listed_ids);

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
WHERE rowid IN (SELECT stored_row FROM vanished_calls);

DELETE FROM calls WHERE rowid IN (SELECT stored_row FROM vanished_calls);

SELECT window_index, count(*) FROM vanished_calls GROUP BY window_index;
