-- Tracking-number performance: calls, qualified rate and average duration per number, with display names.
-- Every number is listed, those without calls too; one deleted upstream is marked "(deleted)".
-- Calls to a phone number we hold no tracking number for appear with an empty display_name.
WITH per_number AS (
    SELECT
        number_id,
        tracking_number,
        count(*) AS calls,
        count(*) FILTER (WHERE is_qualified) AS qualified,
        avg(duration_seconds) AS avg_duration_s
    FROM calls_enriched
    GROUP BY number_id, tracking_number
)
SELECT
    n.display_name || CASE WHEN n.deleted_at IS NOT NULL THEN ' (deleted)' ELSE '' END AS display_name,
    n.type,
    coalesce(n.phone_number, p.tracking_number) AS phone_number,
    f.name AS flow_name,
    coalesce(p.calls, 0) AS calls,
    round(p.qualified / p.calls, 3) AS qualified_rate,
    round(p.avg_duration_s, 1) AS avg_duration_s
FROM tracking_numbers n
FULL JOIN per_number p ON p.number_id = n.id
LEFT JOIN call_flows f ON f.id = n.call_flow_id
ORDER BY calls DESC, display_name, phone_number
