-- Before looking for calls no longer listed (mark_vanished_calls): the calls held in the
-- complete windows' days (registered as `listed_windows`), and the batch's calls
-- (registered as `listed_calls`) in those days. All listed calls are held by now, so equal
-- counts mean nothing vanished; only started_at is read, not the ids.
SELECT
    (SELECT count(*)
     FROM calls c
     JOIN listed_windows w ON c.started_at >= w.range_start AND c.started_at < w.range_end
     WHERE c.started_at >= $low AND c.started_at < $high),
    (SELECT count(*)
     FROM listed_calls l
     JOIN listed_windows w ON l.started_at >= w.range_start AND l.started_at < w.range_end);
