-- Sort each call of a batch (registered as `batch`) by what it means for `calls`:
-- new, updated (some field differs) or unchanged. upsert_calls acts on this, and the
-- run summary counts it per window.
--
-- The stored copies are found by id alone first: joining the batch to `calls` directly
-- would read every column of the whole table on each commit, and commits would slow
-- down as the table grows. This way a batch of new calls reads only the id column.
CREATE OR REPLACE TEMP TABLE batch_stored AS
SELECT calls.rowid AS stored_row FROM calls SEMI JOIN batch ON calls.id = batch.id;

CREATE OR REPLACE TEMP TABLE batch_changes AS
WITH stored AS (SELECT * FROM calls WHERE rowid IN (SELECT stored_row FROM batch_stored))
SELECT
    batch.id,
    batch.window_index,
    CASE
        WHEN stored.id IS NULL THEN 'new'
        WHEN (stored.tracking_number, stored.caller_number, stored.duration_seconds, stored.outcome,
              stored.campaign_id, stored.affiliate_id, stored.source, stored.caller_city,
              stored.caller_state, stored.recording_url, stored.transcript_url, stored.sentiment,
              stored.started_at, stored.extra::VARCHAR)
             IS DISTINCT FROM
             (batch.tracking_number, batch.caller_number, batch.duration_seconds, batch.outcome,
              batch.campaign_id, batch.affiliate_id, batch.source, batch.caller_city,
              batch.caller_state, batch.recording_url, batch.transcript_url, batch.sentiment,
              batch.started_at, batch.extra::VARCHAR)
        THEN 'updated'
        ELSE 'unchanged'
    END AS change
FROM batch
LEFT JOIN stored ON stored.id = batch.id;

SELECT
    window_index,
    count(*) FILTER (WHERE change = 'new') AS new,
    count(*) FILTER (WHERE change = 'updated') AS updated,
    count(*) AS seen
FROM batch_changes
GROUP BY window_index;
