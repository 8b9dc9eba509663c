-- Qualified rate and average duration by affiliate.
SELECT
    affiliate_id,
    count(*) AS calls,
    count(*) FILTER (WHERE is_qualified) AS qualified,
    round(count(*) FILTER (WHERE is_qualified) / count(*), 3) AS qualified_rate,
    round(avg(duration_seconds), 1) AS avg_duration_s,
    round(avg(duration_seconds) FILTER (WHERE is_qualified), 1) AS avg_qualified_duration_s
FROM calls_enriched
GROUP BY affiliate_id
ORDER BY calls DESC, affiliate_id
