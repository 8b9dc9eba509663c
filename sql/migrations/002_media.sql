-- Recordings and transcripts, and the jobs that fetch them.

-- One job per (call, kind): what is left to fetch, and why it is not fetched yet.
--   pending      not fetched yet; includes "not ready yet" (the API answered 404)
--   done         stored: a verified file in `recordings`, or rows in `transcript_segments`
--   failed       the last attempt failed after the client's retries; retried on later runs, with back-off
--   unavailable  still 404 media.max_age_days after the call, or a URL we refuse to fetch; no longer asked for
CREATE TABLE media_jobs (
    call_id          VARCHAR NOT NULL,
    kind             VARCHAR NOT NULL,   -- recording | transcript
    url              VARCHAR,            -- the call's recording_url / transcript_url when last planned
    status           VARCHAR NOT NULL,   -- pending | done | failed | unavailable
    attempts         INTEGER NOT NULL DEFAULT 0,  -- requests made for this job, all runs
    failures         INTEGER NOT NULL DEFAULT 0,  -- consecutive failed attempts (drives the back-off)
    last_error       VARCHAR,
    first_seen_at    TIMESTAMPTZ NOT NULL,
    missing_since    TIMESTAMPTZ,        -- first 404 of the current streak of "not ready yet"
    last_attempt_at  TIMESTAMPTZ,
    next_attempt_at  TIMESTAMPTZ,        -- not asked again before this; NULL = on the next run
    done_at          TIMESTAMPTZ,
    PRIMARY KEY (call_id, kind)
);

-- A verified recording on disk; path is relative to [media] dir, with forward slashes.
CREATE TABLE recordings (
    call_id       VARCHAR PRIMARY KEY,
    path          VARCHAR NOT NULL,
    size_bytes    BIGINT NOT NULL,
    sha256        VARCHAR NOT NULL,
    content_type  VARCHAR,
    fetched_at    TIMESTAMPTZ NOT NULL
);

-- A call's transcript, one row per segment; replaced as a whole when fetched again.
CREATE TABLE transcript_segments (
    call_id        VARCHAR NOT NULL,
    segment_index  INTEGER NOT NULL,
    speaker        VARCHAR,
    text           VARCHAR,
    "timestamp"    DOUBLE,      -- seconds from the start of the call
    PRIMARY KEY (call_id, segment_index)
);

-- Each call's transcript as one searchable text.
CREATE VIEW call_transcripts AS
SELECT
    call_id,
    count(*) AS segments,
    string_agg(coalesce(speaker, '?') || ': ' || coalesce(text, ''), chr(10) ORDER BY segment_index) AS full_text
FROM transcript_segments
GROUP BY call_id;
