-- Callers who called more than once: how often, over what span, and how many calls qualified.
-- param: min_calls = 2  least calls from one number to count as a repeat caller
-- param: limit = 50  how many callers to show
SELECT
    caller_number,
    any_value(caller_city) AS caller_city,
    any_value(caller_state) AS caller_state,
    count(*) AS calls,
    count(*) FILTER (WHERE is_qualified) AS qualified,
    count(DISTINCT tracking_number) AS numbers_called,
    min(started_at) AS first_call_at,
    max(started_at) AS last_call_at
FROM calls_enriched
WHERE caller_number IS NOT NULL
GROUP BY caller_number
HAVING count(*) >= CAST($min_calls AS INTEGER)
ORDER BY calls DESC, last_call_at DESC, caller_number
LIMIT CAST($limit AS INTEGER)
