-- Recordings and transcripts, and the jobs that fetch them.

-- One job per (call, kind): what is left to fetch, and why it is not fetched yet.
CREATE TABLE media_jobs (
    call_id          VARCHAR NOT NULL,
    kind             VARCHAR NOT NULL,   -- recording | transcript
    url              VARCHAR,
    status           VARCHAR NOT NULL,   -- pending | done | failed | unavailable
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       VARCHAR,
    first_seen_at    TIMESTAMPTZ NOT NULL,
    last_attempt_at  TIMESTAMPTZ,
    next_attempt_at  TIMESTAMPTZ,
    done_at          TIMESTAMPTZ,
    PRIMARY KEY (call_id, kind)
);

-- A verified recording on disk; path is relative to [media] dir.
CREATE TABLE recordings (
    call_id       VARCHAR PRIMARY KEY,
    path          VARCHAR NOT NULL,
    size_bytes    BIGINT NOT NULL,
    sha256        VARCHAR NOT NULL,
    content_type  VARCHAR,
    fetched_at    TIMESTAMPTZ NOT NULL
);

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
