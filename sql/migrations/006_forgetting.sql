-- What callsync forgets (pipeline/erasure.py): calls deleted upstream, retention, erasure.

-- A call the API no longer lists in a window callsync fully re-read. It moves here out
-- of `calls`, so every view, named query and dashboard on `calls` stops counting it
-- without a filter to forget. Same columns as `calls`, plus when and in which run it was
-- found missing. A call the API lists again moves back (undeleted).
-- (Statements name the columns, so a column added to `calls` later does not break them.)
CREATE TABLE deleted_calls (
    id                VARCHAR NOT NULL,  -- unique
    tracking_number   VARCHAR,
    caller_number     VARCHAR,
    duration_seconds  INTEGER,
    outcome           VARCHAR,
    campaign_id       VARCHAR,
    affiliate_id      VARCHAR,
    source            VARCHAR,
    caller_city       VARCHAR,
    caller_state      VARCHAR,
    recording_url     VARCHAR,
    transcript_url    VARCHAR,
    sentiment         VARCHAR,
    started_at        TIMESTAMPTZ NOT NULL,
    extra             JSON,
    first_synced_at   TIMESTAMPTZ NOT NULL,
    last_synced_at    TIMESTAMPTZ NOT NULL,
    last_changed_at   TIMESTAMPTZ NOT NULL,
    deleted_at        TIMESTAMPTZ NOT NULL,  -- when a complete listing of its window no longer had it
    deleted_run_id    VARCHAR NOT NULL,
    media_removed     BOOLEAN NOT NULL DEFAULT false  -- its recording and transcript are gone ([media] on_upstream_delete)
);

-- A call or caller erased with `callsync forget`: never loaded again. `hash` is
-- sha256(salt || value), the salt being random per database (sync_state 'tombstone_salt'),
-- and value the call id or the caller number's digits. No personal data in the clear.
CREATE TABLE tombstones (
    hash        VARCHAR PRIMARY KEY,
    kind        VARCHAR NOT NULL,      -- call_id | caller_number
    created_at  TIMESTAMPTZ NOT NULL,
    run_id      VARCHAR NOT NULL
);

-- Each erasure and deletion: when, what kind, how many rows and files, which run.
-- Never the personal data itself (no ids, no numbers).
CREATE SEQUENCE forget_audit_seq;
CREATE TABLE forget_audit (
    audit_id    BIGINT PRIMARY KEY DEFAULT nextval('forget_audit_seq'),
    happened_at TIMESTAMPTZ NOT NULL,
    kind        VARCHAR NOT NULL,       -- upstream_delete | upstream_restore | media_retention | call_retention | forget
    run_id      VARCHAR NOT NULL,
    calls       BIGINT NOT NULL,        -- calls it concerned
    "rows"      BIGINT NOT NULL,        -- rows removed or moved, all tables together
    files       BIGINT NOT NULL,        -- recording files removed
    detail      JSON                    -- rows per table
);

-- Recording files whose rows are gone, to be removed from the media folder. Written in
-- the transaction that removes the rows, emptied once the files are gone: a crash in
-- between leaves the list, and the next run removes them.
CREATE TABLE files_to_remove (
    path       VARCHAR PRIMARY KEY,    -- relative to [media] dir, as in recordings.path
    queued_at  TIMESTAMPTZ NOT NULL
);

-- Transcripts of live calls only (a call deleted upstream may keep its media).
CREATE OR REPLACE VIEW call_transcripts AS
SELECT
    call_id,
    count(*) AS segments,
    string_agg(coalesce(speaker, '?') || ': ' || coalesce(text, ''), chr(10) ORDER BY segment_index) AS full_text
FROM transcript_segments
WHERE call_id IN (SELECT id FROM calls)
GROUP BY call_id;
