-- `calls` without its PRIMARY KEY. DuckDB keeps a key's index (an ART) in memory and
-- loads all of it again after every reopen: ~50 MB per million calls, so a sync's memory
-- grew with the account, and each insert paid to maintain it. Ids stay unique by
-- construction: one writer at a time (the run lock and DuckDB's file lock) sorts every
-- batch into new / updated / unchanged by id (classify_calls) and inserts only the new
-- ones, in the same transaction. The rows are rewritten in call order, so that filters
-- on started_at skip most of the table.
CREATE TABLE calls_rebuilt (
    id                VARCHAR NOT NULL,  -- unique: one row per call
    tracking_number   VARCHAR,
    caller_number     VARCHAR,
    duration_seconds  INTEGER,
    outcome           VARCHAR,     -- qualified | unqualified | voicemail | abandoned
    campaign_id       VARCHAR,
    affiliate_id      VARCHAR,
    source            VARCHAR,
    caller_city       VARCHAR,
    caller_state      VARCHAR,
    recording_url     VARCHAR,
    transcript_url    VARCHAR,
    sentiment         VARCHAR,     -- positive | neutral | negative
    started_at        TIMESTAMPTZ NOT NULL,
    extra             JSON,        -- fields the API sent that the reference does not list
    first_synced_at   TIMESTAMPTZ NOT NULL,
    last_synced_at    TIMESTAMPTZ NOT NULL,
    last_changed_at   TIMESTAMPTZ NOT NULL
);

INSERT INTO calls_rebuilt SELECT * FROM calls ORDER BY started_at, id;

DROP TABLE calls;

ALTER TABLE calls_rebuilt RENAME TO calls;
