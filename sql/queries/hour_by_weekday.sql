-- Calls by hour of day (rows) and weekday (columns), in a time zone of your choice.
-- param: tz = UTC  time zone for hours and weekdays, e.g. America/New_York
WITH local_calls AS (
    SELECT timezone($tz, started_at) AS local_time
    FROM calls
)
SELECT
    hour(local_time) AS hour,
    count(*) FILTER (WHERE isodow(local_time) = 1) AS mon,
    count(*) FILTER (WHERE isodow(local_time) = 2) AS tue,
    count(*) FILTER (WHERE isodow(local_time) = 3) AS wed,
    count(*) FILTER (WHERE isodow(local_time) = 4) AS thu,
    count(*) FILTER (WHERE isodow(local_time) = 5) AS fri,
    count(*) FILTER (WHERE isodow(local_time) = 6) AS sat,
    count(*) FILTER (WHERE isodow(local_time) = 7) AS sun,
    count(*) AS total
FROM local_calls
GROUP BY hour
ORDER BY hour
