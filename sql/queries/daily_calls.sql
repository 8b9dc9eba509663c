-- Calls per day (UTC) by outcome, with the qualified rate and average duration.
-- param: days = 60  how many of the most recent days to show
SELECT
    call_date,
    calls,
    qualified,
    unqualified,
    voicemail,
    abandoned,
    qualified_rate,
    avg_duration_s
FROM daily_calls
WHERE call_date > (SELECT max(call_date) FROM daily_calls) - CAST($days AS INTEGER)
ORDER BY call_date
