-- Top caller cities by calls, with the qualified rate and distinct callers.
-- param: limit = 20  how many cities to show
SELECT
    caller_city,
    caller_state,
    count(*) AS calls,
    count(DISTINCT caller_number) AS callers,
    round(count(*) FILTER (WHERE is_qualified) / count(*), 3) AS qualified_rate,
    round(count(*) / sum(count(*)) OVER (), 3) AS share_of_calls
FROM calls_enriched
GROUP BY caller_city, caller_state
ORDER BY calls DESC, caller_city, caller_state
LIMIT CAST($limit AS INTEGER)
