-- Calls the API no longer lists: held in `calls` with started_at inside one of the complete,
-- unfiltered windows of this commit (registered as `listed_windows`: window_index,
-- range_start, range_end, UTC instants, end exclusive), yet in none of the commit's listings
-- (registered as `listed_calls` and `listed_rejected`), into temp table `vanished_calls`; move_vanished_calls moves
-- them to `deleted_calls`. $low and $high bound all the ranges, so that the scan skips the
-- row groups of other days. Returns the calls per window.
CREATE OR REPLACE TEMP TABLE vanished_calls AS
SELECT c.rowid AS stored_row, c.id, w.window_index
FROM calls c
JOIN listed_windows w ON c.started_at >= w.range_start AND c.started_at < w.range_end
WHERE c.started_at >= $low AND c.started_at < $high
  AND c.id NOT IN (SELECT id FROM listed_calls
                   UNION ALL
                   SELECT record_id FROM listed_rejected WHERE record_id IS NOT NULL);

SELECT window_index, count(*) FROM vanished_calls GROUP BY window_index;
