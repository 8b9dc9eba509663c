-- The live calls held per UTC day in [$low, $high), for `callsync verify`.
SELECT timezone('UTC', started_at)::DATE AS day, count(*)
FROM calls
WHERE started_at >= $low AND started_at < $high
GROUP BY day;
