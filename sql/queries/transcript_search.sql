-- Calls whose transcript mentions a phrase (case-insensitive), with the first segment that does.
-- param: phrase  text to search for (matched literally, ignoring case)
-- param: limit = 100  how many calls to show
WITH matches AS (
    SELECT
        call_id,
        count(*) AS matching_segments,
        arg_min(coalesce(speaker, '?') || ': ' || text, segment_index) AS first_match
    FROM transcript_segments
    WHERE contains(lower(text), lower($phrase))
    GROUP BY call_id
)
SELECT
    c.id AS call_id,
    c.started_at,
    c.outcome,
    c.sentiment,
    c.number_name,
    m.matching_segments,
    m.first_match
FROM matches m
JOIN calls_enriched c ON c.id = m.call_id
ORDER BY c.started_at DESC, c.id
LIMIT CAST($limit AS INTEGER)
