-- Views for the common joins. Their names and columns are a public interface, like the tables':
-- named queries (sql/queries) and dashboards read them.
-- Days and hours are UTC, as the sync windows are.

-- Each call with its tracking number (display name, type) and that number's call flow.
-- Numbers are matched on phone_number. Should one phone number ever belong to two rows
-- (a deleted number and its successor), the live one wins, else the newest.
CREATE VIEW calls_enriched AS
WITH numbers AS (
    SELECT *
    FROM tracking_numbers
    QUALIFY row_number() OVER (
        PARTITION BY phone_number
        ORDER BY deleted_at IS NOT NULL, created_at DESC NULLS LAST, id
    ) = 1
)
SELECT
    c.id,
    c.started_at,
    timezone('UTC', c.started_at)::DATE AS call_date,
    hour(timezone('UTC', c.started_at)) AS call_hour,
    c.tracking_number,
    n.id AS number_id,
    n.display_name AS number_name,
    n.type AS number_type,
    n.call_flow_id AS flow_id,
    f.name AS flow_name,
    c.caller_number,
    c.caller_city,
    c.caller_state,
    c.duration_seconds,
    c.outcome,
    c.outcome = 'qualified' AS is_qualified,
    c.sentiment,
    c.campaign_id,
    c.affiliate_id,
    c.source,
    c.recording_url,
    c.transcript_url,
    c.first_synced_at,
    c.last_synced_at,
    c.last_changed_at
FROM calls c
LEFT JOIN numbers n ON n.phone_number = c.tracking_number
LEFT JOIN call_flows f ON f.id = n.call_flow_id;

-- One row per UTC day: calls by outcome, the qualified rate and the average duration.
CREATE VIEW daily_calls AS
SELECT
    call_date,
    count(*) AS calls,
    count(*) FILTER (WHERE outcome = 'qualified') AS qualified,
    count(*) FILTER (WHERE outcome = 'unqualified') AS unqualified,
    count(*) FILTER (WHERE outcome = 'voicemail') AS voicemail,
    count(*) FILTER (WHERE outcome = 'abandoned') AS abandoned,
    count(*) FILTER (WHERE outcome IS NULL
                        OR outcome NOT IN ('qualified', 'unqualified', 'voicemail', 'abandoned')) AS other,
    round(count(*) FILTER (WHERE outcome = 'qualified') / count(*), 3) AS qualified_rate,
    round(avg(duration_seconds), 1) AS avg_duration_s
FROM calls_enriched
GROUP BY call_date;

-- Each call's recording and transcript: expected (the API gave a URL), fetched, and the
-- status of the job that fetches it (NULL until a media run has seen the call).
CREATE VIEW call_media AS
WITH transcripts AS (
    SELECT call_id, count(*) AS segments
    FROM transcript_segments
    GROUP BY call_id
)
SELECT
    c.id AS call_id,
    c.started_at,
    c.recording_url IS NOT NULL AS recording_expected,
    r.call_id IS NOT NULL AS recording_fetched,
    recording_job.status AS recording_status,
    r.size_bytes AS recording_bytes,
    c.transcript_url IS NOT NULL AS transcript_expected,
    coalesce(transcript_job.status = 'done', false) OR t.call_id IS NOT NULL AS transcript_fetched,
    transcript_job.status AS transcript_status,
    coalesce(t.segments, 0) AS transcript_segments
FROM calls c
LEFT JOIN recordings r ON r.call_id = c.id
LEFT JOIN media_jobs recording_job ON recording_job.call_id = c.id AND recording_job.kind = 'recording'
LEFT JOIN transcripts t ON t.call_id = c.id
LEFT JOIN media_jobs transcript_job ON transcript_job.call_id = c.id AND transcript_job.kind = 'transcript';
