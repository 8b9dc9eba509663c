-- Core tables: calls, tracking numbers, call flows, and the sync bookkeeping.
-- Table and column names are a public interface: dashboards depend on them.

CREATE TABLE calls (
    id                VARCHAR PRIMARY KEY,
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

CREATE TABLE tracking_numbers (
    id                 VARCHAR PRIMARY KEY,
    phone_number       VARCHAR,
    display_name       VARCHAR,
    type               VARCHAR,    -- local | toll_free | vanity
    status             VARCHAR,
    call_flow_id       VARCHAR,
    recording_enabled  BOOLEAN,
    created_at         TIMESTAMPTZ,
    extra              JSON,
    first_synced_at    TIMESTAMPTZ NOT NULL,
    last_synced_at     TIMESTAMPTZ NOT NULL,
    deleted_at         TIMESTAMPTZ  -- set when the number vanished upstream
);

CREATE TABLE call_flows (
    id               VARCHAR PRIMARY KEY,
    name             VARCHAR,
    created_at       TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ,
    raw              JSON NOT NULL,  -- the flow as the API sent it (its shape is undocumented)
    first_synced_at  TIMESTAMPTZ NOT NULL,
    last_synced_at   TIMESTAMPTZ NOT NULL,
    deleted_at       TIMESTAMPTZ
);

-- Records that failed validation, with their raw payload: never silently dropped.
CREATE SEQUENCE rejected_records_seq;
CREATE TABLE rejected_records (
    rejected_id   BIGINT PRIMARY KEY DEFAULT nextval('rejected_records_seq'),
    run_id        VARCHAR NOT NULL,
    entity        VARCHAR NOT NULL,   -- call | tracking_number | call_flow
    record_id     VARCHAR,
    window_start  DATE,
    window_end    DATE,
    error         VARCHAR NOT NULL,
    raw           JSON NOT NULL,
    rejected_at   TIMESTAMPTZ NOT NULL
);

-- One row per run of sync/backfill/media.
CREATE TABLE runs (
    run_id            VARCHAR PRIMARY KEY,
    command           VARCHAR NOT NULL,
    args              JSON,
    started_at        TIMESTAMPTZ NOT NULL,
    finished_at       TIMESTAMPTZ,
    status            VARCHAR NOT NULL,   -- running | ok | failed | paused (budget) | interrupted
    windows_done      INTEGER DEFAULT 0,
    windows_skipped   INTEGER DEFAULT 0,
    windows_failed    INTEGER DEFAULT 0,
    calls_new         BIGINT DEFAULT 0,
    calls_updated     BIGINT DEFAULT 0,
    calls_unchanged   BIGINT DEFAULT 0,
    rejected          BIGINT DEFAULT 0,
    refetches         INTEGER DEFAULT 0,
    requests          BIGINT DEFAULT 0,
    retries           BIGINT DEFAULT 0,
    rate_limited      BIGINT DEFAULT 0,
    summary           JSON,
    error             VARCHAR
);

-- A committed window of calls: written in the same transaction as its rows.
-- scope is '' for unfiltered windows, else the backfill's filters (e.g. 'outcome=qualified').
CREATE TABLE sync_windows (
    scope         VARCHAR NOT NULL,
    window_start  DATE NOT NULL,
    window_end    DATE NOT NULL,
    row_count     INTEGER NOT NULL,
    run_id        VARCHAR NOT NULL,
    synced_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, window_start, window_end)
);

-- Small named values, e.g. the sync watermark (last fully synced day).
CREATE TABLE sync_state (
    key         VARCHAR PRIMARY KEY,
    value       VARCHAR NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
